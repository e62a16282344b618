"""The report: tables and plots of an experiment, rendered from its MLflow runs (results as data).

Per data set x model x method x protection budget: clean, encrypted and decrypted accuracy. Per attacker
budget on top: every attack's attacked accuracy, the worst case (the attack the attacker's own validation
split would pick), training from scratch, and the stolen value, each as mean ± standard deviation across
seeds; then the stolen value's one-sided 95 % bounds, the verdict against the tolerance (broken, holds or
inconclusive), the seeds a decision would need, and whether the calibration controls vouch for the cell.
On top, the leaderboard (`bench.sweep.leaderboard`): every cell ranked by stolen value with its Pareto plot.
Written as CSV, JSON and PNG, and logged to the sweep's parent run.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.errors import BenchError
from bench.sweep import leaderboard
from bench.sweep.curves import DataEquivalent, Plateau, data_equivalents, plateaus
from bench.sweep.plan import stable_hash
from bench.sweep.results import (
    BROKEN,
    DEFAULT_TOLERANCE,
    HOLDS,
    INCONCLUSIVE,
    NEGATIVE_CONTROL,
    POSITIVE_CONTROL,
    JobResult,
    Spread,
    Summary,
    Verdict,
    as_record,
    attack_row,
    by_seed_groups,
    differs,
    model_label,
    spread,
    summarize,
    trust_label,
    verdict,
)
from bench.sweep.tracking import TOLERANCE_TAG, Tracker
from common.errors import first_line
from common.files import write_atomic

PCT = 100.0


@dataclass(frozen=True)
class ProtectionRow:
    dataset: str
    model: str
    method: str
    cell: str
    max_params: int
    eps: float
    clean: Spread | None
    encrypted: Spread | None
    decrypted: Spread | None
    drop_points: Spread | None
    drop_relative: Spread | None
    changed: Spread | None
    changed_share: Spread | None  # percent of all parameters
    encrypt_seconds: Spread | None


@dataclass(frozen=True)
class AttackRowAgg:
    dataset: str
    model: str
    method: str
    cell: str
    fraction: float
    epochs: int  # the attacker's compute cap, epoch-equivalents
    attacked: dict[str, Spread | None]
    worst_case: Spread | None
    best_attacks: str
    scratch: Spread | None
    stolen: Verdict | None  # best attack minus scratch, per seed, in points, with its bounds and decision
    clean_gain: Verdict | None  # clean model minus scratch, per seed, in points
    trusted: bool | None  # whether the calibration controls vouch for the cell (None: no control checked)
    warnings: tuple[str, ...]  # why they do not
    scratch_failed: tuple[str, ...] = ()  # "seed N: why" for each seed whose scratch run ended at chance
    key_recall: dict[str, Spread | None] = field(default_factory=dict)  # % of the key's positions an attack found
    # each attack's test accuracy (%) per seed, and scratch's (`SCRATCH`; seeds whose scratch failed left out)
    by_seed: dict[str, dict[int, float]] = field(default_factory=dict)


#: ``by_seed``'s name for the scratch baseline.
SCRATCH = "scratch"


def head_to_head(row: AttackRowAgg, challenger: str, reference: str, tolerance: float = 0.0) -> Verdict | None:
    """``challenger`` minus ``reference`` (an attack, or `SCRATCH`) per seed of ``row`` (points, the seeds both
    ran), with one-sided 95 % bounds against ``tolerance``: `BROKEN` says the challenger recovers more than
    that with that confidence, `HOLDS` that it does not; None where they share no seed. Attacks are compared
    at the cell's one compute cap; against `SCRATCH` and the cell's tolerance it is the attack's own verdict."""
    a, b = row.by_seed.get(challenger, {}), row.by_seed.get(reference, {})
    return verdict([a[s] - b[s] for s in sorted(a.keys() & b.keys())], tolerance=tolerance)


def _pcts(values: list[float]) -> Spread | None:
    return spread([PCT * v for v in values])


