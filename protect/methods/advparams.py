"""AdvParams: adversarial perturbation of a few parameters, found by gradient ascent on the loss.

Xue, Wang, Liu, Zhang, Sun and Chen, "AdvParams: An Active DNN Intellectual Property Protection
Technique via Adversarial Perturbation Based Parameter Encryption", 2021, arXiv:2105.13697.

Only the paper's abstract is available, so the loop below is this project's reading of it, with the
open choices made explicit: each step runs the owner samples once (model in eval mode) for the mean
loss (option ``loss``), its gradient w.r.t. the candidate weights and the current accuracy; it stops
once accuracy is at or below the target, otherwise it moves the best-ranked, not yet moved scalars by
``eps`` along the sign of their gradient (FGSM applied to parameters), and it stops when ``max_params``
scalars have changed. Option ``rank`` picks the ranking.

Each step costs one pass over the owner samples, so the step sizes set the cost. Option ``schedule``:
``fixed`` moves ``params_per_step`` scalars a step (one pass per scalar at the default budget: the reference
loop); ``adaptive`` moves a share of the budget first, while the first-order ranking of a model far from the
target is reliable, then as many as the accuracy lost per scalar so far says the target still needs (with a
margin), so steps shrink as the target nears, and it takes a handful of passes whatever the budget; a step of
``FOCUS_FROM`` scalars or more moves them within one input unit per weight tensor. Option
``gradient_samples`` takes the gradient over the first owner samples only; the accuracy, and so the stop,
always counts all of them.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from common.params import Param
from protect.budget import Budget
from protect.owner_data import owner_pass
from protect.registry import EncryptionRun, register_method

#: Schedule ``adaptive``: the first step moves 1/FIRST_SHARE of ``max_params``, and no step fewer than
#: 1/SMALLEST_SHARE of it (so at most about SMALLEST_SHARE passes, whatever the budget); a budget of at most
#: SMALLEST_SHARE scalars is spent as the reference loop spends it, one scalar a pass.
FIRST_SHARE = 4
SMALLEST_SHARE = 8
#: Later steps move OVERSHOOT times the scalars the accuracy lost per scalar so far says the target still needs
#: (accuracy falls ever slower near the target, so the straight-line estimate falls short), but no more than
#: GROWTH times the step before (an estimate from a small step is a rough one).
OVERSHOOT = 2
GROWTH = 2
#: A step of ``adaptive`` that moves at least this many scalars moves them within one input unit of each weight
#: tensor (the weights that read one channel or feature), the one whose scalars score highest together. The
#: reference loop, re-ranking after every scalar, builds one amplified path through the network: the moves in one
#: layer amplify a unit, and the best moves in the next then read it. A step ranked from one gradient and spread
#: over every unit cannot see that. Steps of fewer scalars rank over every unit. BENCHMARKS.md's encryption table
#: holds the drops this gives against the reference loop; the output unit (a class, in the head) was measured too
#: and left some digits CNN seeds nearly unlocked.
FOCUS_FROM = 8

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
        "schedule", "choice", "fixed", choices=("adaptive", "fixed"),
        help=f"scalars moved per step, each step one pass over the owner samples: adaptive (max_params/{FIRST_SHARE} "
        f"first, then {OVERSHOOT} times as many as the accuracy lost per scalar so far says the target still needs, "
        f"at most {GROWTH} times the step before, never fewer than max_params/{SMALLEST_SHARE} nor params_per_step, "
        f"and one a pass for a budget of at most {SMALLEST_SHARE}; a step of {FOCUS_FROM} or more within one input "
        "unit of each weight tensor; a few passes whatever the budget, but its drop is not shown within a point of "
        "fixed's on every data set and budget, so it is not the default) or fixed "
        "(params_per_step per step: one pass per scalar at the default budget, the reference loop)",
    ),
    Param(
        "gradient_samples", "int", 0, low=0, tune=False,
        help="owner samples the gradient is taken over each step (the first ones; 0: all); accuracy and the "
        "stop at the target always count every owner sample",
    ),
)


@register_method("advparams", options=OPTIONS)
def advparams(run: EncryptionRun) -> dict[str, Any]:
    """AdvParams: iterated FGSM on the parameters, moving the scalars that raise the owner loss most."""
    budget, ledger, candidates = run.budget, run.ledger, run.candidates
    params = [candidates.params[n] for n in candidates.names]
    device = params[0].device
    gradient_samples = run.options["gradient_samples"] or None
    steps = passes = 0
    last: tuple[int, float] | None = None  # the previous step's scalars moved and the accuracy before it
    while True:
        if ledger.count >= budget.max_params:
            reason = "max_params"
            break
        result = owner_pass(run.model, run.batches, params, run.options["loss"], gradient_samples)
        steps += 1
        passes += result.batches
        if result.accuracy <= run.target_accuracy:
            reason = "target_reached"
            break
        wanted = step_size(run.options["schedule"], budget, ledger.count, run.target_accuracy, result.accuracy, last)
        focus = run.options["schedule"] == "adaptive" and wanted >= FOCUS_FROM
        signs = {n: g.sign().reshape(-1) for n, g in zip(candidates.names, result.grads, strict=True)}
        per_tensor = []
        for n, g in zip(candidates.names, result.grads, strict=True):
            score = _score(run, n, g.reshape(-1), signs[n])
            per_tensor.append((best_unit(score, g.shape) if focus else score).to(device))
        scores = torch.cat(per_tensor)
        top = scores.topk(min(wanted, len(scores)))
        picked = top.indices[top.values > 0]
        if not len(picked):
            reason = "no_movable_scalar"
            break
        before = ledger.count
        for name, local, _ in candidates.split(picked):
            ledger.apply(name, local, signs[name][local.to(device)])
        last = (ledger.count - before, result.accuracy)
        run.report_progress()
    return {"steps": steps, "forward_backward_passes": passes, "stop_reason": reason}


def step_size(
    schedule: str, budget: Budget, changed: int, target: float, accuracy: float, last: tuple[int, float] | None
) -> int:
    """How many scalars the next step moves, once ``changed`` have and the owner accuracy is ``accuracy``;
    ``last`` is the previous step's (scalars moved, accuracy before it). Never more than the budget allows."""
    left = budget.max_params - changed
    if schedule == "fixed" or budget.max_params <= SMALLEST_SHARE:
        # A budget this small fits adaptive's own bound on passes one scalar at a time: the reference loop,
        # which re-ranks after every scalar, costs no more here and is the better lock when scalars are scarce.
        return min(budget.params_per_step, left)
    fewest = max(-(-budget.max_params // SMALLEST_SHARE), budget.params_per_step)
    if last is None:
        wanted = -(-budget.max_params // FIRST_SHARE)
    else:
        moved, accuracy_before = last
        lost = accuracy_before - accuracy
        needed = math.ceil(OVERSHOOT * moved * (accuracy - target) / lost) if lost > 0 else moved
        wanted = min(needed, GROWTH * moved)
    return min(max(wanted, fewest), left)


def best_unit(scores: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Flat ``scores`` of a tensor of ``shape``, zero outside its input unit (slice along the second dimension: an
    input channel of a convolution, an input feature of a linear layer) with the largest summed score; a 1-d tensor
    (a bias) has no units to pick from and is kept whole."""
    if len(shape) < 2:
        return scores
    units = scores.reshape(shape[0], shape[1], -1)
    best = int(units.sum(dim=(0, 2)).argmax())
    kept = torch.zeros_like(units)
    kept[:, best] = units[:, best]
    return kept.reshape(-1)


def _score(run: EncryptionRun, name: str, grad: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Per-scalar ranking score; 0 for scalars that cannot move."""
    _, size = run.ledger.propose(name, sign)
    if run.options["rank"] == "gain":
        return grad.abs().double() * size
    return torch.where(size > 0, grad.abs().double(), torch.zeros_like(size))
