"""Fine-tuning: retrain the stolen encrypted model on the attacker's own data."""

from __future__ import annotations

from typing import Any

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
from attacks.retrain import LR, OPTIMIZER, PATIENCE, RECIPES, fit
from attacks.weights import classifier, weight_layers


def trainable_params(model: nn.Module, layers: str) -> list[nn.Parameter]:
    """The parameters ``layers`` selects: all, the classifier only, or the last two weight layers."""
    if layers == "all":
        return list(model.parameters())
    modules = [classifier(model)] if layers == "last" else [m for _, m in weight_layers(model)[-2:]]
    return [p for m in modules for p in m.parameters()]


@register_attack
class FineTune(Attack):
    """Retrain some or all layers on the attacker's data with the run's compute, stopping early on val accuracy.

    The classic removal attack on model IP protection (Adi et al., "Turning Your Weakness Into a
    Strength: Watermarking Deep Neural Networks by Backdooring", USENIX Security 2018), and the first
    robustness test of AdvParams (Xue et al., arXiv:2105.13697): gradient descent may walk the few
    perturbed weights back. Batch-norm statistics adapt to the attacker's data whatever ``layers`` is.
    """

    name = "finetune"
    paper = "Adi et al., USENIX Security 2018; Xue et al., AdvParams, arXiv:2105.13697"
    params = (
        Param(
            "layers",
            "choice",
            "all",
            choices=("all", "last", "last2"),
            help="all layers, the last nn.Linear only, or the last two conv/linear layers",
        ),
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
        fit(
            model,
            data,
            meter,
            lr=params["lr"],
            optimizer=params["optimizer"],
            seed=seed,
            patience=params["patience"],
            report=report,
            params=trainable_params(model, params["layers"]),
        )
        return AttackResult(model)