def protection_rows(encrypts: list[JobResult]) -> list[ProtectionRow]:
    groups: dict[tuple, list[JobResult]] = defaultdict(list)
    for r in encrypts:
        p = r.params
        groups[(p["dataset"], model_label(p), p["method"], p["cell"])].append(r)
    rows = []
    for (dataset, model, method, cell), rs in sorted(groups.items(), key=lambda kv: _order(kv[0])):
        m = lambda k: [r.metrics[k] for r in rs if k in r.metrics]  # noqa: E731
        first = rs[0].params
        rows.append(ProtectionRow(
            dataset, model, method, cell, int(first["budget.max_params"]), float(first["budget.eps"]),
            _pcts(m("acc_clean")), _pcts(m("acc_encrypted")), _pcts(m("acc_decrypted")), spread(m("drop_points")),
            spread(m("drop_relative")), spread(m("num_encrypted")), _pcts(m("encrypted_fraction")), spread(m("encrypt_seconds")),
        ))
    return rows


def _order(key: tuple) -> tuple:
    """Sort cells numerically (n=8 before n=64)."""
    return tuple((0, float(x)) if _is_number(x) else (1, _cell_key(str(x))) for x in key)


def _cell_key(text: str) -> str:
    if text.startswith("n="):
        n, _, rest = text[2:].partition(",")
        return f"n={int(n):09d},{rest}" if n.isdigit() else text
    return text


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def attack_rows(summaries: list[Summary]) -> list[AttackRowAgg]:
    rows = []
    for (dataset, model, method, cell, fraction, epochs), ss in sorted(by_seed_groups(summaries).items(),
                                                                       key=lambda kv: _order(kv[0])):
        names = sorted({a for s in ss for a in s.attacked})
        judged = ss[0].verdict  # the cell's, the same in each seed's summary
        rows.append(AttackRowAgg(
            dataset, model, method, cell, fraction, epochs,
            attacked={a: _pcts([s.attacked[a] for s in ss if a in s.attacked]) for a in names},
            worst_case=_pcts([s.worst_case_attacked for s in ss]),
            best_attacks=",".join(sorted({s.best_attack for s in ss})),
            scratch=_pcts([s.scratch_accuracy for s in ss if s.scratch_accuracy is not None]),
            stolen=judged.stolen, clean_gain=judged.clean_gain, trusted=judged.trusted, warnings=judged.warnings,
            scratch_failed=tuple(f"seed {s.seed}: {s.scratch_failed}" for s in sorted(ss, key=lambda s: s.seed)
                                 if s.scratch_failed),
            key_recall={a: _pcts([s.key_recall[a] for s in ss if a in s.key_recall])
                        for a in sorted({a for s in ss for a in s.key_recall})},
            by_seed={**{a: {s.seed: PCT * s.attacked[a] for s in ss if a in s.attacked} for a in names},
                     SCRATCH: {s.seed: PCT * s.scratch_accuracy for s in ss if s.scratch_accuracy is not None}},
        ))
    return rows


@dataclass
class Report:
    experiment: str
    protection: list[ProtectionRow]
    attacks: list[AttackRowAgg]
    tolerance: float
    plateaus: list[Plateau] = field(default_factory=list)
    data_equivalents: list[DataEquivalent] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (job name, first error line): missing above

    @property
    def attack_names(self) -> list[str]:
        return sorted({a for r in self.attacks for a in r.attacked})

    @property
    def leaderboard(self) -> list[leaderboard.Entry]:
        return leaderboard.build(self.protection, self.attacks)


def build_report(tracker: Tracker, experiment: str, job_ids: set[str] | None = None,
                 tolerance: float = DEFAULT_TOLERANCE) -> Report:
    """The report of ``job_ids`` (a sweep's plan; None: every finished job of the experiment), its verdicts
    held against ``tolerance`` (points of stolen value)."""
    done = tracker.finished()
    failures = tracker.failures(done)
    finished = [r for job_id, r in done.items() if job_ids is None or job_id in job_ids]
    encrypts = [r for r in finished if r.kind == "encrypt"]
    attacks = [r for r in finished if r.kind == "attack"]
    if not encrypts and not attacks and not failures:
        raise BenchError(f"experiment {experiment!r} has no finished encrypt or attack runs in {tracker.uri}")
    rows = attack_rows(summarize((attack_row(r) for r in attacks), tolerance=tolerance))
    failed = sorted((r.name, first_line(r.error or "no error recorded")) for job_id, r in failures.items()
                    if job_ids is None or job_id in job_ids)
    return Report(experiment, protection_rows(encrypts), rows, tolerance, plateaus(rows), data_equivalents(rows), failed)


