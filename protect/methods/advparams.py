"""AdvParams: adversarial perturbation of a few parameters, found by gradient ascent on the loss.

Xue, Wang, Liu, Zhang, Sun and Chen, "AdvParams: An Active DNN Intellectual Property Protection
Technique via Adversarial Perturbation Based Parameter Encryption", 2021, arXiv:2105.13697.

Only the paper's abstract is available, so the loop below is this project's reading of it, with the
open choices made explicit: each step runs the owner samples once (model in eval mode) for the mean
loss (option ``loss``), its gradient w.r.t. the candidate weights and the current accuracy; it stops
once accuracy is at or below the target, otherwise it moves the best-ranked, not yet moved scalars by
``eps`` along the sign of their gradient (FGSM applied to parameters), and it stops when ``max_params``
scalars have changed. Option ``rank`` picks the ranking. Option ``schedule`` picks how many scalars a
step moves, and so the cost, since each step is one pass over the owner samples: ``fixed`` moves
``params_per_step`` (one pass per scalar at the default budget); ``halving`` moves half of what the budget
still allows, but never less than a quarter of it, so whatever the budget it takes at most three passes
(more only if a step finds fewer movable scalars than it asks for), the largest step first, while the
model is farthest from the target.
"""

from __future__ import annotations

from typing import Any

import torch

from common.params import Param
from protect.budget import Budget
from protect.owner_data import owner_pass
from protect.registry import EncryptionRun, register_method

#: Schedule ``halving`` never moves fewer than 1/SMALLEST_SHARE of ``max_params`` in a step: at most
#: SMALLEST_SHARE - 1 steps (1/2, 1/4, 1/4).
SMALLEST_SHARE = 4

OPTIONS = (
    Param(
        "rank", "choice", "gain", choices=("gain", "gradient"),
        help="how scalars are ranked: gain (|grad| times the move actually possible after clamping, the "
        "first-order loss increase, so a scalar pinned at its tensor's bound is never picked) or gradient "
        "(plain |grad| among the scalars that can move at all)",
    ),
    Param(
        "loss", "choice", "ce", choices=("ce", "margin"),
        help="what is ascended: ce (the mean cross-entropy) or margin (the true class's logit margin over "
        "the best other class, counted only on samples still classified right, so moves go where they flip "
        "predictions; accuracy can then fall below chance instead of stalling at one predicted class)",
    ),
    Param(
        "schedule", "choice", "halving", choices=("halving", "fixed"),
        help=f"scalars moved per step, each step one pass over the owner samples: halving (half of those the "
        f"budget still allows, never fewer than max_params/{SMALLEST_SHARE} nor params_per_step: at most "
        f"{SMALLEST_SHARE - 1} passes whatever the budget) or fixed (params_per_step per step: one pass per "
        "scalar at the default budget, the loop before this option)",
    ),
)


@register_method("advparams", options=OPTIONS)
def advparams(run: EncryptionRun) -> dict[str, Any]:
    """AdvParams: iterated FGSM on the parameters, moving the scalars that raise the owner loss most."""
    budget, ledger, candidates = run.budget, run.ledger, run.candidates
    params = [candidates.params[n] for n in candidates.names]
    device = params[0].device
    steps = passes = 0
    while True:
        if ledger.count >= budget.max_params:
            reason = "max_params"
            break
        result = owner_pass(run.model, run.batches, params, run.options["loss"])
        steps += 1
        passes += result.batches
        if result.accuracy <= run.target_accuracy:
            reason = "target_reached"
            break
        signs = {n: g.sign().reshape(-1) for n, g in zip(candidates.names, result.grads, strict=True)}
        scores = torch.cat(
            [
                _score(run, n, g.reshape(-1), signs[n]).to(device)
                for n, g in zip(candidates.names, result.grads, strict=True)
            ]
        )
        wanted = min(step_size(run.options["schedule"], budget, ledger.count), len(scores))
        top = scores.topk(wanted)
        picked = top.indices[top.values > 0]
        if not len(picked):
            reason = "no_movable_scalar"
            break
        for name, local, _ in candidates.split(picked):
            ledger.apply(name, local, signs[name][local.to(device)])
        run.report_progress()
    return {"steps": steps, "forward_backward_passes": passes, "stop_reason": reason}


def step_size(schedule: str, budget: Budget, changed: int) -> int:
    """How many scalars the next step moves once ``changed`` have; never more than the budget allows."""
    left = budget.max_params - changed
    if schedule == "fixed":
        return min(budget.params_per_step, left)
    return min(max(-(-left // 2), -(-budget.max_params // SMALLEST_SHARE), budget.params_per_step), left)


def _score(run: EncryptionRun, name: str, grad: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Per-scalar ranking score; 0 for scalars that cannot move."""
    _, size = run.ledger.propose(name, sign)
    if run.options["rank"] == "gain":
        return grad.abs().double() * size
    return torch.where(size > 0, grad.abs().double(), torch.zeros_like(size))
