"""Results as plain data: what a job returns, what MLflow records, what the report aggregates.

A `JobResult` is everything the driver needs to log one MLflow run; it holds figures and fingerprints,
never a key. The stolen-value arithmetic of a sweep (best attack against training from scratch, per
protection cell, attacker budget and seed), the verdict across seeds and the calibration controls live
here as pure functions, so the driver, the report and the tests share one implementation.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bench.sweep.config import DEFAULT_TOLERANCE
from bench.sweep.plan import stable_hash

Scalar = str | int | float | bool

#: A protection cell's accuracies, logged on every attack run of the cell so runs compare side by side.
CELL_METRICS = ("acc_clean", "acc_encrypted", "acc_decrypted", "drop_points", "encrypted_fraction")
#: `recovery` is only meaningful where encryption really removed accuracy.
MIN_DROP_FOR_RECOVERY = 0.05

#: Confidence of the one-sided bounds.
CONFIDENCE = 0.95
BROKEN, HOLDS, INCONCLUSIVE = "broken", "holds", "inconclusive"
#: The calibration controls, by protection method: the first protects nothing, the second leaves nothing to steal.
NEGATIVE_CONTROL, POSITIVE_CONTROL = "random", "reinit"


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
@dataclass(frozen=True)
class AttackRow:
    """One finished attack run, reduced to what the stolen-value arithmetic needs.

    The attacker's budget is its data share ``fraction`` and compute cap ``epochs`` (epoch-equivalents);
    ``failed`` says why a baseline ended at chance (its run is then no bar to measure against)."""

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
    epochs: int = 0
    failed: str | None = None


@dataclass(frozen=True)
class Summary:
    """Per (data set, model, method, protection cell, attacker share and compute cap, seed): what the thief
    gains. ``scratch_failed`` says why there is no scratch figure where scratch ran but ended at chance."""

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
    verdict: CellVerdict | None = None  # the cell's verdict across seeds, the same in each seed's summary
    epochs: int = 0
    scratch_failed: str | None = None
    key_recall: Mapping[str, float] = field(default_factory=dict)  # per attack that reports changed positions

    @property
    def stolen_value_points(self) -> float | None:
        if self.scratch_accuracy is None:
            return None
        return 100.0 * (self.worst_case_attacked - self.scratch_accuracy)

    @property
    def clean_gain_points(self) -> float | None:
        """What the clean model is worth over scratch (the most a thief could gain), in points."""
        if self.scratch_accuracy is None or "acc_clean" not in self.cell_metrics:
            return None
        return 100.0 * (self.cell_metrics["acc_clean"] - self.scratch_accuracy)


def summarize(rows: Iterable[AttackRow], reference: str = "scratch", tolerance: float = DEFAULT_TOLERANCE) -> list[Summary]:
    """The best attack per group, chosen on the attacker's own validation accuracy (the test split never
    chooses), its test accuracy, and the reference attack's accuracy for the same baseline and budget;
    each with its cell's verdict across seeds against ``tolerance`` (points). A reference run that ended at
    chance (a failed baseline) gives no scratch figure for its seed, and the summary says why."""
    rows = list(rows)
    scratch = {(r.dataset, r.model, r.fraction, r.epochs, r.seed): r for r in rows if r.attack == reference}
    groups: dict[tuple, list[AttackRow]] = defaultdict(list)
    for r in rows:
        if r.attack != reference and r.method is not None:
            groups[(r.dataset, r.model, r.method, r.cell, r.fraction, r.epochs, r.seed)].append(r)
    out = []
    for (dataset, model, method, cell, fraction, epochs, seed), members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        best = max(members, key=lambda r: (r.val_attacked, r.attack))  # ties by name: the test split never chooses
        reference_row = scratch.get((dataset, model, fraction, epochs, seed))
        failed = reference_row.failed if reference_row is not None else None
        out.append(
            Summary(
                dataset=dataset, model=model, method=method, cell=cell or "", fraction=fraction, seed=seed,
                best_attack=best.attack, worst_case_attacked=best.acc_attacked,
                scratch_accuracy=reference_row.acc_attacked if reference_row is not None and not failed else None,
                cell_metrics={k: best.metrics[k] for k in CELL_METRICS if k in best.metrics},
                attacked={r.attack: r.acc_attacked for r in members},
                epochs=epochs, scratch_failed=failed,
                key_recall={r.attack: r.metrics["key_recall"] for r in members if "key_recall" in r.metrics},
            )
        )
    verdicts = cell_verdicts(out, tolerance)
    return [replace(s, verdict=verdicts[cell_key(s)]) for s in out]


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
        epochs=int(p.get("epochs", 0)), failed=result.tags.get("failed_baseline"),
    )


def summary_result(s: Summary) -> JobResult:
    """A summary as a run of its own (kind ``summary``), beside the attack runs it condenses."""
    key = {"dataset": s.dataset, "model": s.model, "method": s.method, "cell": s.cell, "fraction": s.fraction,
           "epochs": s.epochs, "seed": s.seed}
    job_id = "summary-" + stable_hash(key)
    metrics = {**s.cell_metrics, "worst_case_attacked": s.worst_case_attacked}
    if s.scratch_accuracy is not None:
        metrics["scratch_accuracy"] = s.scratch_accuracy
        metrics["stolen_value_points"] = s.stolen_value_points  # type: ignore[assignment]
    metrics.update({f"acc_attacked.{a}": v for a, v in s.attacked.items()})
    tags = {"kind": "summary", "job_id": job_id}
    if s.scratch_failed:
        tags["scratch_failed"] = s.scratch_failed
    if s.verdict is not None:
        for prefix, v in (("verdict", s.verdict.stolen), ("clean_gain", s.verdict.clean_gain)):
            if v is not None:
                metrics.update({f"{prefix}.{k}": x for k, x in asdict(v).items() if k != "decision" and x is not None})
        if s.verdict.stolen is not None:
            tags["verdict"] = s.verdict.stolen.decision
        tags["trusted"] = s.verdict.trust
        if s.verdict.warnings:
            tags["calibration"] = "; ".join(s.verdict.warnings)
    name = f"{s.dataset}/{s.model}/{s.method}[{s.cell}]/summary@{s.fraction:.0%},{s.epochs}ep/seed={s.seed}"
    return JobResult(job_id, "summary", name, params={**key, "best_attack": s.best_attack}, metrics=metrics, tags=tags)


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


def differs(a: Spread | None, b: Spread | None) -> bool:
    """Whether two means differ by more than the larger of their spreads (the report marks the rest)."""
    if a is None or b is None:
        return False
    return abs(a.mean - b.mean) > max(a.std, b.std)


def cell_key(s: Summary) -> tuple:
    """A summary's cell across seeds: (data set, model, method, protection cell, attacker share, compute cap)."""
    return (s.dataset, s.model, s.method, s.cell, s.fraction, s.epochs)


