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
    Param,
    Report,
)
from attacks.registry import register_attack
from attacks.weights import robust_scale, robust_z, weight_params
from common.training import batches, make_optimizer, model_device

BATCH_SIZE = 128


def loss_gradients(
    model: nn.Module, weights: dict[str, nn.Parameter], data: AttackerData
) -> dict[str, torch.Tensor]:
    """Gradient of the mean cross-entropy over the attacker's train split w.r.t. ``weights``."""
    device = model_device(model)
    model.eval()  # batch-norm statistics must not drift while we only measure
    model.zero_grad(set_to_none=True)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    with torch.enable_grad():
        for x, y in batches(data.train, BATCH_SIZE):
            (loss_fn(model(x.to(device)), y.to(device)) / len(data.train)).backward()
    grads = {
        n: torch.zeros_like(w) if w.grad is None else w.grad.detach().clone() for n, w in weights.items()
    }
    model.zero_grad(set_to_none=True)
    return grads


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
    scalars only. Adam is used because its step size does not depend on the gradient's scale.
    ``changed`` lists the suspects that moved, for scoring against the key.
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
        Param("steps", "int", 100, low=0, high=500, help="gradient-descent steps on the suspects"),
        Param("lr", "float", 0.01, low=1e-4, high=0.5, log=True, help="Adam learning rate"),
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
    ) -> AttackResult:
        weights = weight_params(model)
        before = {n: w.detach().clone() for n, w in weights.items()}
        masks = top_k_masks(suspicion(weights, loss_gradients(model, weights, data), params["rank"]), params["k"])

        with torch.no_grad():
            if params["reset"] == "median":
                for n, w in weights.items():
                    w[masks[n]] = robust_scale(before[n])[0]
        self._descend(model, weights, masks, data, params["steps"], params["lr"], seed)

        changed = {
            n: torch.nonzero((w.detach() != before[n]).flatten()).flatten() for n, w in weights.items()
        }
        changed = {n: idx for n, idx in changed.items() if idx.numel()}
        suspects = sum(int(m.sum()) for m in masks.values())
        return AttackResult(model, changed=changed, info={"suspects": suspects})

    @staticmethod
    def _descend(
        model: nn.Module,
        weights: dict[str, nn.Parameter],
        masks: dict[str, torch.Tensor],
        data: AttackerData,
        steps: int,
        lr: float,
        seed: int,
    ) -> None:
        """``steps`` Adam steps on mini-batches, with every gradient outside the masks zeroed."""
        device = model_device(model)
        tensors = list(weights.values())
        opt = make_optimizer(tensors, "adam", lr)
        loss_fn = nn.CrossEntropyLoss()
        gen = torch.Generator().manual_seed(seed)
        stream = iter(())
        model.eval()  # only the suspects move; batch-norm statistics stay the owner's
        with torch.enable_grad():
            for _ in range(steps):
                batch = next(stream, None)
                if batch is None:
                    stream = batches(data.train, BATCH_SIZE, shuffle=True, generator=gen)
                    batch = next(stream)
                x, y = batch
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x.to(device)), y.to(device)).backward()
                for n, w in weights.items():
                    if w.grad is not None:
                        w.grad.mul_(masks[n])
                opt.step()
        model.zero_grad(set_to_none=True)