# ---------------------------------------------------------------------------------------- rendering
def cell(x: Spread | None) -> str:
    """A table cell: mean ± std, or - where there is no figure."""
    return "-" if x is None else str(x)


def bounds(v: Verdict | None) -> str:
    """A verdict's one-sided bounds as [lower, upper], or - where one seed bounds nothing."""
    return "-" if v is None or v.lower is None else f"[{v.lower:.1f}, {v.upper:.1f}]"


DECISION_STYLE = {BROKEN: "bold red", HOLDS: "green"}


def calibration_lines(report: Report) -> list[str]:
    """What the controls say: how often each came out as it must, and each data set, model and attacker
    share whose measurement they do not vouch for (once, though each of its rows carries the warning)."""
    rows = [r for r in report.attacks if r.stolen is not None]
    negative = [r for r in rows if r.method == NEGATIVE_CONTROL and r.clean_gain and r.clean_gain.decision == BROKEN]
    positive = [r for r in rows if r.method == POSITIVE_CONTROL]
    if not negative and not positive:
        return [f"calibration: unchecked (no {NEGATIVE_CONTROL} control where the clean model beats scratch by more "
                f"than the tolerance, no {POSITIVE_CONTROL} control)"]
    lines = [f"calibration: the {NEGATIVE_CONTROL} control came out broken in "
             f"{sum(r.stolen.decision == BROKEN for r in negative)} of {len(negative)} cell(s) where the clean model "
             f"beats scratch by more than the tolerance; the {POSITIVE_CONTROL} control came out broken in "
             f"{sum(r.stolen.decision == BROKEN for r in positive)} of {len(positive)} cell(s)"]
    seen = set()
    for r in report.attacks:
        setting = (r.dataset, r.model, r.fraction, r.epochs)
        if r.warnings and setting not in seen:
            seen.add(setting)
            lines += [f"NOT TRUSTWORTHY: {r.dataset} / {r.model} at {budget_label(r)}: {w}" for w in r.warnings]
    return lines


def failed_job_lines(report: Report) -> list[str]:
    """Each job that failed, with its first error line: its cell is missing from the tables, and says why."""
    if not report.failed:
        return []
    return [f"{len(report.failed)} job(s) FAILED; what they would have measured is missing from the tables above:",
            *(f"FAILED {name}: {error}" for name, error in report.failed)]


def budget_label(r: AttackRowAgg) -> str:
    """The attacker's budget in words: its data share and compute cap."""
    return f"{PCT * r.fraction:g} % of the data, {r.epochs} epochs of compute"


def failed_baseline_lines(report: Report) -> list[str]:
    """Each attacker budget whose scratch run ended at chance in some seeds: those seeds have no stolen value
    (they are left out of the verdict, not averaged in), and the report says why."""
    seen: dict[tuple, tuple[str, ...]] = {}
    for r in report.attacks:
        if r.scratch_failed:
            seen.setdefault((r.dataset, r.model, r.fraction, r.epochs, budget_label(r)), r.scratch_failed)
    return [f"FAILED BASELINE: scratch on {d} / {m} at {label}: {'; '.join(why)} (left out of the verdicts)"
            for (d, m, _, _, label), why in seen.items()]


LEADERBOARD_HEADER = ("rank", "data set", "model", "attacker %", "cap (epochs)", "method", "budget", "control",
                      "% of params", "clean", "encrypted", "worst case (best attack)", "scratch", "stolen (points)",
                      "95 % bounds", "verdict", "trusted", "encrypt s", "Pareto front")


def leaderboard_cells(e: leaderboard.Entry) -> list[str]:
    """An entry as the text of `LEADERBOARD_HEADER`'s columns (the report's table and BENCHMARKS.md's)."""
    return [str(e.rank), e.dataset, e.model, f"{PCT * e.fraction:g}", str(e.epochs), e.method, e.cell,
            e.control or "", "-" if e.changed_pct is None else f"{e.changed_pct:.3g}", cell(e.clean), cell(e.encrypted),
            f"{cell(e.worst_case)} ({e.best_attacks})", cell(e.scratch), cell(e.stolen), bounds(e.stolen), e.decision,
            trust_label(e.trusted), cell(e.encrypt_seconds), "★" if e.pareto else ""]


