"""Training from scratch: the reference every other attack must beat to be worth anything."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from attacks.base import (
    Attack,
    AttackerBudget,
    AttackerData,
    AttackError,
    AttackResult,
    ComputeMeter,
    Report,
)
from attacks.registry import register_attack
from attacks.retrain import LR, OPTIMIZER, PATIENCE, RECIPES, fit


def reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """``model`` with every parameter re-drawn from a seeded init by its module's ``reset_parameters``.

    Refuses a model holding a parameter no such module owns (a bare ``nn.Parameter``, a ViT's class
    token): it would keep its stolen value and the reference would not be "from scratch".
    """
    torch.manual_seed(seed)
    covered: set[int] = set()
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
            covered.update(id(p) for p in module.parameters(recurse=False))
    kept = [name for name, p in model.named_parameters() if id(p) not in covered]
    if kept:
        raise AttackError(f"scratch cannot re-initialise parameter {kept[0]!r}: no module of it has reset_parameters")
    return model


@register_attack
class Scratch(Attack):
    """Train the same architecture from a fresh random initialisation, ignoring the stolen weights.

    AdvParams (Xue et al., arXiv:2105.13697) protects a model only if an attacker holding it cannot
    do better than one who trains the architecture from scratch on the same data within the same
    budget; this attack measures that bar, with the same compute cap, recipes and early stopping as the
    attacks that train the stolen weights.
    """

    name = "scratch"
    paper = "Xue et al., AdvParams, arXiv:2105.13697 (threat model: the train-from-scratch bar)"
    params = (LR, OPTIMIZER, PATIENCE)
    recipes = RECIPES
    uses_weights = False

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
        fresh = reinitialise(copy.deepcopy(model), seed)  # the caller's model (uses_weights = False)
        fit(fresh, data, meter, lr=params["lr"], optimizer=params["optimizer"], seed=seed, patience=params["patience"],
            report=report)
        return AttackResult(fresh)