def by_seed_groups(summaries: Iterable[Summary]) -> dict[tuple, list[Summary]]:
    """Summaries grouped across seeds by `cell_key`."""
    groups: dict[tuple, list[Summary]] = defaultdict(list)
    for s in summaries:
        groups[cell_key(s)].append(s)
    return dict(sorted(groups.items(), key=lambda kv: str(kv[0])))


# ------------------------------------------------------------------------------------------ verdicts
@dataclass(frozen=True)
class Verdict(Spread):
    """Per-seed paired differences (points) held against a tolerance: their spread, one-sided Student-t
    bounds on their mean at `CONFIDENCE`, the decision, and the seeds a decision would need at this spread."""

    lower: float | None  # None with a single seed: one value bounds nothing
    upper: float | None
    tolerance: float
    decision: str  # broken | holds | inconclusive
    seeds_needed: int | None  # None: no number of seeds decides (mean at the tolerance, or one seed: no spread yet)

    @property
    def seeds_needed_text(self) -> str:
        if self.seeds_needed is not None:
            return str(self.seeds_needed)
        return "never" if self.n > 1 else "unknown"


def t_quantile(df: int) -> float:
    """The Student-t quantile at `CONFIDENCE` for ``df`` degrees of freedom (scipy comes with scikit-learn;
    imported on use, as it loads slowly)."""
    from scipy.special import stdtrit

    return float(stdtrit(df, CONFIDENCE))


def verdict(values: Sequence[float | None], tolerance: float = DEFAULT_TOLERANCE) -> Verdict | None:
    """``broken`` when the lower bound on the mean is above ``tolerance``, ``holds`` when the upper bound is at
    or below it, ``inconclusive`` otherwise (always with fewer than two values); None without values."""
    s = spread(values)
    if s is None:
        return None
    if s.n < 2:
        return Verdict(s.mean, s.std, s.n, None, None, tolerance, INCONCLUSIVE, None)
    half = t_quantile(s.n - 1) * s.std / math.sqrt(s.n)
    lower, upper = s.mean - half, s.mean + half
    decision = BROKEN if lower > tolerance else HOLDS if upper <= tolerance else INCONCLUSIVE
    return Verdict(s.mean, s.std, s.n, lower, upper, tolerance, decision, seeds_needed(s.mean, s.std, tolerance))


