"""The paper benchmark's verdicts and its BENCHMARKS.md section writer, on hand-made rows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.sweep.report import ProtectionRow
from bench.sweep.results import spread
from benchmarks.benchfile import update_section
from benchmarks.paper import verdict


def row(dataset: str, clean: float, encrypted: float) -> ProtectionRow:
    points = clean - encrypted
    return ProtectionRow(dataset, "m", "advparams", "n=64,eps=1", 64, 1.0, spread([clean]), spread([encrypted]),
                         spread([clean]), spread([points]), spread([100 * points / clean]), spread([10.0]),
                         spread([0.01]), spread([1.0]))


def test_verdict_compares_points_then_relative_drop() -> None:
    assert verdict(row("fashion_mnist", 90.0, 5.0)).startswith("reaches it in points (85.0 >= 80.65)")
    # CIFAR-10 at 70 % clean cannot drop 81 points, but 60 points is 85.7 % of clean.
    assert verdict(row("cifar10", 70.0, 10.0)).startswith("reaches it relative to clean (85.7 >= 81.16)")
    assert verdict(row("gtsrb", 90.0, 50.0)) == "short of it: 47.9 points in points, 43.5 relative"
    assert verdict(row("digits", 98.0, 10.0)) == "no figure in the paper"


def test_update_section_replaces_only_its_own_block(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    update_section(path, "paper", "first\n")
    update_section(path, "speed", "fast\n")
    update_section(path, "paper", "second\n")
    text = path.read_text()
    assert text.startswith("# Benchmarks\n")
    assert "second\n" in text and "first" not in text and "fast\n" in text
    assert text.count("<!-- paper:begin -->") == 1 and text.index("paper:begin") < text.index("speed:begin")


def test_attack_section_states_each_verdict_with_its_bounds() -> None:
    from bench.sweep.report import AttackRowAgg, Report
    from bench.sweep.results import verdict as cell_verdict
    from benchmarks.paper import attack_section

    def agg(method: str, stolen: list[float]) -> AttackRowAgg:
        return AttackRowAgg("fashion_mnist", "lenet5", method, "n=64,eps=1", 0.01, 10, {"finetune": spread([80.0])},
                            spread([80.0]), "finetune", spread([50.0]), cell_verdict(stolen), cell_verdict([30.0, 31.0]),
                            True, ())

    report = Report("paper", [], [agg("advparams", [28.5, 53.9, -1.3]), agg("random", [30.0, 31.0, 29.0])], 2.0)
    text = "\n".join(attack_section(report))
    assert "advparams[n=64,eps=1] at 1 % of the data, 10 epochs of compute: stolen value 27.0±27.6 points" in text
    assert "bounds [-19.5, 73.6] against a tolerance of 2 points: **inconclusive** (6 seeds would decide)." in text
    assert "random[n=64,eps=1] at 1 % of the data" in text and ": **broken**." in text
    assert "holds" not in text.replace("protection holds", "")


def test_head_to_head_pairs_the_seeds_both_attacks_ran() -> None:
    from bench.sweep.report import SCRATCH, Report, attack_rows, head_to_head
    from bench.sweep.results import AttackRow, summarize
    from benchmarks.paper import head_to_head_section

    def run(attack: str, seed: int, acc: float, method: str | None = "advparams") -> AttackRow:
        return AttackRow("fashion_mnist", "lenet5", method, "n=64,eps=1" if method else None, 0.01, seed, attack,
                         acc, acc, {"acc_clean": 0.9}, epochs=10)

    # key inversion 3, 1 and 2 points above fine-tuning on seeds 0-2; seed 3 has fine-tuning only: not paired.
    rows = [run("key_inversion", s, a) for s, a in enumerate([0.83, 0.81, 0.82])]
    rows += [run("finetune", s, a) for s, a in enumerate([0.80, 0.80, 0.80, 0.95])]
    rows += [run("scratch", s, 0.6, None) for s in range(4)]
    [row] = attack_rows(summarize(rows))
    d = head_to_head(row, "key_inversion", "finetune")
    assert d is not None and d.n == 3 and abs(d.mean - 2.0) < 1e-9 and d.lower > 0 and d.decision == "broken"
    assert head_to_head(row, "finetune", "key_inversion").decision == "holds"  # type: ignore[union-attr]
    assert head_to_head(row, "key_inversion", "adaptive") is None
    text = "\n".join(head_to_head_section(Report("paper", [], [row], 2.0), "key_inversion", "finetune"))
    assert "| fashion_mnist | lenet5 | advparams[n=64,eps=1] | 1 | 10 |" in text and "| recovers more |" in text
    # an attack alone against scratch (60 % on every seed): 23, 21 and 22 points, held to the cell's tolerance
    alone = head_to_head(row, "key_inversion", SCRATCH, 2.0)
    assert alone is not None and alone.n == 3 and abs(alone.mean - 22.0) < 1e-9 and alone.decision == "broken"
    assert head_to_head(row, "key_inversion", SCRATCH, 30.0).decision == "holds"  # type: ignore[union-attr]
    text = "\n".join(head_to_head_section(Report("paper", [], [row], 2.0), "key_inversion", SCRATCH))
    assert "bounds on its mean against 2." in text and "| 22.0±1.0 |" in text and "| broken |" in text


@pytest.mark.ray
def test_sigterm_stops_the_benchmark_like_ctrl_c(tmp_path: Path) -> None:
    """A scheduler's SIGTERM stops `benchmarks.paper` along its cleanup path: exit 130, the sweep run KILLED
    (Ray's own handler aborted it, leaving the run RUNNING)."""
    import signal
    import sys

    from sweep_helpers import running_after, runs_by_kind, tiny_config, write_config

    cfg = tiny_config(tmp_path, attacks={"names": ["finetune", "clip", "adaptive", "scratch"], "fractions": [0.2, 0.4],
                                         "trials": 2, "epochs": 2})
    path = write_config(cfg, tmp_path / "cfg.yaml")
    repo = Path(__file__).resolve().parents[1]
    driver = running_after([sys.executable, "-m", "benchmarks.paper", "--config", str(path)], cfg, 4, cwd=repo)
    try:
        driver.send_signal(signal.SIGTERM)
        code = driver.wait(timeout=120)
        err = driver.stderr.read().decode()
        assert code == 130, err[:3000] + "\n...\n" + err[-1000:]
        assert "benchmarks.paper: interrupted; rerun to resume" in err
        [sweep] = runs_by_kind(cfg.tracking.uri, cfg.experiment)["sweep"]
        assert sweep.info.status == "KILLED", err[-2000:]
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
