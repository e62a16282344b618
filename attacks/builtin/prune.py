"""Structured channel pruning with Torch-Pruning, optionally followed by recovery fine-tuning."""

from __future__ import annotations

from typing import Any

import torch
import torch_pruning as tp
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
from attacks.weights import classifier, weight_layers
from common.training import count_params, model_device


def channel_count(model: nn.Module) -> int:
    """Output channels of conv layers plus output features of linear layers except the classifier."""
    head = classifier(model)
    total = 0
    for _, m in weight_layers(model):
        if m is not head:
            total += m.out_features if isinstance(m, nn.Linear) else m.out_channels
    return total


@register_attack
class Prune(Attack):
    """Remove the lowest-magnitude channel groups, then optionally fine-tune to recover with the compute left.

    Channel pruning drops whole filters whose weights are small (Li et al., "Pruning Filters for
    Efficient ConvNets", ICLR 2017); Torch-Pruning's dependency graph keeps coupled layers consistent
    (Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023). AdvParams (Xue et al.,
    arXiv:2105.13697) claims its perturbed weights survive pruning; the classifier is never pruned so
    the output stays one logit per class.
    """

    name = "prune"
    paper = "Li et al., ICLR 2017; Fang et al., CVPR 2023; Xue et al., AdvParams, arXiv:2105.13697"
    params = (
        Param("ratio", "float", 0.3, low=0.05, high=0.9, help="share of channels removed per group"),
        Param("global_pruning", "bool", False, help="rank channels across layers instead of per layer"),
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
        model.eval()
        before = {"params_before": count_params(model), "channels_before": channel_count(model)}
        with torch.enable_grad():  # the dependency graph is traced through autograd
            for weight in model.parameters():
                weight.requires_grad_(True)
            pruner = tp.pruner.BasePruner(
                model,
                data.example_inputs.to(model_device(model)),
                importance=tp.importance.GroupMagnitudeImportance(),
                pruning_ratio=params["ratio"],
                global_pruning=params["global_pruning"],
                ignored_layers=[classifier(model)],
            )
            pruner.step()
        if params["finetune_after"]:  # fit() builds its optimizer now, over the pruned tensors
            fit(model, data, meter, lr=params["lr"], optimizer=params["optimizer"], seed=seed,
                patience=params["patience"], report=report)
        after = {"params_after": count_params(model), "channels_after": channel_count(model)}
        return AttackResult(model, info={**before, **after})
