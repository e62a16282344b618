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
