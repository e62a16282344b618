"""Unstructured magnitude pruning: zero the smallest weights, optionally fine-tune with a mask."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attacks.base import (
    Attack,
    AttackerBudget,
    AttackerData,
    AttackResult,
    ComputeMeter,
    Param,
    Report,
)
from attacks.registry import register_attack
from attacks.retrain import FINETUNE_AFTER, LR, OPTIMIZER, PATIENCE, RECIPES, fit
from attacks.weights import weight_params


def magnitude_masks(
    weights: dict[str, nn.Parameter], ratio: float, global_pruning: bool
) -> dict[str, torch.Tensor]:
    """Keep-masks zeroing the ``ratio`` smallest-magnitude weights, across tensors or per tensor."""

    def keep(values: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        drop = int(ratio * reference.numel())
        if drop == 0:
            return torch.ones_like(values, dtype=torch.bool)
        threshold = reference.flatten().kthvalue(drop).values
        return values > threshold

    if global_pruning:
        everything = torch.cat([w.detach().abs().flatten() for w in weights.values()])
        return {n: keep(w.detach().abs(), everything) for n, w in weights.items()}
    return {n: keep(w.detach().abs(), w.detach().abs()) for n, w in weights.items()}


@register_attack
class MagnitudePrune(Attack):
    """Zero the smallest-magnitude conv/linear weights; fine-tune with the zeros held if asked, with the compute left.

    Han et al., "Learning both Weights and Connections for Efficient Neural Networks", NeurIPS 2015.
    AdvParams' perturbed weights are large, so pruning alone cannot remove them (Xue et al.,
    arXiv:2105.13697); the recovery fine-tuning is what could undo them.
    """

    name = "magnitude_prune"
    paper = "Han et al., NeurIPS 2015; Xue et al., AdvParams, arXiv:2105.13697"
    params = (
        Param("ratio", "float", 0.5, low=0.05, high=0.95, help="share of weights set to zero"),
        Param("global_pruning", "bool", True, help="one threshold for all layers instead of per layer"),
        FINETUNE_AFTER,
        LR,
        OPTIMIZER,
        PATIENCE,
    )
    recipes = RECIPES

    def attack(
        self,
        model: nn.Module,
        data: AttackerData,
        params: dict[str, Any],
        budget: AttackerBudget,
        *,
        seed: int,
        report: Report | None,
        meter: ComputeMeter,
    ) -> AttackResult:
        weights = weight_params(model)
        masks = magnitude_masks(weights, params["ratio"], params["global_pruning"])

        @torch.no_grad()
        def apply_masks() -> None:
            for name, w in weights.items():
                w.mul_(masks[name])

        apply_masks()
        if params["finetune_after"]:
            fit(model, data, meter, lr=params["lr"], optimizer=params["optimizer"], seed=seed,
                patience=params["patience"], report=report, on_batch=apply_masks)
        zeros = sum(int((~m).sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        return AttackResult(model, info={"zeroed": zeros, "sparsity": zeros / total})
