"""The leaderboard on hand-made results: its rows, their order, the table, leaderboard.json, the MLflow table
and the Pareto plot, all from the same entries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from bench.sweep.report import (
    Report,
    attack_rows,
    make_report,
    print_report,
    protection_rows,
    write_plots,
    write_tables,
)
from bench.sweep.results import BROKEN, HOLDS, JobResult, attack_row, summarize
from bench.sweep.tracking import Tracker

CLEAN, SCRATCH = 0.95, [0.50, 0.55, 0.60]  # per seed
# method, cell, share of parameters changed (fraction), finetune's test accuracy per seed
CELLS = [
    ("advparams", "n=8,eps=1", 0.0008, [0.80, 0.82, 0.85]),
    ("advparams", "n=64,eps=1", 0.006, [0.85, 0.88, 0.90]),
    ("nnsplitter", "n=64,eps=1", 0.0005, [0.90, 0.91, 0.93]),
    ("keyed_lock", "n=64,eps=1", 0.06, [0.50, 0.56, 0.60]),
    ("random", "n=8,eps=1", 0.0008, [0.94, 0.93, 0.95]),
    ("reinit", "all", 0.99, [0.49, 0.54, 0.59]),
]
# ranked by stolen value, lowest first: the positive control first, the negative control last
ORDER = [("reinit", "all"), ("keyed_lock", "n=64,eps=1"), ("advparams", "n=8,eps=1"), ("advparams", "n=64,eps=1"),
         ("nnsplitter", "n=64,eps=1"), ("random", "n=8,eps=1")]


def results(fraction: float = 0.1, cells: list = CELLS) -> list[JobResult]:
    """Encrypt runs and attack runs of every cell and seed: finetune (the attacker's validation picks it) and
    prune (better on test, worse on validation: never the worst case), and scratch."""
    out = []
    for method, cell, share, accs in cells:
        where = {"dataset": "digits", "model": "cnn", "method": method, "cell": cell}
        for seed, acc in enumerate(accs):
            out.append(JobResult(f"e-{method}-{cell}-{seed}", "encrypt", "enc", params={
                **where, "seed": seed, "budget.max_params": 64, "budget.eps": 1.0}, metrics={
                "acc_clean": CLEAN, "acc_encrypted": 0.1, "acc_decrypted": CLEAN, "drop_points": 85.0,
                "drop_relative": 89.5, "num_encrypted": 10.0, "encrypted_fraction": share,
                "encrypt_seconds": 2.0 + seed}, tags={"kind": "encrypt"}))
            for attack, test, val in (("finetune", acc, acc), ("prune", acc + 0.03, acc - 0.1)):
                out.append(JobResult(f"a-{method}-{cell}-{attack}-{fraction}-{seed}", "attack", "att", params={
                    **where, "seed": seed, "attack": attack, "fraction": fraction, "epochs": 10}, metrics={
                    "acc_attacked": test, "val_attacked": val, "acc_clean": CLEAN, "acc_encrypted": 0.1,
                    "encrypted_fraction": share}, tags={"kind": "attack"}))
    for seed, acc in enumerate(SCRATCH):
        out.append(JobResult(f"s-{fraction}-{seed}", "attack", "scratch", params={
            "dataset": "digits", "model": "cnn", "seed": seed, "attack": "scratch", "fraction": fraction,
            "epochs": 10}, metrics={"acc_attacked": acc, "val_attacked": acc}, tags={"kind": "attack"}))
    return out


def report_of(runs: list[JobResult]) -> Report:
    summaries = summarize(attack_row(r) for r in runs if r.kind == "attack")
    return Report("demo", protection_rows([r for r in runs if r.kind == "encrypt"]), attack_rows(summaries), 2.0)


def test_entries_are_ranked_by_stolen_value_with_the_controls_marked_and_the_front_of_the_rest() -> None:
    report = report_of(results())
    entries = report.leaderboard
    assert [(e.method, e.cell) for e in entries] == ORDER and [e.rank for e in entries] == [1, 2, 3, 4, 5, 6]
    assert {e.method: e.control for e in entries} == {"reinit": "positive", "random": "negative", "advparams": None,
                                                      "nnsplitter": None, "keyed_lock": None}
    by = {(e.method, e.cell): e for e in entries}
    verdicts = {(r.method, r.cell): r for r in report.attacks}
    for key, e in by.items():  # the verdict's own figures, not recomputed
        assert e.stolen is verdicts[key].stolen and e.worst_case is verdicts[key].worst_case
        assert e.best_attacks == "finetune"  # chosen on the attacker's validation split, though prune scores higher
    advparams = by[("advparams", "n=8,eps=1")]
    assert advparams.changed_pct == pytest.approx(0.08) and advparams.clean.mean == pytest.approx(95.0)
    assert advparams.encrypted.mean == pytest.approx(10.0) and advparams.encrypt_seconds.mean == pytest.approx(3.0)
    assert advparams.worst_case.mean == pytest.approx(82.333, abs=1e-3) and advparams.scratch.mean == pytest.approx(55.0)
    assert advparams.stolen.mean == pytest.approx(27.333, abs=1e-3) and advparams.decision == BROKEN
    assert by[("keyed_lock", "n=64,eps=1")].decision == HOLDS and by[("reinit", "all")].decision == HOLDS
    # advparams at 64 changes more than at 8 and leaves more to steal; the controls are not on the front
    assert [(e.method, e.cell) for e in entries if e.pareto] == [
        ("keyed_lock", "n=64,eps=1"), ("advparams", "n=8,eps=1"), ("nnsplitter", "n=64,eps=1")]


def test_each_board_is_one_attacker_budget_ranked_on_its_own() -> None:
    stronger = [(m, c, s, [min(a + 0.05, 1.0) for a in accs]) for m, c, s, accs in CELLS if m != "keyed_lock"]
    entries = report_of(results() + results(0.3, stronger)).leaderboard
    boards = [(e.fraction, e.rank, e.method) for e in entries]
    assert boards[:6] == [(0.1, i, m) for i, (m, _) in enumerate(ORDER, 1)]
    assert [f for f, _, _ in boards[6:]] == [0.3] * 5 and [r for _, r, _ in boards[6:]] == [1, 2, 3, 4, 5]


def test_json_table_and_pareto_plot_render_the_same_entries(tmp_path: Path) -> None:
    report = report_of(results())
    paths = write_tables(report, tmp_path) + write_plots(report, tmp_path)
    rows = json.loads((tmp_path / "leaderboard.json").read_text())
    assert rows == json.loads((tmp_path / "report.json").read_text())["leaderboard"]
    assert [(r["rank"], r["method"], r["cell"]) for r in rows] == [(i, m, c) for i, (m, c) in enumerate(ORDER, 1)]
    first = rows[0]
    assert first["control"] == "positive" and first["decision"] == HOLDS and first["stolen"]["n"] == 3
    assert first["stolen"]["upper"] <= 2.0 < rows[-1]["stolen"]["lower"]
    assert rows[2]["changed_pct"] == pytest.approx(0.08) and rows[2]["worst_case"]["mean"] == pytest.approx(82.333, abs=1e-3)
    assert (tmp_path / "leaderboard.csv") in paths
    png = tmp_path / "pareto_digits.png"
    assert png in paths and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    console = Console(record=True, width=400)
    print_report(report, console)
    text = console.export_text()
    board = text[text.index("demo: leaderboard"):]
    lines = [line for line in board.splitlines() if " digits " in line]
    assert [next(m for m in ("reinit", "keyed_lock", "advparams", "nnsplitter", "random") if f" {m} " in line)
            for line in lines] == [m for m, _ in ORDER]
    assert "positive" in lines[0] and "negative" in lines[-1] and "[27.3" not in lines[2]
    assert "27.3" in lines[2] and "82.3±2.5 (finetune)" in lines[2] and "0.08" in lines[2] and "★" in lines[2]


def test_the_sweeps_run_holds_the_leaderboard_as_an_mlflow_table(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "demo")
    runs = results()
    sweep = tracker.open_sweep("s", "sweep", {}, [r.job_id for r in runs])
    for r in runs:
        tracker.log_result(r, sweep)
    make_report(Tracker(uri, "demo"), "demo", tmp_path / "report", Console(record=True, width=400), sweep)
    client = MlflowClient(tracking_uri=uri)
    table = json.loads(Path(client.download_artifacts(sweep, "tables/leaderboard.json", str(tmp_path))).read_text())
    column = table["columns"].index
    assert [(row[column("method")], row[column("cell")]) for row in table["data"]] == ORDER
    assert table["data"][2][column("stolen.mean")] == pytest.approx(27.333, abs=1e-3)
    assert {"path": "tables/leaderboard.json", "type": "table"} in json.loads(
        client.get_run(sweep).data.tags["mlflow.loggedArtifacts"])
    artifacts = {a.path for a in client.list_artifacts(sweep, "report")}
    assert {"report/leaderboard.json", "report/pareto_digits.png"} <= artifacts


def test_benchmarks_md_holds_the_same_table_and_links_the_pareto_plot() -> None:
    from benchmarks.paper import leaderboard_section

    lines = leaderboard_section(report_of(results()), ["benchmarks/figures/methods/pareto_digits.png"])
    rows = [line for line in lines if line.startswith("| ") and "digits" in line]
    assert [row.split(" | ")[5] for row in rows] == [m for m, _ in ORDER]
    assert rows[0].startswith("| 1 | digits | cnn | 10 | 10 | reinit | all | positive | 99 |")
    assert "| 27.3±2.5 | [23.1, 31.6] | **broken** | yes |" in rows[2] and rows[2].endswith("| ★ |")
    assert lines[-1] == "![pareto_digits](benchmarks/figures/methods/pareto_digits.png)"
