"""The speed benchmark on a tiny config: every row of its tables printed, every figure positive.

Figures are not checked against limits (the machine may be busy); only that each was measured.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bench.sweep.config import SweepConfig, parse_config
from benchmarks.speed import (
    FASHION_DATASET,
    FASHION_MODEL,
    encryption_configs,
    main,
    run_benchmark,
)

pytestmark = pytest.mark.ray
NUMBER = re.compile(r"^-?\d+(\.\d+)?( %)?$")


def _tiny(tmp: Path, methods: tuple[str, ...] = ("advparams",)) -> SweepConfig:
    """digits + an MLP, one seed, one cell, two attacks, one trial: four jobs with advparams alone."""
    return parse_config({
        "name": "tiny-speed", "seeds": [0], "storage": str(tmp / "storage"),
        "datasets": [{"name": "digits", "owner_samples": 128,
                      "models": [{"name": "mlp", "training": {"epochs": 3, "lr": 0.1, "batch_size": 64}}]}],
        "protect": {"methods": list(methods), "max_params": [4], "eps": [1.0]},
        "attacks": {"names": ["finetune", "scratch"], "fractions": [0.2], "trials": 1, "epochs": 1},
    })


def _rows(text: str) -> dict[str, list[str]]:
    """Markdown table body rows by their first cell (encryption rows: data set, model and cell)."""
    lines = text.splitlines()
    rows = {}
    for line, below in zip(lines, [*lines[1:], ""]):
        if line.startswith("|") and not line.startswith("|---") and not below.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            key = cells[0] if cells[0] != "digits" else " ".join(cells[:5] if cells[2] in ("cpu", "cuda") else cells[:3])
            rows[key] = cells[1:]
    return rows


def test_tiny_benchmark_prints_every_row_with_positive_figures(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path)
    report = run_benchmark(cfg, command="python -m benchmarks.speed (test)", workers=1, skip_cluster=True)
    text = report.markdown()
    rows = _rows(text)
    assert set(rows) == {
        "digits mlp n=4,eps=1",
        *(f"digits mlp cpu {amp} {layout}" for amp in ("off", "bfloat16") for layout in ("off", "on")),
        "`advparams sweep --cpus 1 --no-report` (local Ray, MLflow on SQLite)",
        "`python -m bench.sweep.loop --threads 1` (plain loop, no Ray, no MLflow)",
        "local Ray, 1 worker (sweep driver, MLflow on SQLite)",
        "simulated cluster",
        "Ray worker that ran the 1-CPU sweep's jobs",
        "plain loop's process (every job in one process)",
    }, text
    assert "skipped (--skip-cluster)" in rows["simulated cluster"]
    assert "fashion_mnist / lenet5 skipped: ADVPARAMS_DATA_ROOT is unset" in text
    assert f"{os.cpu_count()} cores" in text and "`python -m benchmarks.speed (test)`" in text
    numbers = [c for cells in rows.values() for c in cells if NUMBER.match(c)]
    assert len(numbers) >= 14 + 4 * 5, text
    assert all(float(c.rstrip(" %")) > 0 for c in numbers), text

    assert [(a.amp, a.channels_last) for a in report.acceleration] == [
        ("off", False), ("bfloat16", False), ("off", True), ("bfloat16", True)]
    assert all(a.epoch_seconds > 0 and a.eval_seconds > 0 and 0 < a.accuracy <= 1 for a in report.acceleration)
    [enc] = report.encryption
    assert enc.passes == 4 and enc.seconds > 0 and enc.epoch_seconds > 0 and enc.acc_encrypted < enc.acc_clean
    float32 = next(a for a in report.acceleration if a.amp == "off" and not a.channels_last)
    assert enc.epoch_seconds == float32.epoch_seconds, "the share of an epoch uses the epoch timed under auto (CPU)"
    assert 0 < report.ray_one.ray_start_seconds < report.ray_one.seconds and report.ray_one.ray_stop_seconds > 0
    assert (tmp_path / "storage" / "baselines").is_dir(), "the baseline is cached in the config's storage folder"
    assert report.cli.done == report.loop.done == report.ray_one.done == 4
    assert report.cli.failed == report.ray_one.failed == 0
    assert report.ray_one.peak_rss_mib and report.loop.peak_rss_mib
    assert report.cli.command_seconds > report.cli.seconds > 0 and report.loop.command_seconds > report.loop.seconds > 0
    assert report.overhead > 0 and report.inner_overhead > 0


def test_encryption_cost_times_advparams_and_fashion_only_with_a_data_root(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path, methods=("advparams", "random"))
    [only], notes = encryption_configs(cfg, None)
    assert notes and only.protect.methods == ["advparams"] and only.seeds == [0]
    configs, notes = encryption_configs(cfg, str(tmp_path))
    assert not notes and len(configs) == 2
    fashion = configs[1]
    assert fashion.data_root == str(tmp_path) and fashion.storage == cfg.storage
    assert [(d.name, [m.name for m in d.models]) for d in fashion.datasets] == [(FASHION_DATASET, [FASHION_MODEL.name])]
    assert fashion.protect.max_params == cfg.protect.max_params and fashion.protect.methods == ["advparams"]


def test_missing_config_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"benchmarks.speed: error: config file not found: {tmp_path / 'nope.yaml'}"
