"""The speed benchmark on a tiny config: every row of its tables printed, every figure positive.

Figures are not checked against limits (the machine may be busy); only that each was measured.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import benchmarks.speed as speed
from bench.sweep.config import SweepConfig, parse_config
from benchmarks.speed import (
    DROP_MARGIN,
    REAL_DATASETS,
    SCALARS,
    SELECTIONS,
    EncryptionCost,
    encryption_cells,
    encryption_configs,
    main,
    real_models,
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
    """Markdown table body rows by their first cell (encryption rows: data set, model, cell and schedule)."""
    lines = text.splitlines()
    rows = {}
    for line, below in zip(lines, [*lines[1:], ""]):
        if line.startswith("|") and not line.startswith("|---") and not below.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            key = cells[0] if cells[0] != "digits" else " ".join(cells[:5] if cells[2] in ("cpu", "cuda") else cells[:4])
            rows[key] = cells[1:]
    return rows


def test_tiny_benchmark_prints_every_row_with_positive_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _tiny(tmp_path)
    monkeypatch.setattr(speed, "SCALARS", (4, 8))
    report = run_benchmark(cfg, command="python -m benchmarks.speed (test)", workers=1, skip_cluster=True)
    text = report.markdown()
    rows = _rows(text)
    encryption_rows = {f"digits mlp n={n},eps=1 {selection}" for n in (4, 8) for selection in SELECTIONS}
    assert set(rows) == {
        *encryption_rows,
        *(f"digits mlp cpu {amp} {layout}" for amp in ("off", "bfloat16") for layout in ("off", "on")),
        "`advparams sweep --cpus 1 --no-report` (local Ray, MLflow on SQLite)",
        "`python -m bench.sweep.loop --threads 1` (plain loop, no Ray, no MLflow)",
        "local Ray, 1 worker (sweep driver, MLflow on SQLite)",
        "simulated cluster",
        "Ray worker that ran the 1-CPU sweep's jobs",
        "plain loop's process (every job in one process)",
        "first run, fresh folder",
        "rerun, every job finished",
    }, text
    assert "skipped (--skip-cluster)" in rows["simulated cluster"]
    assert "fashion_mnist / lenet5, cifar10 / vgg_compact skipped: ADVPARAMS_DATA_ROOT is unset" in text
    assert f"{os.cpu_count()} cores" in text and "`python -m benchmarks.speed (test)`" in text
    numbers = [c for key, cells in rows.items() if key not in encryption_rows for c in cells if NUMBER.match(c)]
    assert len(numbers) >= 9 + 4 * 5, text
    assert all(float(c.rstrip(" %")) > 0 for c in numbers), text
    for key in encryption_rows:  # then the accuracies, the drop (0 or below on an untuned budget) and its difference
        assert all(float(c.rstrip(" %")) > 0 for c in rows[key][4:-3]), text

    assert [(a.amp, a.channels_last) for a in report.acceleration] == [
        ("off", False), ("bfloat16", False), ("off", True), ("bfloat16", True)]
    assert all(a.epoch_seconds > 0 and a.eval_seconds > 0 and 0 < a.accuracy <= 1 for a in report.acceleration)
    assert [(e.cell, e.selection) for e in report.encryption] == [(f"n={n},eps=1", s) for n in (4, 8) for s in SELECTIONS]
    float32 = next(a for a in report.acceleration if a.amp == "off" and not a.channels_last)
    for enc in report.encryption:
        assert 0 < enc.changed <= int(enc.cell[2]) and enc.seconds > 0 and enc.acc_encrypted < enc.acc_clean
        assert enc.epoch_seconds == float32.epoch_seconds, "the share of an epoch uses the epoch timed under auto (CPU)"
    fixed = report.encryption[0]  # four scalars, one owner batch: one pass each
    assert fixed.steps == fixed.passes == fixed.changed + (fixed.changed < 4)
    assert 0 < report.ray_one.ray_start_seconds < report.ray_one.seconds and report.ray_one.ray_stop_seconds > 0
    assert (tmp_path / "storage" / "baselines").is_dir(), "the baseline is cached in the config's storage folder"
    assert report.cli.done == report.loop.done == report.ray_one.done == 4
    assert report.cli.failed == report.ray_one.failed == 0
    assert report.ray_one.peak_rss_mib and report.loop.peak_rss_mib
    assert report.cli.command_seconds > report.cli.seconds > 0 and report.loop.command_seconds > report.loop.seconds > 0
    assert report.overhead > 0 and report.inner_overhead > 0
    assert report.first_run > report.rerun > 0
    assert rows["first run, fresh folder"] == ["4", f"{report.first_run:.1f}"]


def test_encryption_cost_times_advparams_and_the_real_models_only_with_a_data_root(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path, methods=("advparams", "random"))
    [only], notes = encryption_configs(cfg, None)
    assert notes and only.protect.methods == ["advparams"] and only.seeds == [0]
    assert only.protect.max_params == list(SCALARS) and only.protect.eps == cfg.protect.eps
    configs, notes = encryption_configs(cfg, str(tmp_path))
    assert not notes and len(configs) == 2
    real = configs[1]
    assert real.data_root == str(tmp_path) and real.storage == cfg.storage
    assert [(d.name, d.models, d.owner_samples) for d in real.datasets] == [(d, [m], 512) for d, m in real_models().items()]
    assert real.protect.max_params == list(SCALARS) and real.protect.methods == ["advparams"]
    assert list(real_models()) == list(REAL_DATASETS)
    assert real_models()["cifar10"].args == {"width": 8}, "the compact VGG as configs/paper.yaml trains it"
    [five], _ = encryption_configs(cfg.model_copy(update={"seeds": [0, 1, 2, 3, 4]}), None, seeds=3)
    assert five.seeds == [0, 1, 2]


@pytest.mark.parametrize("seeds", [0, 2])
def test_more_seeds_than_the_config_has_is_one_error_line(
    tmp_path: Path, seeds: int, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "c.yaml").write_text(_tiny(tmp_path).model_dump_json())
    assert main(["--config", str(tmp_path / "c.yaml"), "--encryption-only", "--seeds", str(seeds)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"benchmarks.speed: error: --seeds {seeds}: config tiny-speed has 1 seed(s); pick 1 to 1"


def _cost(seed: int, selection: str, encrypted: float, cell: str = "n=64,eps=1") -> EncryptionCost:
    return EncryptionCost("d", "m", cell, seed, selection, 512, 10, 3, 6, 1.0, 10.0, 0.9, encrypted)


@pytest.mark.parametrize(
    ("reference", "challenger", "decision"),
    [
        ([0.10, 0.12, 0.11, 0.13], [0.10, 0.12, 0.11, 0.13], "broken"),  # the same drop: within the margin
        ([0.10, 0.12, 0.11, 0.13], [0.14, 0.155, 0.135, 0.165], "holds"),  # 2.5 to 3.5 points less: over it below
        ([0.10, 0.12, 0.11, 0.13], [0.05, 0.16, 0.08, 0.15], "inconclusive"),  # paired differences from -4 to +5
    ],
)
def test_selections_are_held_to_the_reference_drop_paired_by_seed(
    reference: list[float], challenger: list[float], decision: str
) -> None:
    rows = [_cost(s, "fixed", a) for s, a in enumerate(reference)] + [_cost(s, "adaptive", a) for s, a in enumerate(challenger)]
    ref, new = encryption_cells(rows)
    assert ref.against_reference is None and len(ref.runs) == len(new.runs) == 4
    v = new.against_reference
    assert v.tolerance == -DROP_MARGIN and v.n == 4 and v.decision == decision
    diffs = [100 * (r - c) for r, c in zip(reference, challenger, strict=True)]
    assert v.mean == pytest.approx(sum(diffs) / 4)


def test_missing_config_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"benchmarks.speed: error: config file not found: {tmp_path / 'nope.yaml'}"


def test_each_seed_encrypts_on_its_own_owner_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With one baseline shared by the seeds (train_seed), each seed's encryption draws the owner samples the
    sweep's job of that seed draws (its grid seed), so the seeds are not copies of one run."""
    raw = json.loads(_tiny(tmp_path).model_dump_json())
    raw["seeds"] = [0, 1]
    raw["datasets"][0]["models"][0]["train_seed"] = 0
    monkeypatch.setattr(speed, "SCALARS", (4,))
    [cfg], _ = encryption_configs(parse_config(raw), None, seeds=2)
    drawn: list[int] = []

    def recording(*args: object, split_seed: int, **kwargs: object) -> object:
        drawn.append(split_seed)
        return real(*args, split_seed=split_seed, **kwargs)

    real = speed.encrypt_file
    monkeypatch.setattr(speed, "encrypt_file", recording)
    [train] = speed.plan_for(cfg).trains
    rows = speed.encryption_cost(cfg, {train.id: 1.0})
    assert sorted({r.seed for r in rows}) == [0, 1] and sorted(set(drawn)) == [0, 1]
    assert [r.seed for r in rows] == drawn  # each with one run: with several seeds no repeats
