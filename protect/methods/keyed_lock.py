"""A keyed, distribution-preserving lock: the most important weights of each layer re-drawn from that layer.

In the family of key-based locks that replace a share of important weights with random values (Deep-Lock,
2020; the selective encryption of Tian et al., 2021; AdaLoc, 2025), between AdvParams' few scalars and
re-drawing every weight (``reinit``). Per candidate layer, the top share ``rho`` of weights by ``importance``
(|w|, or |w x gradient| on the owner's samples) is chosen, at least one weight per layer. Each chosen weight
is replaced by a keyed draw from the layer's own values: a uniform draw (generator seeded by ``budget.seed``,
layer after layer in candidate order) through the inverse of the layer's empirical distribution, interpolated
between neighbouring sorted values. So every new value lies within the layer's [min, max], follows its
histogram, and is not a copy of another weight (copies would be a give-away in a float32 layer); a draw
that rounds to the weight's own value is drawn again, so every chosen scalar changes. A layer whose weights
are all equal has no other value to draw and is left alone.

``rho`` decides and the budget caps: when the layers' shares add up to more than ``budget.max_params``,
every layer keeps its most important weight (earlier layers first if the budget is smaller than the number
of layers) and the rest of the budget is shared in proportion to the weights each layer wanted beyond it. Raise ``max_params`` to let ``rho`` govern (a sweep over rho sets
it above rho times the candidate count). The key stores 32 bytes per changed scalar (two int64 positions,
two float64 values), so a 10 % lock's key is about 3.2 bytes per candidate weight. ``eps``,
``params_per_step``, ``target_accuracy`` and ``stay_in_range`` do not apply (the draws stay in range anyway).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from common.params import Param
from protect.owner_data import owner_pass
from protect.registry import EncryptionRun, register_method

OPTIONS = (
    Param(
        "rho", "float", 0.01, low=0.0, high=0.1,
        help="share of each layer's weights re-drawn, at least one per layer (0: one per layer); "
        "max_params caps the total (one weight per layer first, the rest in proportion to each layer's share)",
    ),
    Param(
        "importance", "choice", "magnitude", choices=("magnitude", "saliency"),
        help="how weights are ranked within a layer: magnitude (|w|, no data needed; the stronger lock on "
        "LeNet-5 and the compact VGG) or saliency (|w x gradient| on the owner's samples)",
    ),
)


@register_method("keyed_lock", options=OPTIONS)
def keyed_lock(run: EncryptionRun) -> dict[str, Any]:
    """Keyed lock: the top share rho of each layer's weights re-drawn from that layer's own distribution."""
    names = [n for n in run.candidates.names if _has_two_values(run.candidates.params[n])]
    if not names:
        return {"stop_reason": "no_layer_with_two_values"}
    params = [run.candidates.params[n] for n in names]
    scores = [p.detach().float().abs() for p in params]
    passes = 0
    if run.options["importance"] == "saliency":
        result = owner_pass(run.model, run.batches, params)
        passes = result.batches
        scores = [s * g for s, g in zip(scores, result.grads, strict=True)]
    wanted = [max(1, math.ceil(run.options["rho"] * p.numel())) for p in params]
    counts = _capped(wanted, run.budget.max_params)
    generator = torch.Generator().manual_seed(run.budget.seed)
    for name, param, score, count in zip(names, params, scores, counts, strict=True):
        if count:
            index = score.reshape(-1).cpu().argsort(descending=True, stable=True)[:count]
            run.ledger.set(name, index, _draws(param, index, generator))
    run.report_progress()
    reason = "rho" if counts == wanted else "max_params"
    return {"stop_reason": reason, "forward_backward_passes": passes, "layers": sum(c > 0 for c in counts)}


def _has_two_values(param: torch.Tensor) -> bool:
    """Whether the layer's distribution holds a value other than any given weight's own."""
    flat = param.detach().reshape(-1)
    return bool((flat != flat[0]).any())


def _capped(wanted: list[int], budget: int) -> list[int]:
    """``wanted`` cut to sum to ``budget`` when it sums to more: one weight per layer first (earlier layers
    first), the rest of the budget shared in proportion to what each layer wanted beyond it (largest
    remainders first)."""
    if sum(wanted) <= budget:
        return list(wanted)
    counts = [1 if i < budget else 0 for i in range(len(wanted))]
    left, extra = budget - sum(counts), [w - c for w, c in zip(wanted, counts, strict=True)]
    shares = [e * left / sum(extra) for e in extra] if left else [0.0] * len(extra)
    floors = [math.floor(s) for s in shares]
    by_remainder = sorted(range(len(extra)), key=lambda i: (floors[i] - shares[i], i))
    for i in by_remainder[: left - sum(floors)]:
        floors[i] += 1
    return [c + f for c, f in zip(counts, floors, strict=True)]


def _draws(param: torch.Tensor, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Keyed draws (float64) through the layer's interpolated empirical quantile function, one per position in
    ``index``, none rounding to the value it replaces."""
    flat = param.detach().reshape(-1).double().cpu()
    ordered = flat.sort().values
    old = flat[index].to(param.dtype)
    values = torch.empty(len(index), dtype=torch.float64)
    redraw = torch.ones(len(index), dtype=torch.bool)
    while redraw.any():
        place = torch.rand(int(redraw.sum()), generator=generator, dtype=torch.float64) * (len(ordered) - 1)
        below = place.floor().long().clamp(max=len(ordered) - 2)
        values[redraw] = torch.lerp(ordered[below], ordered[below + 1], place - below)
        redraw = values.to(param.dtype) == old
    return values
