"""Key inversion: run AdvParams backwards, resetting the scalars whose reset lowers the attacker's loss most."""

from __future__ import annotations

import dataclasses
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
from attacks.retrain import FINETUNE_AFTER, LR, OPTIMIZER, PATIENCE, BestState, fit
from attacks.weights import loss_gradients, reset_values, weight_params


def reset_gains(
    weights: dict[str, nn.Parameter], grads: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
) -> torch.Tensor:
    """First-order loss decrease of resetting each scalar, ``g * (w - r)``, flat over all tensors in order."""
    return torch.cat([(grads[n] * (w.detach() - targets[n])).flatten() for n, w in weights.items()])


@register_attack
class KeyInversion(Attack):
    """Invert AdvParams greedily: reset, step by step, the scalars whose reset most lowers the loss to first order.

    AdvParams (Xue et al., arXiv:2105.13697) builds its key greedily: it moves, step after step, the few
    conv/linear scalars whose move raises the owner's loss most to first order. An attacker who knows this
    runs it backwards on its own data: with ``g`` the gradient of its loss and ``r`` a reset value (the
    tensor's median, where the bulk of a trained tensor sits, or zero), resetting a scalar ``w`` changes
    the loss by about ``g * (r - w)``, the first-order Taylor criterion that ranks weights for pruning
    (Molchanov et al., "Pruning Convolutional Neural Networks for Resource Efficient Inference", ICLR
    2017, with zero as the reset value). The ``step`` scalars with the largest gain ``g * (w - r) > 0``
    are reset, the gradient is estimated again on ``grad_samples`` samples, and so on, until
    ``max_resets`` scalars are reset or the compute is spent; the state where the attacker's val accuracy
    peaks is kept. The gradient that ranks is an exponential average over the estimates (weight
    ``grad_average`` on the earlier ones): a few resets barely change it, so averaging lowers the noise of
    small estimates at no compute. With ``finetune_after``, all layers are then fine-tuned with the compute
    left. ``changed`` lists the scalars reset in the kept state (the attacker's guess of the key), whether or
    not fine-tuning moved every weight afterwards.
    """

    name = "key_inversion"
    paper = "Molchanov et al., ICLR 2017 (first-order Taylor criterion); Xue et al., AdvParams, arXiv:2105.13697"
    params = (
        Param("step", "int", 2, low=1, high=64, log=True, help="scalars reset per gradient estimate"),
        Param("max_resets", "int", 64, low=4, high=1024, log=True, help="stop after this many scalars are reset"),
        Param("reset", "choice", "median", choices=("median", "zero"), help="the value a reset scalar takes"),
        Param(
            "grad_samples", "int", 64, low=16, high=2048, log=True,
            help="samples per gradient estimate, drawn from the attacker's train split (all of it if it holds fewer)",
        ),
        Param(
            "grad_average", "float", 0.5, low=0.0, high=0.9,
            help="weight of the earlier estimates in the averaged gradient that ranks resets (0: the latest alone)",
        ),
        dataclasses.replace(FINETUNE_AFTER, default=False),
        LR,
        OPTIMIZER,
        PATIENCE,
    )
    recipes = ({"finetune_after": True, "max_resets": 32, "grad_samples": 32},)  # compute left for fine-tuning

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
        targets = reset_values(weights, params["reset"])
        best = BestState(model, data, meter, patience=None, report=None)  # fine-tuning reports, if it runs
        gen = torch.Generator().manual_seed(seed)
        resets = estimates = 0
        average: dict[str, torch.Tensor] = {}
        while resets < params["max_resets"]:
            grads = loss_gradients(model, weights, data, meter, samples=params["grad_samples"], generator=gen)
            if grads is None:  # the compute is spent
                break
            estimates += 1
            beta = params["grad_average"]
            average = {n: beta * average[n] + (1 - beta) * g for n, g in grads.items()} if average else grads
            gains = reset_gains(weights, average, targets)
            top = gains.topk(min(params["step"], params["max_resets"] - resets, gains.numel()))
            picked = top.indices[top.values > 0]
            if not picked.numel():  # no reset lowers the loss any more, to first order
                break
            self._reset(weights, targets, picked)
            resets += picked.numel()
            best.check(estimates)
        best.restore()
        changed = {n: torch.nonzero((w.detach() != before[n]).flatten()).flatten() for n, w in weights.items()}
        changed = {n: idx for n, idx in changed.items() if idx.numel()}
        info: dict[str, float | int | str] = {
            "resets": sum(int(i.numel()) for i in changed.values()),
            "gradient_estimates": estimates,
            "val_inverted": best.best,
        }
        if params["finetune_after"]:
            fit(model, data, meter, lr=params["lr"], optimizer=params["optimizer"], seed=seed,
                patience=params["patience"], report=report)
        return AttackResult(model, changed=changed, info=info)

    @staticmethod
    @torch.no_grad()
    def _reset(weights: dict[str, nn.Parameter], targets: dict[str, torch.Tensor], picked: torch.Tensor) -> None:
        """Set the scalars at the flat indices ``picked`` (over all tensors in order) to their reset values."""
        start = 0
        for n, w in weights.items():
            size = w.numel()
            local = picked[(picked >= start) & (picked < start + size)] - start
            if local.numel():
                w.view(-1)[local] = targets[n]
            start += size
