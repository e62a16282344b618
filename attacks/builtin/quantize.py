"""Simulated weight quantization: round weights to a symmetric integer grid and back to float."""

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
from attacks.weights import weight_params


def fake_quantize(w: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """``w`` rounded to ``bits``-bit symmetric integers (per tensor or per output channel), dequantized."""
    qmax = 2 ** (bits - 1) - 1
    if per_channel:
        peak = w.abs().flatten(1).amax(dim=1).view(-1, *([1] * (w.dim() - 1)))
    else:
        peak = w.abs().amax()
    scale = (peak / qmax).clamp_min(torch.finfo(w.dtype).tiny)
    return torch.round(w / scale).clamp(-qmax, qmax) * scale


@register_attack
class Quantize(Attack):
    """Quantize conv/linear weights to int8 or int4 with symmetric scales, kept as floats.

    Post-training quantization (Jacob et al., "Quantization and Training of Neural Networks for
    Efficient Integer-Arithmetic-Only Inference", CVPR 2018) is a cheap transformation a thief may
    apply; AdvParams' perturbed weights (Xue et al., arXiv:2105.13697) sit at their tensor's
    extremes, so they set the scale and survive rounding, while small weights lose precision.
    """

    name = "quantize"
    paper = "Jacob et al., CVPR 2018; Xue et al., AdvParams, arXiv:2105.13697"
    params = (
        Param("bits", "choice", 8, choices=(8, 4), help="integer width of the simulated weights"),
        Param("per_channel", "bool", False, help="one scale per output channel instead of per tensor"),
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
        with torch.no_grad():
            for w in weight_params(model).values():
                w.copy_(fake_quantize(w, params["bits"], params["per_channel"]))
        return AttackResult(model, info={"bits": params["bits"]})
