"""The positive control: every candidate weight re-drawn from a keyed random init.

The encrypted model then holds the architecture with random weights, what training from scratch starts
from (only biases and normalisation parameters, which are not candidates, keep their trained values), so
its stolen value is zero by construction: a harness that measures more than its tolerance here measures
its own unfairness (attack recipes or budgets unequal to scratch's), not a protection.

Each weight is drawn from its layer's default init (PyTorch's ``reset_parameters`` for Linear and Conv:
kaiming-uniform with a = sqrt(5), uniform in ±1/sqrt(fan_in)) by a generator seeded with ``budget.seed``,
tensor after tensor in candidate order; a draw that rounds to the weight's own value is drawn again, so
every candidate scalar changes. The values go through ``Ledger.set``, so the key records each one and
restores the model bit for bit; they are not clamped into the tensor's range (``stay_in_range`` hides
small moves, and nothing here is small). ``max_params``, ``eps``, ``params_per_step`` and
``target_accuracy`` do not apply: the budget counts perturbations, and this method replaces the whole
candidate set, so its key holds every candidate weight (fine for small models, large for big ones).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from protect.registry import EncryptionRun, register_method


@register_method("reinit", changes_all=True)
def reinit(run: EncryptionRun) -> dict[str, Any]:
    """The positive control: every candidate weight re-drawn from its layer's default init (seeded)."""
    generator = torch.Generator().manual_seed(run.budget.seed)
    for name in run.candidates.names:
        param = run.candidates.params[name]
        run.ledger.set(name, torch.arange(param.numel()), _fresh_values(param, generator))
    return {"stop_reason": "all_candidates"}


def _fresh_values(param: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform draws in ±1/sqrt(fan_in) for every scalar of ``param`` (float64), none of them rounding to
    the value it replaces."""
    bound = 1.0 / math.sqrt(param[0].numel())  # fan_in: input channels times kernel size
    old = param.detach().reshape(-1).cpu()
    values = torch.empty(len(old), dtype=torch.float64)
    redraw = torch.ones(len(old), dtype=torch.bool)
    while redraw.any():
        values[redraw] = (torch.rand(int(redraw.sum()), generator=generator, dtype=torch.float64) * 2 - 1) * bound
        redraw = values.to(param.dtype) == old
    return values
