"""The paper benchmark's verdicts and its BENCHMARKS.md section writer, on hand-made rows."""

from __future__ import annotations

from pathlib import Path

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
