"""The paper benchmark: AdvParams on the real data sets against every attack, as a markdown table.

    python -m benchmarks.paper [--config configs/paper.yaml] [--write BENCHMARKS.md]

Runs the config's sweep (a rerun resumes: finished jobs are skipped), reads the results back from MLflow,
and prints per data set the protection (clean, encrypted, drop in points and relative to clean, scalars
changed, encryption time, decrypted accuracy) beside the drop the paper's abstract reports, then per
attacker budget every attack's tuned accuracy, training from scratch, the worst case and the stolen value,
each as mean ± standard deviation over the seeds, and the leaderboard (every cell ranked by stolen value).
With --write, the printed section replaces the one in BENCHMARKS.md and the leaderboard's Pareto plots are
written to benchmarks/figures/<config>/ beside it. Every figure is what this code printed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from bench.errors import BenchError
from bench.signals import raising_on
from bench.sweep.config import SweepConfig, load_config
from bench.sweep.driver import print_outcome, run_sweep
from bench.sweep.plan import plan_for
from bench.sweep.report import (
    LEADERBOARD_HEADER,
    SCRATCH,
    ProtectionRow,
    Report,
    bounds,
    budget_label,
    build_report,
    calibration_lines,
    cell,
    failed_baseline_lines,
    failed_job_lines,
    head_to_head,
    leaderboard_cells,
    pareto_plots,
    recall_text,
)
from bench.sweep.results import BROKEN, HOLDS, trust_label
from bench.sweep.tracking import Tracker
from benchmarks.benchfile import Machine, update_section

#: The abstract's accuracy drops (it does not say whether in points or relative to clean accuracy).
PAPER_DROP = {"fashion_mnist": 80.65, "cifar10": 81.16, "gtsrb": 87.91}
PAPER_MIN_SHARE = 0.000205  # percent of the parameters, "as few as"


def _md(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def verdict(row: ProtectionRow) -> str:
    """Whether the mean drop reaches the paper's, in points or relative to clean accuracy, and by how much not."""
    paper = PAPER_DROP.get(row.dataset)
    if paper is None or row.drop_points is None or row.drop_relative is None:
        return "no figure in the paper"
    points, relative = row.drop_points.mean, row.drop_relative.mean
    if points >= paper:
        return f"reaches it in points ({points:.1f} >= {paper})"
    if relative >= paper:
        return f"reaches it relative to clean ({relative:.1f} >= {paper}); {paper - points:.1f} points short in points"
    return f"short of it: {paper - points:.1f} points in points, {paper - relative:.1f} relative"


def protection_section(report: Report) -> list[str]:
    rows = []
    for r in report.protection:
        share = f"{r.changed_share.mean:.6f}" if r.changed_share else "-"
        paper = f"{PAPER_DROP[r.dataset]}" if r.dataset in PAPER_DROP and r.method == "advparams" else "-"
        rows.append([r.dataset, r.model, r.method, r.cell, cell(r.clean), cell(r.encrypted), cell(r.drop_points),
                     cell(r.drop_relative), paper, cell(r.changed), share, cell(r.encrypt_seconds), cell(r.decrypted)])
    out = _md(["data set", "model", "method", "budget", "clean %", "encrypted %", "drop (points)", "drop (% of clean)",
               "paper's drop", "scalars changed", "% of params", "encrypt s", "decrypted %"], rows)
    out.append("")
    out.append(f"The paper's abstract: drops of {', '.join(f'{v} % ({k})' for k, v in PAPER_DROP.items())}, with as few "
               f"as {PAPER_MIN_SHARE} % of the parameters changed.")
    out.append("")
    for r in report.protection:
        if r.method == "advparams":
            out.append(f"- {r.dataset} / {r.model} / {r.cell}: {verdict(r)}.")
    return out


