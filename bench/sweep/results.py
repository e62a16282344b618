"""Results as plain data: what a job returns, what MLflow records, what the report aggregates.

A `JobResult` is everything the driver needs to log one MLflow run; it holds figures and fingerprints,
never a key. The stolen-value arithmetic of a sweep (best attack against training from scratch, per
protection cell, attacker budget and seed) and the aggregation across seeds live here as pure functions,
so the driver, the report and the tests share one implementation.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.sweep.plan import stable_hash

Scalar = str | int | float | bool

#: A protection cell's accuracies, logged on every attack run of the cell so runs compare side by side.
CELL_METRICS = ("acc_clean", "acc_encrypted", "acc_decrypted", "drop_points", "encrypted_fraction")
#: `recovery` is only meaningful where encryption really removed accuracy.
MIN_DROP_FOR_RECOVERY = 0.05


@dataclass
class JobResult:
    job_id: str
    kind: str  # train | encrypt | attack | summary
    name: str
    status: str = "FINISHED"  # or FAILED
    params: dict[str, Scalar] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # file name -> text
    error: str | None = None


def recovery(acc_clean: float, acc_encrypted: float, acc_attacked: float) -> float | None:
    """Share of the accuracy encryption removed that the attack won back; None when too little was removed."""
    removed = acc_clean - acc_encrypted
    if removed < MIN_DROP_FOR_RECOVERY:
        return None
    return (acc_attacked - acc_encrypted) / removed


# ------------------------------------------------------------------------------------- stolen value
GROUP_KEYS = ("dataset", "model", "method", "cell", "fraction")


@dataclass(frozen=True)
class AttackRow:
    """One finished attack run, reduced to what the stolen-value arithmetic needs."""

    dataset: str
    model: str
    method: str | None  # None for an attack that ignores the weights (scratch)
    cell: str | None
    fraction: float
    seed: int
    attack: str
    acc_attacked: float
    val_attacked: float
    metrics: Mapping[str, float] = field(default_factory=dict)  # the cell's accuracies and the rest


@dataclass(frozen=True)
class Summary:
    """Per (data set, model, method, protection cell, attacker fraction, seed): what the thief gains."""

    dataset: str
    model: str
    method: str
    cell: str
    fraction: float
    seed: int
    best_attack: str
    worst_case_attacked: float
    scratch_accuracy: float | None
    cell_metrics: Mapping[str, float]
    attacked: Mapping[str, float]  # every attack's test accuracy

    @property
    def stolen_value_points(self) -> float | None:
        if self.scratch_accuracy is None:
            return None
        return 100.0 * (self.worst_case_attacked - self.scratch_accuracy)


def summarize(rows: Iterable[AttackRow], reference: str = "scratch") -> list[Summary]:
    """The best attack per group, chosen on the attacker's own validation accuracy (the test split never
    chooses), its test accuracy, and the reference attack's accuracy for the same baseline and budget."""
    rows = list(rows)
    scratch = {(r.dataset, r.model, r.fraction, r.seed): r.acc_attacked for r in rows if r.attack == reference}
    groups: dict[tuple, list[AttackRow]] = defaultdict(list)
    for r in rows:
        if r.attack != reference and r.method is not None:
            groups[(r.dataset, r.model, r.method, r.cell, r.fraction, r.seed)].append(r)
    out = []
    for (dataset, model, method, cell, fraction, seed), members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        best = max(members, key=lambda r: (r.val_attacked, r.attack))  # ties by name: the test split never chooses
        out.append(
            Summary(
                dataset=dataset, model=model, method=method, cell=cell or "", fraction=fraction, seed=seed,
                best_attack=best.attack, worst_case_attacked=best.acc_attacked,
                scratch_accuracy=scratch.get((dataset, model, fraction, seed)),
                cell_metrics={k: best.metrics[k] for k in CELL_METRICS if k in best.metrics},
                attacked={r.attack: r.acc_attacked for r in members},
            )
        )
    return out


def model_label(params: Mapping[str, Any]) -> str:
    """A model's name with its arguments, ``vgg_compact(width=16)``, so that two entries of one model with
    different arguments stay apart in summaries and reports (params read back from MLflow are strings, and
    print the same)."""
    args = sorted((k.removeprefix("model."), v) for k, v in params.items() if k.startswith("model."))
    return f"{params['model']}({', '.join(f'{k}={v}' for k, v in args)})" if args else str(params["model"])


def attack_row(result: JobResult) -> AttackRow:
    """An attack job's result (fresh, or read back from MLflow with string params) as an AttackRow."""
    p, m = result.params, result.metrics
    return AttackRow(
        dataset=str(p["dataset"]), model=model_label(p), method=p.get("method"), cell=p.get("cell"),
        fraction=float(p["fraction"]), seed=int(p["seed"]), attack=str(p["attack"]),
        acc_attacked=m["acc_attacked"], val_attacked=m["val_attacked"], metrics=dict(m),
    )


def summary_result(s: Summary) -> JobResult:
    """A summary as a run of its own (kind ``summary``), beside the attack runs it condenses."""
    key = {"dataset": s.dataset, "model": s.model, "method": s.method, "cell": s.cell, "fraction": s.fraction, "seed": s.seed}
    job_id = "summary-" + stable_hash(key)
    metrics = {**s.cell_metrics, "worst_case_attacked": s.worst_case_attacked}
    if s.scratch_accuracy is not None:
        metrics["scratch_accuracy"] = s.scratch_accuracy
        metrics["stolen_value_points"] = s.stolen_value_points  # type: ignore[assignment]
    metrics.update({f"acc_attacked.{a}": v for a, v in s.attacked.items()})
    name = f"{s.dataset}/{s.model}/{s.method}[{s.cell}]/summary@{s.fraction:.0%}/seed={s.seed}"
    return JobResult(job_id, "summary", name, params={**key, "best_attack": s.best_attack}, metrics=metrics,
                     tags={"kind": "summary", "job_id": job_id})


# ------------------------------------------------------------------------------------ across seeds
@dataclass(frozen=True)
class Spread:
    mean: float
    std: float  # sample standard deviation; 0 for a single seed
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.1f}±{self.std:.1f}" if self.n > 1 else f"{self.mean:.1f}"


def spread(values: Sequence[float]) -> Spread | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Spread(statistics.fmean(values), std, len(values))


def holds(stolen: Spread | None) -> bool | None:
    """A protection holds when the mean stolen value is at most one standard deviation above zero."""
    if stolen is None:
        return None
    return stolen.mean <= stolen.std


def differs(a: Spread | None, b: Spread | None) -> bool:
    """Whether two means differ by more than the larger of their spreads (the report marks the rest)."""
    if a is None or b is None:
        return False
    return abs(a.mean - b.mean) > max(a.std, b.std)


def by_seed_groups(summaries: Iterable[Summary]) -> dict[tuple, list[Summary]]:
    """Summaries grouped across seeds by (data set, model, method, cell, fraction)."""
    groups: dict[tuple, list[Summary]] = defaultdict(list)
    for s in summaries:
        groups[(s.dataset, s.model, s.method, s.cell, s.fraction)].append(s)
    return dict(sorted(groups.items(), key=lambda kv: str(kv[0])))


def as_record(values: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-friendly copy (Spread -> {mean, std, n})."""
    return {k: ({"mean": v.mean, "std": v.std, "n": v.n} if isinstance(v, Spread) else v) for k, v in values.items()}
