"""The stolen-value arithmetic and the spread across seeds, on hand-made records (verdicts: test_verdicts.py)."""

from __future__ import annotations

import math

import pytest

from bench.sweep.report import protection_rows
from bench.sweep.results import (
    AttackRow,
    JobResult,
    attack_row,
    differs,
    model_label,
    recovery,
    spread,
    summarize,
    summary_result,
)


def row(attack: str, acc: float, val: float, *, seed: int = 0, method: str | None = "advparams",
        fraction: float = 0.1) -> AttackRow:
    cell = "n=8,eps=1" if method else None
    return AttackRow("digits", "cnn", method if attack != "scratch" else None, cell if attack != "scratch" else None,
                     fraction, seed, attack, acc, val, {"acc_clean": 0.95, "acc_encrypted": 0.1})


def test_best_attack_is_chosen_on_validation_not_test() -> None:
    rows = [row("finetune", 0.80, 0.70), row("clip", 0.90, 0.60), row("scratch", 0.75, 0.72)]
    [s] = summarize(rows)
    assert s.best_attack == "finetune"  # clip has the better test accuracy but the worse validation accuracy
    assert s.worst_case_attacked == 0.80
    assert s.scratch_accuracy == 0.75
    assert s.stolen_value_points == pytest.approx(5.0)
    assert s.attacked == {"finetune": 0.80, "clip": 0.90}


def test_scratch_is_matched_by_seed_and_fraction() -> None:
    rows = [row("finetune", 0.6, 0.6, seed=0), row("finetune", 0.7, 0.7, seed=1),
            row("scratch", 0.5, 0.5, seed=0), row("scratch", 0.8, 0.8, seed=1),
            row("finetune", 0.9, 0.9, seed=0, fraction=0.3)]
    by = {(s.seed, s.fraction): s for s in summarize(rows)}
    assert by[(0, 0.1)].stolen_value_points == pytest.approx(10.0)
    assert by[(1, 0.1)].stolen_value_points == pytest.approx(-10.0)
    assert by[(0, 0.3)].scratch_accuracy is None and by[(0, 0.3)].stolen_value_points is None


def test_spread_and_differs() -> None:
    s = spread([1.0, 3.0])
    assert s.mean == 2.0 and s.std == pytest.approx(math.sqrt(2)) and s.n == 2
    assert spread([]) is None and spread([4.0]).std == 0.0
    assert differs(spread([10.0, 11.0]), spread([20.0, 21.0]))
    assert not differs(spread([10.0, 14.0]), spread([12.0, 13.0]))


def test_recovery_only_where_encryption_removed_enough() -> None:
    assert recovery(0.9, 0.1, 0.5) == pytest.approx(0.5)
    assert recovery(0.9, 0.88, 0.9) is None


def test_results_round_trip_through_string_params() -> None:
    fresh = JobResult("j", "attack", "n", params={"dataset": "digits", "model": "cnn", "method": "advparams",
                                                  "cell": "n=8,eps=1", "fraction": "0.1", "seed": "2", "attack": "clip"},
                      metrics={"acc_attacked": 0.5, "val_attacked": 0.4})
    r = attack_row(fresh)
    assert r.fraction == 0.1 and r.seed == 2 and r.attack == "clip"
    [s] = summarize([r, row("scratch", 0.3, 0.3, seed=2)])
    logged = summary_result(s)
    assert logged.kind == "summary" and logged.params["best_attack"] == "clip"
    assert logged.metrics["stolen_value_points"] == pytest.approx(20.0)
    assert summary_result(s).job_id == logged.job_id  # stable id: a rerun replaces, not duplicates


def test_entries_of_one_model_with_other_arguments_stay_apart() -> None:
    def encrypt(width: object, acc: float) -> JobResult:
        params = {"dataset": "cifar10", "model": "vgg_compact", "model.width": width, "method": "advparams",
                  "cell": "n=64,eps=1", "budget.max_params": 64, "budget.eps": 1.0}
        return JobResult("e", "encrypt", "e", params=params, metrics={"acc_clean": 0.8, "acc_encrypted": acc})

    rows = protection_rows([encrypt(16, 0.1), encrypt("16", 0.2), encrypt(64, 0.3)])  # "16": read back from MLflow
    assert [(r.model, r.encrypted.n) for r in rows] == [("vgg_compact(width=16)", 2), ("vgg_compact(width=64)", 1)]
    assert model_label({"model": "lenet5"}) == "lenet5"
    row = attack_row(JobResult("a", "attack", "a", params={"dataset": "d", "model": "resnet", "model.width": 8,
                                                           "model.depth": 2, "fraction": 0.1, "seed": 0, "attack": "x"},
                               metrics={"acc_attacked": 0.5, "val_attacked": 0.5}))
    assert row.model == "resnet(depth=2, width=8)"