def print_leaderboard(report: Report, console: Console) -> None:
    t = Table(title=f"{report.experiment}: leaderboard (ranked by stolen value, lowest = best protection, per data "
                    "set, model and attacker budget; controls: random protects nothing, reinit leaves nothing to steal)")
    left = {"data set", "model", "method", "budget", "control", "worst case (best attack)", "verdict"}
    for c in LEADERBOARD_HEADER:
        t.add_column(c, justify="left" if c in left else "right")
    for e in report.leaderboard:
        cells = leaderboard_cells(e)
        cells[LEADERBOARD_HEADER.index("verdict")] = f"[{DECISION_STYLE.get(e.decision, 'yellow')}]{e.decision}[/]"
        t.add_row(*cells, style="dim" if e.control else None)
    console.print(t)


def print_report(report: Report, console: Console) -> None:
    t = Table(title=f"{report.experiment}: protection (accuracy in %, mean ± std over seeds)")
    for c in ("data set", "model", "method", "budget", "clean", "encrypted", "decrypted", "drop (points)",
              "drop (% of clean)", "scalars changed", "% of params", "encrypt s"):
        t.add_column(c, justify="left" if c in ("data set", "model", "method", "budget") else "right")
    for r in report.protection:
        share = f"{r.changed_share.mean:.6f}" if r.changed_share else "-"
        t.add_row(r.dataset, r.model, r.method, r.cell, cell(r.clean), cell(r.encrypted), cell(r.decrypted),
                  cell(r.drop_points), cell(r.drop_relative), cell(r.changed), share, cell(r.encrypt_seconds))
    console.print(t)
    names = report.attack_names
    t = Table(title=f"{report.experiment}: attacks (test accuracy in %; ≈ = within the spread of scratch)")
    for c in ("data set", "model", "method", "budget", "attacker %", "cap (epochs)", *names, "worst case", "scratch",
              "key recall %"):
        t.add_column(c, justify="left" if c in ("data set", "model", "method", "budget") else "right")
    for r in report.attacks:
        cells = []
        for a in names:
            v = r.attacked.get(a)
            cells.append("-" if v is None else (f"≈{v}" if r.scratch and not differs(v, r.scratch) else str(v)))
        t.add_row(r.dataset, r.model, r.method, r.cell, f"{PCT * r.fraction:g}", str(r.epochs), *cells,
                  f"{cell(r.worst_case)} ({r.best_attacks})", cell(r.scratch), recall_text(r))
    console.print(t)
    t = Table(title=f"{report.experiment}: verdicts (stolen value = best attack minus scratch per seed, in points; "
                    f"one-sided 95 % Student-t bounds on its mean: broken when the lower bound exceeds "
                    f"{report.tolerance:g} points, holds when the upper bound does not)")
    for c in ("data set", "model", "method", "budget", "attacker %", "cap (epochs)", "best attack", "worst case", "scratch",
              "stolen (points)", "95 % bounds", "verdict", "seeds needed", "trusted"):
        t.add_column(c, justify="left" if c in ("data set", "model", "method", "budget", "best attack", "verdict") else "right")
    for r in report.attacks:
        decision = "-" if r.stolen is None else r.stolen.decision
        t.add_row(r.dataset, r.model, r.method, r.cell, f"{PCT * r.fraction:g}", str(r.epochs), r.best_attacks,
                  cell(r.worst_case),
                  cell(r.scratch), cell(r.stolen), bounds(r.stolen), f"[{DECISION_STYLE.get(decision, 'yellow')}]{decision}[/]",
                  "-" if r.stolen is None else r.stolen.seeds_needed_text,
                  f"[bold red]{trust_label(r.trusted)}[/]" if r.trusted is False else trust_label(r.trusted))
    console.print(t)
    print_curves(report, console)
    print_leaderboard(report, console)
    for line in calibration_lines(report) + failed_baseline_lines(report) + failed_job_lines(report):
        console.print(line, style="bold red" if line.startswith(("NOT", "FAILED")) else None, markup=False)


