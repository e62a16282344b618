"""Statistical reset: find weights piled up at their tensor's clamp bounds (or far outliers), reset them, fine-tune."""

from __future__ import annotations

import math
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
from attacks.weights import (
    MAD_TO_SIGMA,
    reset_values,
    robust_scale,
    robust_z,
    weight_params,
)
from common.training import accuracy


def laplace_cdf(x: torch.Tensor, median: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """CDF of the Laplace distribution centred on ``median`` with ``scale`` (whose MAD is ``scale * ln 2``)."""
    z = (x - median) / scale
    return torch.where(z < 0, 0.5 * torch.exp(z), 1 - 0.5 * torch.exp(-z))


def poisson_tail(count: int, mean: float) -> float:
    """``P(N >= count)`` for ``N`` Poisson with ``mean`` (``count >= 1``): the regularized lower incomplete gamma."""
    k, mean64 = torch.tensor(count, dtype=torch.float64), torch.tensor(mean, dtype=torch.float64)
    return float(torch.special.gammainc(k, mean64))


def extreme_piles(w: torch.Tensor, band: float, min_pile: int, significance: float) -> torch.Tensor:
    """Mask of the values within ``band`` (a share of the tensor's range) of its min or max, on a side where they pile.

    A defence that clamps perturbed weights to the tensor's [min, max] leaves several at (or next to) the
    bounds, where a trained tensor holds one value. The bulk is modelled as a Laplace distribution fitted to
    the median and MAD (heavier-tailed than a normal, as trained weights are, so it predicts the tails
    generously), which puts a Poisson count with mean ``expected`` in each band; a side's band is flagged when
    it holds at least ``min_pile`` values and a count that large has a probability below ``significance``.
    """
    flat = w.detach().flatten().double()
    low, high = flat.min(), flat.max()
    width = band * (high - low)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if width <= 0:  # a constant tensor: nothing stands out
        return mask.view_as(w)
    median, sigma = robust_scale(flat)
    scale = sigma / (MAD_TO_SIGMA * math.log(2))
    for side, start, end in ((flat <= low + width, low, low + width), (flat >= high - width, high - width, high)):
        expected = flat.numel() * float(laplace_cdf(end, median, scale) - laplace_cdf(start, median, scale))
        count = int(side.sum())
        if count >= min_pile and poisson_tail(count, expected) < significance:
            mask |= side
    return mask.view_as(w)


@register_attack
class StatisticalReset(Attack):
    """Reset the weights that the tensor statistics give away, then fine-tune with the compute left.

    GroupCover (Zhang et al., "GroupCover: A Secure, Efficient and Scalable Inference Framework for On-device
    Model Protection based on TEEs", ICML 2024) broke NNSplitter (Zhou et al., ICML 2023) statistically: its
    obfuscated weights, clamped to their layer's original [min, max], pile up at the extremes, so an attacker
    who sees only the obfuscated model finds them, resets them and fine-tunes on a few samples. AdvParams
    (Xue et al., arXiv:2105.13697) clamps its moved scalars the same way. Two flags, ``flags`` picks which:
    ``extremes``, the values within ``band`` of a tensor's min or max on a side where far more of them sit
    than the bulk predicts (:func:`extreme_piles`, at ``significance``); ``outliers``, the values whose
    robust z-score ``|w - median| / (1.4826 MAD)`` exceeds ``z`` (Leys et al., JESP 2013). Flagged weights
    take the reset value (their tensor's median or zero); with ``finetune_after`` all layers are then
    fine-tuned with the whole compute (the reset needs no gradient). ``changed`` lists the reset positions
    (the attacker's guess of the key).
    """

    name = "statistical_reset"
    paper = (
        "Zhang et al., GroupCover, ICML 2024; Zhou et al., NNSplitter, ICML 2023; "
        "Xue et al., AdvParams, arXiv:2105.13697"
    )
    params = (
        Param(
            "flags", "choice", "extremes", choices=("extremes", "outliers", "both"),
            help="reset the piles at a tensor's extremes, the robust-z outliers, or both",
        ),
        Param(
            "band", "float", 1e-3, low=1e-6, high=0.05, log=True,
            help="width of the band at a tensor's min and max, as a share of its range (max - min)",
        ),
        Param(
            "min_pile", "int", 2, low=2, high=64, log=True,
            help="fewest values in a band that can make a pile (a trained tensor holds one value at each extreme)",
        ),
        Param(
            "significance", "float", 1e-3, low=1e-8, high=0.05, log=True,
            help="a band piles up when the bulk would put that many values in it with a probability below this",
        ),
        Param("z", "float", 8.0, low=3.0, high=20.0, help="robust z-score above which a weight is an outlier"),
        Param("reset", "choice", "median", choices=("median", "zero"), help="the value a flagged weight takes"),
        FINETUNE_AFTER,
        LR,
        OPTIMIZER,
        PATIENCE,
    )
    recipes = RECIPES  # the fine-tuning recipes: the reset itself costs no compute

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
        targets = reset_values(weights, params["reset"])
        changed: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name, w in weights.items():
                flagged = self.flag(w, params)
                if flagged.any():
                    w[flagged] = targets[name]
                    changed[name] = torch.nonzero(flagged.flatten()).flatten()
        meter.see(len(data.val))
        info: dict[str, float | int | str] = {
            "resets": sum(int(i.numel()) for i in changed.values()),
            "val_reset": accuracy(model, data.val),
        }
        if params["finetune_after"]:
            fit(model, data, meter, lr=params["lr"], optimizer=params["optimizer"], seed=seed,
                patience=params["patience"], report=report)
        return AttackResult(model, changed=changed, info=info)

    @staticmethod
    def flag(w: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        """Mask of the weights of ``w`` that ``params['flags']`` selects."""
        mask = torch.zeros_like(w, dtype=torch.bool)
        if params["flags"] in ("extremes", "both"):
            mask |= extreme_piles(w, params["band"], params["min_pile"], params["significance"])
        if params["flags"] in ("outliers", "both"):
            mask |= robust_z(w) > params["z"]
        return mask
