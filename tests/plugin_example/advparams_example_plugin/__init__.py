"""Example advparams attack plugin: add Gaussian noise to every conv/linear weight.

An attack declares its parameters once (``params``) and implements ``attack``, its own step. advparams
validates user input against the params, tunes the ``tune=True`` ones with Optuna, and its ``run`` calls
``attack`` with a copy of the encrypted model (free to modify), the checked params, the attacker's data
and budget, and the run's compute meter. ``attack`` must seed all randomness from ``seed`` and pay for
every backward pass with ``meter.charge(samples)`` (this one runs none, so it spends nothing).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attacks import (
    Attack,
    AttackerBudget,
    AttackerData,
    AttackResult,
    ComputeMeter,
    Param,
    Report,
)
from attacks.weights import weight_params


class GaussianNoise(Attack):
    """Add zero-mean Gaussian noise, ``sigma`` times each tensor's standard deviation, to its weights.

    Noise of this size barely moves a trained model but may wash out a few perturbed scalars.
    """

    name = "noise"  # the name users pick it by; equal to the entry point's name
    paper = ""  # a citation, if the attack comes from one
    params = (
        # name, kind ("int"/"float"/"bool"/"choice"), default, then the range the tuner searches
        Param("sigma", "float", 0.05, low=0.0, high=0.5, help="noise std relative to each tensor's std"),
    )

    def attack(
        self,
        model: nn.Module,
        data: AttackerData,
        params: dict[str, Any],
        budget: AttackerBudget,
        *,
        seed: int,
        report: Report | None,  # call report(step, val_accuracy) if the attack trains
        meter: ComputeMeter,  # meter.remaining: sample-gradients left to this run; meter.charge(n) spends them
    ) -> AttackResult:
        # model: run()'s copy of the caller's model; params: every declared param, checked and filled in
        generator = torch.Generator().manual_seed(seed)  # same seed, same result
        with torch.no_grad():
            for w in weight_params(model).values():
                noise = torch.randn(w.shape, generator=generator).to(w)
                w.add_(noise * params["sigma"] * w.std())
        return AttackResult(model, info={"sigma": params["sigma"]})