def attack_section(report: Report) -> list[str]:
    names = report.attack_names
    rows = []
    for r in report.attacks:
        decision = "-" if r.stolen is None else r.stolen.decision
        rows.append([r.dataset, r.model, f"{r.method}[{r.cell}]", f"{100 * r.fraction:g}", str(r.epochs),
                     *[cell(r.attacked.get(a)) for a in names], f"{cell(r.worst_case)} ({r.best_attacks})",
                     cell(r.scratch), cell(r.stolen), bounds(r.stolen), f"**{decision}**" if decision == "broken" else decision,
                     "-" if r.stolen is None else r.stolen.seeds_needed_text, trust_label(r.trusted), recall_text(r)])
    out = _md(["data set", "model", "protection", "attacker %", "cap (epochs)", *names, "worst case (best attack)",
               "scratch", "stolen (points)", "95 % bounds", "verdict", "seeds needed", "trusted", "key recall %"], rows)
    out.append("")
    out.extend(f"- {line}" for line in calibration_lines(report) + failed_baseline_lines(report)
               + failed_job_lines(report))
    for r in report.attacks:
        if r.stolen is None:
            continue
        where = f"{r.dataset} / {r.method}[{r.cell}] at {budget_label(r)}: stolen value {cell(r.stolen)} points, " \
                f"one-sided 95 % bounds {bounds(r.stolen)} against a tolerance of {r.stolen.tolerance:g} points"
        out.append(f"- {where}: **{r.stolen.decision}**"
                   + ("" if r.stolen.decision != "inconclusive" else f" ({r.stolen.seeds_needed_text} seeds would decide)")
                   + ("" if r.trusted is not False else "; the controls do not vouch for this cell") + ".")
    return out


#: Paired comparisons the benchmark prints, each (title, challenger, reference): the knowing attacker against
#: the generic one (issue 11: key inversion must recover at least as much), and the distribution-aware attack
#: alone against scratch, held to the cell's tolerance (issue 12: does statistical_reset break NNSplitter).
HEAD_TO_HEADS = (
    ("The knowing attacker against fine-tuning", "key_inversion", "finetune"),
    ("The statistical reset alone", "statistical_reset", SCRATCH),
)
HEAD_TO_HEAD_READING = {BROKEN: "recovers more", HOLDS: "does not recover more"}


def head_to_head_section(report: Report, challenger: str, reference: str) -> list[str]:
    """Per protected cell, ``challenger`` minus ``reference`` per seed at the same cap: against 0 between two
    attacks, against the report's tolerance (the cell's verdict words) against `SCRATCH`."""
    tolerance = report.tolerance if reference == SCRATCH else 0.0
    rows = []
    for r in report.attacks:
        d = head_to_head(r, challenger, reference, tolerance)
        if d is None or r.method == "reinit":
            continue
        recall = r.key_recall.get(challenger)
        rows.append([r.dataset, r.model, f"{r.method}[{r.cell}]", f"{100 * r.fraction:g}", str(r.epochs),
                     cell(r.attacked.get(challenger)),
                     cell(r.scratch if reference == SCRATCH else r.attacked.get(reference)), cell(d), bounds(d),
                     d.decision if reference == SCRATCH else HEAD_TO_HEAD_READING.get(d.decision, d.decision),
                     cell(recall)])
    if not rows:
        return []
    return [f"`{challenger}` against `{reference}` at the same compute cap: the per-seed difference of their test "
            f"accuracies (points), one-sided 95 % Student-t bounds on its mean against {tolerance:g}.", "",
            *_md(["data set", "model", "protection", "attacker %", "cap (epochs)", f"{challenger} %", f"{reference} %",
                  "difference (points)", "95 % bounds", f"{challenger}", "key recall %"], rows)]


def curves_section(report: Report) -> list[str]:
    """The compute plateau of each cell swept at several caps, and the data-equivalent value of each row."""
    out: list[str] = []
    if report.plateaus:
        out += ["Compute plateau: the smallest cap from which doubling moves both the best attack and scratch by less "
                "than their standard error over seeds; its stolen value is the figure to quote.", ""]
        out += _md(["data set", "model", "protection", "attacker %", "caps swept", "plateau cap", "stolen there (points)"],
                   [[p.dataset, p.model, f"{p.method}[{p.cell}]", f"{100 * p.fraction:g}", ",".join(map(str, p.caps)),
                     "not reached" if p.epochs is None else str(p.epochs), cell(p.stolen)] for p in report.plateaus])
        out.append("")
    if report.data_equivalents:
        out += ["Data-equivalent value: the share of the training set scratch needs, at the same cap, to match the best "
                "attack, over the attacker's share (interpolated between the shares swept; ≤ and > where scratch "
                "matches at the smallest share already or never does).", ""]
        out += _md(["data set", "model", "protection", "attacker %", "cap (epochs)", "data-equivalent"],
                   [[d.dataset, d.model, f"{d.method}[{d.cell}]", f"{100 * d.fraction:g}", str(d.epochs), str(d)]
                    for d in report.data_equivalents])
    return out