def recall_text(r: AttackRowAgg) -> str:
    """The mean share of the key's positions each position-tracking attack found, ``key_inversion 61``."""
    return ", ".join(f"{a} {v.mean:.0f}" for a, v in r.key_recall.items() if v is not None) or "-"


def print_curves(report: Report, console: Console) -> None:
    """The plateau of each cell swept at several compute caps; the data-equivalent value where several
    shares were swept (with one share it only says whether scratch matches the stolen weights there)."""
    if report.plateaus:
        t = Table(title=f"{report.experiment}: compute plateau (the smallest cap from which doubling moves the best "
                        "attack and scratch by less than their standard error over seeds)")
        for c in ("data set", "model", "method", "budget", "attacker %", "caps swept", "plateau cap", "stolen there"):
            t.add_column(c, justify="left" if c in ("data set", "model", "method", "budget") else "right")
        for p in report.plateaus:
            t.add_row(p.dataset, p.model, p.method, p.cell, f"{PCT * p.fraction:g}", ",".join(map(str, p.caps)),
                      "not reached" if p.epochs is None else str(p.epochs), cell(p.stolen))
        console.print(t)
    if len({d.fraction for d in report.data_equivalents}) > 1:
        t = Table(title=f"{report.experiment}: data-equivalent value (the share scratch needs to match the best "
                        "attack, over the attacker's share; interpolated between the shares swept)")
        for c in ("data set", "model", "method", "budget", "attacker %", "cap (epochs)", "data-equivalent"):
            t.add_column(c, justify="left" if c in ("data set", "model", "method", "budget") else "right")
        for d in report.data_equivalents:
            t.add_row(d.dataset, d.model, d.method, d.cell, f"{PCT * d.fraction:g}", str(d.epochs), str(d))
        console.print(t)


def report_records(report: Report) -> dict[str, list[dict[str, Any]]]:
    """The report as JSON-friendly rows (each Spread as {mean, std, n}, a Verdict with its bounds too)."""
    return {
        "protection": [as_record(vars(r)) for r in report.protection],
        "attacks": [{**as_record(vars(r)), "attacked": as_record(r.attacked), "key_recall": as_record(r.key_recall),
                     "warnings": list(r.warnings),
                     "scratch_failed": list(r.scratch_failed)} for r in report.attacks],
        "plateaus": [{**as_record(vars(p)), "caps": list(p.caps)} for p in report.plateaus],
        "data_equivalents": [{**vars(d), "text": str(d)} for d in report.data_equivalents],
        "failed_jobs": [{"job": name, "error": error} for name, error in report.failed],
        "leaderboard": leaderboard.records(report.leaderboard),
    }


def _flat(rec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in rec.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, list):
            out[f"{prefix}{k}"] = "; ".join(map(str, v))
        else:
            out[f"{prefix}{k}"] = v
    return out


