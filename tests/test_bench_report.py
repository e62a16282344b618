"""The report's files: rendered from the store once for what they are made from, again whenever that changes."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from bench.sweep.report import FINGERPRINT, make_report
from bench.sweep.results import JobResult
from bench.sweep.tracking import Tracker

CELL = {"dataset": "digits", "model": "cnn", "method": "advparams", "cell": "n=8,eps=1"}
STOLEN = [0.24, 0.26, 0.25, 0.27]  # finetune's accuracy above scratch's, per seed: about 25 points
SENTINEL = b"not rendered by the report"


def runs(seed: int) -> list[JobResult]:
    """One seed of an AdvParams cell: its encrypt run, finetune's attack on it, and scratch."""
    scratch = 0.50 + 0.02 * seed
    attack = {"seed": seed, "fraction": 0.1, "epochs": 10}
    return [
        JobResult(f"e{seed}", "encrypt", "encrypt", params={**CELL, "seed": seed, "budget.max_params": 8,
                                                             "budget.eps": 1.0},
                  metrics={"acc_clean": 0.95, "acc_encrypted": 0.1, "acc_decrypted": 0.95, "encrypted_fraction": 0.001},
                  tags={"kind": "encrypt"}),
        JobResult(f"a{seed}", "attack", "finetune", params={**CELL, **attack, "attack": "finetune"},
                  metrics={"acc_attacked": scratch + STOLEN[seed], "val_attacked": scratch + STOLEN[seed],
                           "acc_clean": 0.95, "acc_encrypted": 0.1, "encrypted_fraction": 0.001},
                  tags={"kind": "attack"}),
        JobResult(f"s{seed}", "attack", "scratch", params={"dataset": "digits", "model": "cnn", **attack,
                                                           "attack": "scratch"},
                  metrics={"acc_attacked": scratch, "val_attacked": scratch}, tags={"kind": "attack"}),
    ]


def test_a_report_is_rendered_again_only_when_what_it_is_made_from_changes(tmp_path: Path) -> None:
    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "report"
    tracker = Tracker(uri, "demo")
    sweep = tracker.open_sweep("s", "sweep", {}, [r.job_id for seed in range(4) for r in runs(seed)])
    for seed in range(3):
        for r in runs(seed):
            tracker.log_result(r, sweep)

    def report(tolerance: float | None = None) -> str:
        """What `advparams report` prints, read through a tracker of its own, as a new command would."""
        console = Console(record=True, width=400)
        make_report(Tracker(uri, "demo"), "demo", out, console, sweep, tolerance)
        return console.export_text()

    def verdict() -> tuple[str, int]:
        [row] = json.loads((out / "report.json").read_text())["attacks"]
        return row["stolen"]["decision"], row["stolen"]["n"]

    def plant() -> None:
        """Files the report did not write: a rendering replaces them, a report left unchanged keeps them."""
        for name in ("report.json", "pareto_digits.png"):
            (out / name).write_bytes(SENTINEL)

    def planted() -> bool:
        return all((out / name).read_bytes() == SENTINEL for name in ("report.json", "pareto_digits.png"))

    assert f"report written to {out}/" in report() and (out / FINGERPRINT).is_file()
    assert verdict() == ("broken", 3)
    plant()
    said = report()
    assert f"report unchanged: {out}/" in said and "report written" not in said and planted()
    assert "demo: leaderboard" in said, "the tables are printed all the same"

    # Another tolerance renders it again, and so does the sweep's own tolerance after it.
    assert f"report written to {out}/" in report(tolerance=40.0) and not planted() and verdict() == ("holds", 3)
    assert f"report written to {out}/" in report() and verdict() == ("broken", 3)
    plant()
    assert f"report unchanged: {out}/" in report() and planted()

    # A job of the sweep that finished since: its figures are in the report.
    for r in runs(3):
        Tracker(uri, "demo").log_result(r, sweep)
    assert f"report written to {out}/" in report() and not planted() and verdict() == ("broken", 4)

    # A file of the report removed: it is rendered again, the file is back.
    (out / "pareto_digits.png").unlink()
    assert f"report written to {out}/" in report() and (out / "pareto_digits.png").stat().st_size > 0