def leaderboard_section(report: Report, figures: Sequence[str] = ()) -> list[str]:
    """The leaderboard's entries as a markdown table (a broken verdict in bold), then each Pareto plot."""
    verdict_column = LEADERBOARD_HEADER.index("verdict")
    rows = []
    for e in report.leaderboard:
        cells = leaderboard_cells(e)
        if e.decision == "broken":
            cells[verdict_column] = f"**{e.decision}**"
        rows.append(cells)
    out = ["Ranked by stolen value, lowest (the best protection) first, per data set, model and attacker budget; "
           "`control` marks the calibration controls (`random` protects nothing, `reinit` leaves nothing to steal); "
           "★ marks the Pareto front of the other methods (no other changes fewer parameters and leaves less to steal). "
           "See the README, *Reading the leaderboard*.", ""]
    out += _md(list(LEADERBOARD_HEADER), rows)
    for path in figures:
        out += ["", f"![{Path(path).stem}]({path})"]
    return out


def render(report: Report, cfg: SweepConfig, command: str, sweep_seconds: float | None,
           figures: Sequence[str] = ()) -> str:
    m = Machine.current()
    lines = [
        f"## Protection on the real data sets (`{cfg.name}`)",
        "",
        f"Command: `{command}` (config `{cfg.name}`: seeds {cfg.seeds}, attacker shares "
        f"{[f'{100 * f:g} %' for f in cfg.attacks.fractions]}, compute caps {cfg.attacks.epochs} epoch-equivalents per "
        f"attack, all {cfg.attacks.trials} tuning trials together; tolerance {cfg.report.tolerance:g} points). Machine: "
        f"{m.cpu}, {m.cores} cores, GPU {m.gpu}; Python {m.python}, torch {m.torch}, Ray {m.ray}; {m.date}."
        + (f" The sweep ran {sweep_seconds / 60:.1f} min this time (finished jobs are skipped on a rerun)." if sweep_seconds else ""),
        "Accuracy in % on the official test split, mean ± standard deviation over the seeds.",
        "",
        "### Encryption",
        "",
        *protection_section(report),
        "",
        "### Attacks (tuned on the attacker's validation split, scored on the test split)",
        "",
        *attack_section(report),
        "",
        *(line for title, challenger, reference in HEAD_TO_HEADS
          if (h := head_to_head_section(report, challenger, reference)) for line in (f"### {title}", "", *h, "")),
        "### Stolen value against compute and data",
        "",
        *curves_section(report),
        "",
        "### Leaderboard",
        "",
        *leaderboard_section(report, figures),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paper", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/paper.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override a config key")
    parser.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: the config's)")
    parser.add_argument("--no-run", action="store_true", help="only render what the store holds already")
    parser.add_argument("--write", type=Path, help="replace the paper section of this markdown file (BENCHMARKS.md)")
    args = parser.parse_args(argv)
    console = Console(width=200)
    try:  # a scheduler's SIGTERM stops the sweep as Ctrl-C does (Ray shut down, the sweep run KILLED)
        with raising_on((signal.SIGTERM, signal.SIGHUP), KeyboardInterrupt):
            cfg = load_config(args.config, args.set)
            uri = args.tracking_uri or cfg.tracking.uri
            seconds, failed = None, 0
            if not args.no_run:
                outcome = run_sweep(cfg, address=args.address, tracking_uri=uri, console=Console(stderr=True))
                print_outcome(outcome, console)
                seconds, failed = outcome.seconds, len(outcome.failed)
            report = build_report(Tracker(uri, cfg.experiment), cfg.experiment, {j.id for j in plan_for(cfg).jobs},
                                  cfg.report.tolerance)
    except BenchError as err:
        print(f"benchmarks.paper: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("benchmarks.paper: interrupted; rerun to resume", file=sys.stderr)
        return 130
    command = "python -m benchmarks.paper " + " ".join(argv if argv is not None else sys.argv[1:])
    figures: list[str] = []
    if args.write:  # the Pareto plots beside the markdown file, linked from it
        folder = args.write.parent / "benchmarks" / "figures" / cfg.name
        figures = [os.path.relpath(p, args.write.parent) for p in pareto_plots(report, folder)]
    text = render(report, cfg, command.strip(), seconds, figures)
    print(text)
    if args.write:
        update_section(args.write, cfg.name, text)  # one section per config
        print(f"written to {args.write}")
    if failed:
        print(f"benchmarks.paper: {failed} job(s) failed; rerun to retry them", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
