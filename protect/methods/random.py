"""The control method: ``max_params`` random scalars, each moved by ``eps`` with a random sign.

It shows how much of AdvParams' effect comes from choosing the scalars rather than from the budget
alone. The draw is seeded by ``budget.seed``: a random sign per candidate scalar, then scalars in a
random order, skipping those whose move would change nothing (pinned at a range bound, or lost to
rounding), so exactly the scalars whose value changed are in the key. The owner data is only used
for the accuracy before and after.
"""

from __future__ import annotations

from typing import Any

import torch

from protect.registry import EncryptionRun, register_method


@register_method("random")
def random_scalars(run: EncryptionRun) -> dict[str, Any]:
    """The control: max_params random scalars, each moved by eps with a seeded random sign."""
    candidates, ledger = run.candidates, run.ledger
    generator = torch.Generator().manual_seed(run.budget.seed)
    signs = torch.randint(0, 2, (candidates.total,), generator=generator, dtype=torch.int8) * 2 - 1
    order = torch.randperm(candidates.total, generator=generator)
    movable = torch.cat(
        [
            ledger.propose(name, signs[start : start + candidates.params[name].numel()])[1].cpu() > 0
            for name, start in zip(candidates.names, candidates.starts.tolist(), strict=True)
        ]
    )
    picked = order[movable[order]][: run.budget.max_params]
    for name, local, where in candidates.split(picked):
        ledger.apply(name, local, signs[picked[where]])
    run.report_progress()
    reason = "max_params" if len(picked) == run.budget.max_params else "no_movable_scalar"
    return {"stop_reason": reason}
