"""Outlier clipping: pull every weight beyond a robust z-score back towards its tensor's bulk."""

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
from attacks.weights import robust_scale, weight_params


@register_attack
class Clip(Attack):
    """Clip conv/linear weights whose robust z-score ``|w - median| / (1.4826 MAD)`` exceeds ``z``.

    AdvParams (Xue et al., arXiv:2105.13697) pushes a few weights to their tensor's extremes; the
    MAD-based z-score (Leys et al., "Detecting outliers: Do not use standard deviation around the
    mean, use absolute deviation around the median", JESP 2013) flags them without training. Outliers
    go to the threshold (``mode=threshold``) or to the median (``mode=median``). ``changed`` lists
    the clipped positions, for scoring against the key.
    """

    name = "clip"
    paper = "Leys et al., JESP 2013; Xue et al., AdvParams, arXiv:2105.13697"
    params = (
        Param("z", "float", 4.0, low=1.5, high=10.0, help="robust z-score above which a weight is clipped"),
        Param(
            "mode",
            "choice",
            "threshold",
            choices=("threshold", "median"),
            help="clip an outlier to the threshold or set it to its tensor's median",
        ),
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
        changed: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name, w in weight_params(model).items():
                median, scale = robust_scale(w)
                low, high = median - params["z"] * scale, median + params["z"] * scale
                outliers = (w < low) | (w > high)
                if not outliers.any():
                    continue
                if params["mode"] == "median":
                    w[outliers] = median
                else:
                    w.copy_(torch.clamp(w, low, high))
                changed[name] = torch.nonzero(outliers.flatten()).flatten()
        return AttackResult(
            model, changed=changed, info={"clipped": sum(int(i.numel()) for i in changed.values())}
        )