def write_tables(report: Report, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    records = report_records(report)
    paths = [out / "report.json", out / "leaderboard.json"]
    paths[0].write_text(json.dumps(records, indent=1))
    paths[1].write_text(json.dumps(records["leaderboard"], indent=1))
    for name, rows in records.items():
        flat = [_flat(r) for r in rows]
        if not flat:
            continue
        path = out / f"{name}.csv"
        fields = sorted({k for r in flat for k in r}, key=lambda k: list(flat[0]).index(k) if k in flat[0] else 999)
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(flat)
        paths.append(path)
    return paths


@cache
def _pyplot() -> Any:
    """matplotlib's pyplot on its file-only backend, imported at the first plot: a report whose files are
    unchanged draws none, and the import costs a rerun a quarter of a second."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(report: Report, out: Path) -> list[Path]:
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    by_model: dict[tuple, list[ProtectionRow]] = defaultdict(list)
    for r in report.protection:
        by_model[(r.dataset, r.model)].append(r)
    for (dataset, model), rows in by_model.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for (method, eps) in sorted({(r.method, r.eps) for r in rows}):
            pts = sorted((r.max_params, r.encrypted) for r in rows if r.method == method and r.eps == eps and r.encrypted)
            ax.errorbar([p[0] for p in pts], [p[1].mean for p in pts], yerr=[p[1].std for p in pts], marker="o",
                        capsize=3, label=f"{method}, eps={eps:g}")
        clean = [r.clean.mean for r in rows if r.clean]
        if clean:
            ax.axhline(sum(clean) / len(clean), color="grey", linestyle=":", label="clean")
        ax.set(xscale="log", xlabel="max scalars changed (budget)", ylabel="test accuracy (%)",
               title=f"{dataset} / {model}: encrypted accuracy vs budget", ylim=(0, 100))
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / f"accuracy_vs_budget_{dataset}_{model}.png"))
    names = report.attack_names
    for (dataset, model) in sorted({(r.dataset, r.model) for r in report.attacks}):
        rows = [r for r in report.attacks if r.dataset == dataset and r.model == model]
        fraction, epochs = max(r.fraction for r in rows), max(r.epochs for r in rows)
        rows = [r for r in rows if r.fraction == fraction and r.epochs == epochs]
        labels = [f"{r.method}[{r.cell}]" for r in rows]
        grid = [[(r.attacked.get(a).mean if r.attacked.get(a) else float("nan")) for a in names] for r in rows]
        fig, ax = plt.subplots(figsize=(1.2 * len(names) + 3, 0.5 * len(rows) + 2))
        im = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, "-" if v != v else f"{v:.0f}", ha="center", va="center", fontsize=8,
                        color="black" if v == v and v > 60 else "white")
        fig.colorbar(im, label="attacked test accuracy (%)")
        ax.set_title(f"{dataset} / {model}: accuracy recovered, attacker holds {PCT * fraction:g} %, cap {epochs} epochs")
        paths.append(_save(fig, out / f"attacks_heatmap_{dataset}_{model}.png"))
    for dataset in sorted({r.dataset for r in report.attacks}):
        paths.append(_stolen_value_plot(report, dataset, out))
        if len({r.epochs for r in report.attacks if r.dataset == dataset}) > 1:
            paths.append(_compute_plot(report, dataset, out))
    return paths + pareto_plots(report, out)


def pareto_plots(report: Report, out: Path) -> list[Path]:
    """``pareto_<data set>.png`` of each data set on the leaderboard."""
    out.mkdir(parents=True, exist_ok=True)
    entries = report.leaderboard
    return [_pareto_plot([e for e in entries if e.dataset == dataset], report.tolerance, out)
            for dataset in sorted({e.dataset for e in entries})]


VERDICT_MARKER = {BROKEN: "X", HOLDS: "o", INCONCLUSIVE: "^"}


def _pareto_plot(entries: list[leaderboard.Entry], tolerance: float, out: Path) -> Path:
    """One panel per board of a data set: stolen value (its one-sided bounds as the bar) against the share of
    parameters changed, one mark per method and budget, its shape the verdict, controls hollow; the Pareto
    front of the non-control methods drawn as a step line."""
    plt = _pyplot()
    boards = sorted({e.board for e in entries})
    fig, axes = plt.subplots(1, len(boards), figsize=(6.5 * len(boards), 4.5), squeeze=False)
    colours = {m: f"C{i}" for i, m in enumerate(sorted({e.method for e in entries}))}
    for ax, board in zip(axes[0], boards, strict=True):
        here = [e for e in entries if e.board == board and e.stolen is not None and e.changed_pct]
        for e in here:
            v = e.stolen
            below = v.mean - v.lower if v.lower is not None else 0.0
            above = v.upper - v.mean if v.upper is not None else 0.0
            ax.errorbar([e.changed_pct], [v.mean], yerr=[[below], [above]], color=colours[e.method], capsize=3,
                        marker=VERDICT_MARKER.get(v.decision, "s"), markersize=8,
                        markerfacecolor="none" if e.control else colours[e.method], linestyle="none")
            ax.annotate(f"{e.method}[{e.cell}]", (e.changed_pct, v.mean), textcoords="offset points", xytext=(5, 4),
                        fontsize=6)
        front = sorted((e for e in here if e.pareto), key=lambda e: e.changed_pct)
        if front:
            ax.step([e.changed_pct for e in front], [e.stolen.mean for e in front], where="post", color="black",
                    linestyle="--", linewidth=1)
        ax.axhline(tolerance, color="grey", linestyle=":")
        dataset, model, fraction, epochs = board
        ax.set(xscale="log", xlabel="parameters changed (% of the model, log scale)",
               ylabel="stolen value (points; bar: one-sided 95 % bounds)",
               title=f"{dataset} / {model}: attacker holds {PCT * fraction:g} %, cap {epochs} epochs")
    handles = [plt.Line2D([], [], color=c, marker="o", linestyle="none", label=m) for m, c in colours.items()]
    handles += [plt.Line2D([], [], color="black", marker=mk, markerfacecolor="none", linestyle="none", label=d)
                for d, mk in VERDICT_MARKER.items()]
    handles += [plt.Line2D([], [], color="black", linestyle="--", label="Pareto front (controls excluded)"),
                plt.Line2D([], [], color="grey", linestyle=":", label=f"tolerance ({tolerance:g} points)")]
    axes[0][-1].legend(handles=handles, fontsize=7, title="method (hollow: control) / verdict", title_fontsize=7)
    return _save(fig, out / f"pareto_{entries[0].dataset}.png")


def _verdict_curve(ax: Any, pts: list[tuple[float, Verdict]], label: str) -> None:
    """Stolen value against ``x`` with its one-sided bounds as the bar and each point's verdict beside it."""
    below = [v.mean - v.lower if v.lower is not None else 0.0 for _, v in pts]
    above = [v.upper - v.mean if v.upper is not None else 0.0 for _, v in pts]
    ax.errorbar([x for x, _ in pts], [v.mean for _, v in pts], yerr=[below, above], marker="o", capsize=3, label=label)
    for x, v in pts:
        ax.annotate(v.decision, (x, v.mean), textcoords="offset points", xytext=(4, 4), fontsize=6)


def _compute_plot(report: Report, dataset: str, out: Path) -> Path:
    """Stolen value against the compute cap, one line per cell at each attacker share, plateaus marked."""
    plt = _pyplot()
    rows = [r for r in report.attacks if r.dataset == dataset]
    fig, ax = plt.subplots(figsize=(7, 4))
    for label in sorted({(r.model, r.method, r.cell, r.fraction) for r in rows}):
        pts = sorted((r.epochs, r.stolen) for r in rows if (r.model, r.method, r.cell, r.fraction) == label and r.stolen)
        if pts:
            _verdict_curve(ax, pts, f"{label[1]}[{label[2]}] ({label[0]}) at {PCT * label[3]:g} %")
    for p in report.plateaus:
        if p.dataset == dataset and p.epochs is not None and p.stolen is not None:
            ax.plot([p.epochs], [p.stolen.mean], marker="*", markersize=12, color="black", linestyle="none")
    ax.axhline(report.tolerance, color="grey", linestyle=":", label=f"tolerance ({report.tolerance:g} points)")
    ax.set(xscale="symlog", xlabel="attacker's compute cap (epoch-equivalents over its own data)",
           ylabel="stolen value (points)", title=f"{dataset}: stolen value against compute (★ plateau)")
    ax.legend(fontsize=7)
    return _save(fig, out / f"stolen_vs_compute_{dataset}.png")


def _stolen_value_plot(report: Report, dataset: str, out: Path) -> Path:
    """Left: the best attack's and scratch's accuracy against the attacker's share. Right: the stolen value
    with its one-sided 95 % bounds (the bar spans lower to upper), the tolerance, and each point's verdict."""
    plt = _pyplot()
    cap = max(r.epochs for r in report.attacks if r.dataset == dataset)
    rows = [r for r in report.attacks if r.dataset == dataset and r.epochs == cap]
    fig, (ax, sv) = plt.subplots(1, 2, figsize=(12, 4))
    for label in sorted({(r.model, r.method, r.cell) for r in rows}):
        pts = sorted((r.fraction, r.worst_case) for r in rows if (r.model, r.method, r.cell) == label and r.worst_case)
        ax.errorbar([PCT * f for f, _ in pts], [s.mean for _, s in pts], yerr=[s.std for _, s in pts], marker="o",
                    capsize=3, label=f"best attack: {label[1]}[{label[2]}] ({label[0]})")
        pts = sorted((PCT * r.fraction, r.stolen) for r in rows if (r.model, r.method, r.cell) == label and r.stolen)
        _verdict_curve(sv, pts, f"{label[1]}[{label[2]}] ({label[0]})")
    for model in sorted({r.model for r in rows}):
        pts = sorted({(r.fraction, r.scratch.mean, r.scratch.std) for r in rows if r.model == model and r.scratch})
        if pts:
            ax.errorbar([PCT * f for f, _, _ in pts], [m for _, m, _ in pts], yerr=[s for _, _, s in pts], color="black",
                        linestyle="--", marker="s", capsize=3, label=f"scratch ({model})")
    ax.set(xlabel="attacker's share of the training set (%)", ylabel="test accuracy (%)", ylim=(0, 100),
           title=f"{dataset}: stolen weights vs training from scratch (cap {cap} epochs)")
    ax.legend(fontsize=7)
    sv.axhline(report.tolerance, color="grey", linestyle=":", label=f"tolerance ({report.tolerance:g} points)")
    sv.set(xlabel="attacker's share of the training set (%)", ylabel="stolen value (points)",
           title=f"{dataset}: stolen value, one-sided 95 % bounds, verdict")
    sv.legend(fontsize=7)
    return _save(fig, out / f"stolen_value_{dataset}.png")


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: Beside a report's files in its folder: the `fingerprint` they were rendered from, and their names.
FINGERPRINT = ".fingerprint.json"


def fingerprint(report: Report, sweep_run: str | None) -> str:
    """What a report's files are made from, as one hash: its figures (every record, the tolerance, the
    experiment), the sweep run they are logged to, and the code that draws them (this module's source and
    matplotlib's version; the code that computes the figures shows in the records)."""
    return stable_hash({"records": report_records(report), "tolerance": report.tolerance,
                        "experiment": report.experiment, "sweep_run": sweep_run,
                        "code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
                        "matplotlib": metadata.version("matplotlib")}, length=64)


def unchanged(out: Path, mark: str) -> list[Path] | None:
    """The report's files in ``out`` when they were rendered from the fingerprint ``mark`` and are all still
    there; None when they must be rendered."""
    try:
        kept = json.loads((out / FINGERPRINT).read_text())
        files = [out / name for name in kept["files"]] if kept["fingerprint"] == mark else []
    except (OSError, ValueError, KeyError, TypeError):  # never rendered here, or a file that is not ours
        return None
    return files if files and all(f.is_file() for f in files) else None


def make_report(tracker: Tracker, experiment: str, out: Path, console: Console, sweep_run: str | None = None,
                tolerance: float | None = None) -> Report:
    """Print the tables of one sweep (default: the experiment's newest), its verdicts held against
    ``tolerance`` (points; default: the one the sweep ran with, else `DEFAULT_TOLERANCE`), write CSV/JSON/PNG
    under ``out``, and log them to that sweep's run. Files rendered before from the same `fingerprint` are
    left as they are (a rerun with nothing new draws nothing)."""
    sweep_run = sweep_run or tracker.latest_sweep()
    if tolerance is None:
        recorded = tracker.sweep_tag(sweep_run, TOLERANCE_TAG) if sweep_run else None
        tolerance = float(recorded) if recorded is not None else DEFAULT_TOLERANCE
    report = build_report(tracker, experiment, tracker.sweep_jobs(sweep_run) if sweep_run else None, tolerance)
    print_report(report, console)
    mark = fingerprint(report, sweep_run)
    files = unchanged(out, mark)
    if files is not None:
        console.print(f"report unchanged: {out}/ ({len(files)} files, rendered before from the same results)")
        return report
    (out / FINGERPRINT).unlink(missing_ok=True)  # files half rewritten are never taken for the old ones
    files = write_tables(report, out) + write_plots(report, out)
    if sweep_run:
        for path in files:
            tracker.log_artifact(sweep_run, path, "report")
        for name, rows in report_records(report).items():  # as MLflow tables too: the UI shows them as such
            tracker.log_table(sweep_run, [_flat(r) for r in rows], f"tables/{name}.json")
    write_atomic(out / FINGERPRINT, json.dumps({"fingerprint": mark, "files": [p.name for p in files]}).encode())
    console.print(f"report written to {out}/ ({len(files)} files)" + (", logged to the sweep's run" if sweep_run else ""))
    return report