def seeds_needed(mean: float, std: float, tolerance: float) -> int | None:
    """The smallest n (at least 2) with t(n-1) * std / sqrt(n) < |mean - tolerance|, the seeds whose bound
    would clear the tolerance if mean and spread stayed as observed; None when none would (mean at the
    tolerance, with a spread). Without a spread, two seeds decide, as the bounds are the mean itself."""
    if std == 0:
        return 2
    gap = abs(mean - tolerance)
    if gap == 0:
        return None
    z = statistics.NormalDist().inv_cdf(CONFIDENCE)  # t(df) > z: no n below (z * std / gap)^2 can do
    n = max(2, math.floor((z * std / gap) ** 2))
    while t_quantile(n - 1) * std / math.sqrt(n) >= gap:
        n += 1
    return n


@dataclass(frozen=True)
class CellVerdict:
    """A cell's verdict across seeds, and whether the calibration controls vouch for its measurement.

    The controls share the cell's data set, model and attacker share (its baseline, scratch and attack
    budget), which is what they calibrate: where the clean model beats scratch by more than the
    tolerance (``clean_gain`` broken), the random control must come out broken; the reinit control must
    never come out broken. ``trusted`` is None where no control could be checked.
    """

    stolen: Verdict | None  # best attack minus scratch, paired by seed; None without scratch
    clean_gain: Verdict | None  # clean model minus scratch, paired by seed
    trusted: bool | None
    warnings: tuple[str, ...] = ()

    @property
    def trust(self) -> str:
        return trust_label(self.trusted)


def trust_label(trusted: bool | None) -> str:
    """How reports and MLflow tags say whether the controls vouch for a cell."""
    return "unchecked" if trusted is None else "yes" if trusted else "no"


def cell_verdicts(summaries: Iterable[Summary], tolerance: float = DEFAULT_TOLERANCE) -> dict[tuple, CellVerdict]:
    """Every cell's `CellVerdict`, by `cell_key`."""
    groups = by_seed_groups(summaries)
    stolen = {key: verdict([s.stolen_value_points for s in ss], tolerance) for key, ss in groups.items()}
    settings: dict[tuple, list[tuple]] = defaultdict(list)  # (data set, model, share, cap) -> its cells
    for key in groups:
        settings[(key[0], key[1], key[4], key[5])].append(key)
    out = {}
    for keys in settings.values():
        by_seed = {s.seed: s.clean_gain_points for key in keys for s in groups[key] if s.clean_gain_points is not None}
        gain = verdict(list(by_seed.values()), tolerance)
        trusted, warnings = calibration({key: stolen[key] for key in keys}, gain)
        out.update({key: CellVerdict(stolen[key], gain, trusted, warnings) for key in keys})
    return out


def calibration(stolen: Mapping[tuple, Verdict | None], clean_gain: Verdict | None) -> tuple[bool | None, tuple[str, ...]]:
    """(trusted, warnings) for the cells of one data set, model and attacker share, from their controls."""
    checked, warnings = False, []
    for (_, _, method, cell, *_), v in stolen.items():
        if v is None:
            continue
        if method == NEGATIVE_CONTROL and clean_gain is not None and clean_gain.decision == BROKEN:
            checked = True
            if v.decision != BROKEN:
                warnings.append(f"the {method} control (it protects nothing) came out {v.decision} in [{cell}] "
                                f"at {v} points, though the clean model beats scratch by {clean_gain} points")
        if method == POSITIVE_CONTROL:
            checked = True
            if v.decision == BROKEN:
                warnings.append(f"the {method} control (nothing to steal) came out broken in [{cell}] at {v} points "
                                f"(lower bound {v.lower:.1f}): attacks with nothing to steal beat scratch, so scratch is no fair bar here")
    return (not warnings if checked else None), tuple(warnings)


def as_record(values: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-friendly copy (a Spread or Verdict as its fields)."""
    return {k: (asdict(v) if isinstance(v, Spread) else v) for k, v in values.items()}
