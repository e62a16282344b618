"""The leaderboard: every protection of a sweep ranked by what a thief gains, as plain data.

One entry per data set, model, method, protection budget and attacker budget (share and compute cap: the
verdict's cells). It joins the report's protection row (share of the parameters changed, clean and encrypted
accuracy, encryption time) with the cell's verdict row (the worst-case attack the attacker's own validation
split chose, scratch, the stolen value with its one-sided bounds, the verdict, whether the controls vouch for
it); nothing is computed again. Entries are ranked by stolen value, lowest first (the best protection), on
each **board**: one data set, model and attacker budget, as stolen values under different attackers do not
compare. The calibration controls are ranked with the rest and marked, so every board shows the scale from
``random`` (protects nothing) to ``reinit`` (nothing left to steal). The report writes the entries as
``leaderboard.json``; its table, its MLflow table, BENCHMARKS.md and the Pareto plots render them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

from bench.sweep.curves import BudgetRow
from bench.sweep.results import (
    NEGATIVE_CONTROL,
    POSITIVE_CONTROL,
    Spread,
    Verdict,
    as_record,
)

#: How an entry of a calibration control is marked, by method.
CONTROLS = {NEGATIVE_CONTROL: "negative", POSITIVE_CONTROL: "positive"}


class ProtectionFigures(Protocol):
    """What the leaderboard reads of a protection row (`bench.sweep.report.ProtectionRow`)."""

    dataset: str
    model: str
    method: str
    cell: str
    clean: Spread | None
    encrypted: Spread | None
    changed_share: Spread | None  # percent of all parameters
    encrypt_seconds: Spread | None


class VerdictFigures(BudgetRow, Protocol):
    """What the leaderboard reads of a verdict row (`bench.sweep.report.AttackRowAgg`): the curves' figures too."""

    best_attacks: str
    trusted: bool | None


@dataclass(frozen=True)
class Entry:
    dataset: str
    model: str
    fraction: float  # the attacker's share of the training set
    epochs: int  # the attacker's compute cap, epoch-equivalents
    rank: int  # on its board, 1 = the lowest stolen value; entries without one come last
    method: str
    cell: str  # the protection budget
    control: str | None  # "negative" (random), "positive" (reinit) or None
    changed_pct: float | None  # mean share of the model's parameters changed, in percent
    clean: Spread | None
    encrypted: Spread | None
    worst_case: Spread | None  # the best attack's test accuracy, the attack chosen on the attacker's validation split
    best_attacks: str
    scratch: Spread | None
    stolen: Verdict | None  # worst case minus scratch per seed, points, with its one-sided bounds and decision
    trusted: bool | None  # whether the controls vouch for the cell (None: no control checked)
    encrypt_seconds: Spread | None
    pareto: bool = False  # on its board's front: no other non-control entry changes fewer parameters and leaves less to steal

    @property
    def board(self) -> tuple[str, str, float, int]:
        return (self.dataset, self.model, self.fraction, self.epochs)

    @property
    def decision(self) -> str:
        return "-" if self.stolen is None else self.stolen.decision


def build(protection: Iterable[ProtectionFigures], verdicts: Iterable[VerdictFigures]) -> list[Entry]:
    """The entries of every verdict cell, ranked on their boards, the Pareto front of each board marked."""
    figures = {(p.dataset, p.model, p.method, p.cell): p for p in protection}
    boards: dict[tuple, list[Entry]] = defaultdict(list)
    for v in verdicts:
        p = figures.get((v.dataset, v.model, v.method, v.cell))
        entry = Entry(
            v.dataset, v.model, v.fraction, v.epochs, 0, v.method, v.cell, CONTROLS.get(v.method),
            changed_pct=p.changed_share.mean if p and p.changed_share else None,
            clean=p.clean if p else None, encrypted=p.encrypted if p else None, worst_case=v.worst_case,
            best_attacks=v.best_attacks, scratch=v.scratch, stolen=v.stolen, trusted=v.trusted,
            encrypt_seconds=p.encrypt_seconds if p else None,
        )
        boards[entry.board].append(entry)
    out = []
    for board in sorted(boards):
        ranked = sorted(boards[board], key=_rank_key)
        front = {id(e) for e in pareto_front(ranked)}
        out += [replace(e, rank=i, pareto=id(e) in front) for i, e in enumerate(ranked, 1)]
    return out


def _rank_key(e: Entry) -> tuple:
    """Lowest stolen value first; ties by the upper bound (the tighter claim), then the fewer parameters changed."""
    if e.stolen is None:
        return (1, 0.0, 0.0, 0.0, e.method, e.cell)
    upper = e.stolen.upper if e.stolen.upper is not None else e.stolen.mean
    return (0, e.stolen.mean, upper, e.changed_pct if e.changed_pct is not None else float("inf"), e.method, e.cell)


def pareto_front(entries: Iterable[Entry]) -> list[Entry]:
    """The non-control entries with a stolen value and a share changed that no other such entry beats on
    both (as few or fewer parameters changed and as low or lower a mean stolen value, one of them strictly),
    by share changed."""
    points = [e for e in entries if e.control is None and e.stolen is not None and e.changed_pct is not None]

    def beaten(e: Entry) -> bool:
        return any(o.changed_pct <= e.changed_pct and o.stolen.mean <= e.stolen.mean  # type: ignore[operator, union-attr]
                   and (o.changed_pct, o.stolen.mean) != (e.changed_pct, e.stolen.mean) for o in points)  # type: ignore[union-attr]

    return sorted((e for e in points if not beaten(e)), key=lambda e: e.changed_pct)  # type: ignore[arg-type, return-value]


def records(entries: Iterable[Entry]) -> list[dict[str, Any]]:
    """The entries as JSON-friendly dicts (each Spread as {mean, std, n}; the stolen value with its bounds and
    decision), the form ``leaderboard.json`` and the MLflow table hold."""
    return [{**as_record({f.name: getattr(e, f.name) for f in fields(e)}), "decision": e.decision} for e in entries]
