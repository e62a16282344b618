"""Example advparams attack plugin: add Gaussian noise to every conv/linear weight.

An attack declares its parameters once (``params``); advparams validates user input against them,
tunes the ``tune=True`` ones with Optuna, and calls ``run`` with the encrypted model, the attacker's
data and budget. ``run`` must not modify the model it is given and must seed all randomness.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attacks import Attack, AttackerBudget, AttackerData, AttackResult, Param, Report
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

    def run(
        self,
        model: nn.Module,
        data: AttackerData,
        params: dict[str, Any],
        budget: AttackerBudget,
        *,
        seed: int = 0,
        report: Report | None = None,  # call report(step, val_accuracy) if the attack trains
    ) -> AttackResult:
        p = self.check_params(params, budget)  # defaults filled in, "0.1" strings coerced, ranges checked
        noisy = self.copy_model(model)  # never modify the caller's model
        generator = torch.Generator().manual_seed(seed)  # same seed, same result
        with torch.no_grad():
            for w in weight_params(noisy).values():
                noise = torch.randn(w.shape, generator=generator).to(w)
                w.add_(noise * p["sigma"] * w.std())
        return AttackResult(noisy, info={"sigma": p["sigma"]})
