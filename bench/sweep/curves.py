"""Curves over the attacker's budget: where more compute stops paying, and what the weights are worth in data.

Both read the report's rows (one per cell and attacker budget, mean ± std over seeds):

- The **plateau** of a cell at an attacker share: the smallest compute cap ``c`` of the sweep from which the
  next cap of at least ``2c`` moves both the best attack's and scratch's mean accuracy by less than their
  standard error over seeds (the larger of the two caps' ``std / sqrt(n)``). Its stolen value is the figure
  to quote: below it the stolen value still measures the attacker's epochs, not the protection.
- The **data-equivalent value** of a cell at share ``f`` and cap ``c``: the share of the training set that
  scratch needs, at the same cap, to match the best attack's mean accuracy at ``f``, divided by ``f``
  (scratch's mean accuracy interpolated linearly between the shares swept). Where scratch already matches at
  the smallest share the ratio is "at most" that share over ``f``; where it never matches, "more than" the
  largest share over ``f``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bench.sweep.results import Spread, Verdict

EXACT, AT_MOST, MORE_THAN = "=", "<=", ">"


class BudgetRow(Protocol):
    """What the curves read of a report row (`bench.sweep.report.AttackRowAgg`)."""

    dataset: str
    model: str
    method: str
    cell: str
    fraction: float
    epochs: int
    worst_case: Spread | None
    scratch: Spread | None
    stolen: Verdict | None


@dataclass(frozen=True)
class Plateau:
    dataset: str
    model: str
    method: str
    cell: str
    fraction: float
    caps: tuple[int, ...]  # the compute caps swept, ascending
    epochs: int | None  # the plateau's cap; None: not reached (or not decidable) within the caps swept
    stolen: Verdict | None  # the stolen value at that cap


@dataclass(frozen=True)
class DataEquivalent:
    dataset: str
    model: str
    method: str
    cell: str
    fraction: float
    epochs: int
    ratio: float  # share scratch needs / share the attacker holds
    relation: str  # EXACT, AT_MOST (scratch matches at the smallest share) or MORE_THAN (it never matches)

    def __str__(self) -> str:
        prefix = {EXACT: "", AT_MOST: "≤ ", MORE_THAN: "> "}[self.relation]
        return f"{prefix}{self.ratio:.2g}x"


def standard_error(s: Spread) -> float | None:
    """std / sqrt(n) over seeds; None for one seed (no spread, nothing to compare a move with)."""
    return s.std / math.sqrt(s.n) if s.n > 1 else None


def still(a: Spread | None, b: Spread | None) -> bool | None:
    """Whether the mean moved from ``a`` to ``b`` by less than the larger standard error; None: undecidable."""
    if a is None or b is None:
        return None
    errors = [standard_error(a), standard_error(b)]
    if None in errors:
        return None
    return abs(b.mean - a.mean) < max(errors)  # type: ignore[type-var]


def plateaus(rows: Iterable[BudgetRow]) -> list[Plateau]:
    """Each cell's plateau at each attacker share, for cells swept at two caps or more."""
    groups: dict[tuple, dict[int, BudgetRow]] = defaultdict(dict)
    for r in rows:
        groups[(r.dataset, r.model, r.method, r.cell, r.fraction)][r.epochs] = r
    out = []
    for key, by_cap in groups.items():
        caps = tuple(sorted(by_cap))
        if len(caps) < 2:
            continue
        found = None
        for cap in caps:
            partner = next((c for c in caps if c >= 2 * cap and c > cap), None)
            if partner is None:
                break
            here, there = by_cap[cap], by_cap[partner]
            if still(here.worst_case, there.worst_case) and still(here.scratch, there.scratch):
                found = cap
                break
        out.append(Plateau(*key, caps=caps, epochs=found, stolen=by_cap[found].stolen if found is not None else None))
    return out


def match_share(target: float, curve: Sequence[tuple[float, float]]) -> tuple[float, str]:
    """The share at which scratch's mean accuracy ``curve`` (share, accuracy; ascending shares) first reaches
    ``target``, linearly interpolated, with EXACT; the smallest share with AT_MOST where it is reached there
    already; the largest with MORE_THAN where it never is."""
    first_share, first_acc = curve[0]
    if first_acc >= target:
        return first_share, AT_MOST
    for (s0, a0), (s1, a1) in zip(curve, curve[1:], strict=False):
        if a1 >= target:
            return s0 + (target - a0) * (s1 - s0) / (a1 - a0), EXACT
    return curve[-1][0], MORE_THAN


def data_equivalents(rows: Iterable[BudgetRow]) -> list[DataEquivalent]:
    """The data-equivalent value of every row with a best attack and a scratch curve at its cap."""
    rows = list(rows)
    curves: dict[tuple, dict[float, float]] = defaultdict(dict)
    for r in rows:
        if r.scratch is not None:
            curves[(r.dataset, r.model, r.epochs)][r.fraction] = r.scratch.mean
    out = []
    for r in rows:
        curve = sorted(curves.get((r.dataset, r.model, r.epochs), {}).items())
        if r.worst_case is None or not curve:
            continue
        share, relation = match_share(r.worst_case.mean, curve)
        out.append(DataEquivalent(r.dataset, r.model, r.method, r.cell, r.fraction, r.epochs, share / r.fraction, relation))
    return out
