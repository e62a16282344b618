"""An adaptive attack that knows AdvParams: find the few perturbed scalars and descend on them."""

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
from attacks.retrain import PATIENCE, fit
from attacks.weights import loss_gradients, robust_scale, robust_z, weight_params


def suspicion(
    weights: dict[str, nn.Parameter], grads: dict[str, torch.Tensor], rule: str
) -> dict[str, torch.Tensor]:
    """Per-scalar suspicion scores: |gradient|, robust z-score deviation, or both normalised, multiplied."""
    by_grad = {n: g.abs() for n, g in grads.items()}
    by_dev = {n: robust_z(w) for n, w in weights.items()}
    if rule == "gradient":
        return by_grad
    if rule == "deviation":
        return by_dev
    grad_max = max(float(s.max()) for s in by_grad.values()) or 1.0
    dev_max = max(float(s.max()) for s in by_dev.values()) or 1.0
    return {n: (by_grad[n] / grad_max) * (by_dev[n] / dev_max) for n in weights}


def top_k_masks(scores: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Boolean masks marking the ``k`` highest scores across all tensors."""
    names = list(scores)
    flat = torch.cat([scores[n].flatten() for n in names])
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen[torch.topk(flat, min(k, flat.numel())).indices] = True
    masks, start = {}, 0
    for n in names:
        size = scores[n].numel()
        masks[n] = chosen[start : start + size].view_as(scores[n])
        start += size
    return masks


@register_attack
class Adaptive(Attack):
    """Rank weight scalars as AdvParams suspects, optionally reset them, then repair them by descent.

    AdvParams (Xue et al., arXiv:2105.13697) moves a few conv/linear weights along the sign of the
    loss gradient, within each tensor's [min, max]. An attacker who knows this looks for scalars with
    a large loss gradient (the encrypted model sits far from a minimum in those directions) and/or a
    large robust z-score (they sit at their tensor's extremes), then runs gradient descent on those
    scalars only, with the compute the ranking's gradient left, batch-norm statistics fixed and early
    stopping on val accuracy. Adam is used because its step size does not depend on the gradient's
    scale. ``changed`` lists the suspects that moved, for scoring against the key.
    """

    name = "adaptive"
    paper = "Xue et al., AdvParams, arXiv:2105.13697 (adaptive attacks)"
    params = (
        Param(
            "rank",
            "choice",
            "product",
            choices=("gradient", "deviation", "product"),
            help="suspicion: |grad|, robust z-score, or the product of both normalised",
        ),
        Param(
            "k",
            "int",
            64,
            low=1,
            high=4096,
            log=True,
            help="number of suspects (clipped to the number of weights)",
        ),
        Param(
            "reset",
            "choice",
            "median",
            choices=("none", "median"),
            help="first set each suspect to its tensor's median, or start from its value",
        ),
        Param("lr", "float", 0.01, low=1e-4, high=0.1, log=True, help="Adam learning rate"),
        PATIENCE,
    )

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
        before = {n: w.detach().clone() for n, w in weights.items()}
        rank, grads = params["rank"], None
        if rank != "deviation":
            gen = torch.Generator().manual_seed(seed)  # draws a subset only if the compute is short of a full pass
            samples = min(len(data.train), meter.remaining)
            grads = loss_gradients(model, weights, data, meter, samples=samples, generator=gen)
        if grads is None:  # no compute for a gradient: the deviation alone ranks, and needs none
            rank, grads = "deviation", {}
        masks = top_k_masks(suspicion(weights, grads, rank), params["k"])

        with torch.no_grad():
            if params["reset"] == "median":
                for n, w in weights.items():
                    w[masks[n]] = robust_scale(before[n])[0]
        hooks = [w.register_hook(lambda g, mask=masks[n]: g * mask) for n, w in weights.items()]
        try:  # only the suspects move; batch-norm statistics stay the owner's
            fit(model, data, meter, lr=params["lr"], optimizer="adam", seed=seed, patience=params["patience"],
                report=report, params=list(weights.values()), train_mode=False)
        finally:
            for hook in hooks:
                hook.remove()

        changed = {
            n: torch.nonzero((w.detach() != before[n]).flatten()).flatten() for n, w in weights.items()
        }
        changed = {n: idx for n, idx in changed.items() if idx.numel()}
        suspects = sum(int(m.sum()) for m in masks.values())
        return AttackResult(model, changed=changed, info={"suspects": suspects, "ranked_by": rank})
