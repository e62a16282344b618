"""Verdicts with confidence bounds and the calibration controls, on hand-made per-seed values."""

from __future__ import annotations

import csv
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from bench.sweep.curves import AT_MOST, EXACT, MORE_THAN, data_equivalents, plateaus
from bench.sweep.report import (
    Report,
    attack_rows,
    print_report,
    write_plots,
    write_tables,
)
from bench.sweep.results import (
    BROKEN,
    HOLDS,
    INCONCLUSIVE,
    AttackRow,
    seeds_needed,
    summarize,
    summary_result,
    t_quantile,
    verdict,
)

# values (points), tolerance -> decision, lower, upper, seeds needed (None: no bound, or no count decides)
CASES = [
    # the benchmark once called this "holds" (mean 27.0 <= std 27.6): wide bounds, no decision
    ([28.5, 53.9, -1.3], 2.0, INCONCLUSIVE, -19.55, 73.61, 6),
    ([30.0, 32.0, 35.0], 2.0, BROKEN, 28.09, 36.58, 2),
    ([0.1, -0.5, 0.3], 2.0, HOLDS, -0.74, 0.67, 2),
    ([3.0, 3.5, 4.0], 2.0, BROKEN, 2.66, 4.34, 3),
    ([3.0, 3.5, 4.0], 5.0, HOLDS, 2.66, 4.34, 3),  # the tolerance decides, not zero
    ([5.0], 2.0, INCONCLUSIVE, None, None, None),  # one seed bounds nothing
    ([5.0, 5.0, 5.0], 2.0, BROKEN, 5.0, 5.0, 2),  # no spread: the bounds are the mean
    ([1.0, 1.0], 2.0, HOLDS, 1.0, 1.0, 2),
    ([1.0, 3.0], 2.0, INCONCLUSIVE, -4.31, 8.31, None),  # mean at the tolerance: no count of seeds decides
]


@pytest.mark.parametrize(("values", "tolerance", "decision", "lower", "upper", "needed"), CASES)
def test_verdict_rule(values: list[float], tolerance: float, decision: str, lower: float | None,
                      upper: float | None, needed: int | None) -> None:
    v = verdict(values, tolerance)
    assert (v.decision, v.n, v.tolerance, v.seeds_needed) == (decision, len(values), tolerance, needed)
    assert v.mean == pytest.approx(statistics.fmean(values))
    for got, want in ((v.lower, lower), (v.upper, upper)):
        assert got == (None if want is None else pytest.approx(want, abs=0.01))


def test_no_values_no_verdict_and_the_default_tolerance_is_two_points() -> None:
    assert verdict([]) is None and verdict([None]) is None
    assert verdict([2.5, 2.6, 2.7]).decision == BROKEN and verdict([1.5, 1.6, 1.7]).decision == HOLDS
    assert verdict([5.0]).seeds_needed_text == "unknown" and verdict([1.0, 3.0]).seeds_needed_text == "never"


def test_student_t_quantiles() -> None:
    assert t_quantile(1) == pytest.approx(6.3138, abs=1e-4)
    assert t_quantile(2) == pytest.approx(2.9200, abs=1e-4)
    assert t_quantile(4) == pytest.approx(2.1318, abs=1e-4)
    assert t_quantile(10_000) == pytest.approx(1.6449, abs=1e-3)


def with_spread(mean: float, std: float, n: int) -> list[float]:
    """n values with exactly this mean and sample standard deviation."""
    base = list(range(n))
    m, s = statistics.fmean(base), statistics.stdev(base)
    return [mean + std * (x - m) / s for x in base]


@pytest.mark.parametrize(("mean", "std"), [(27.03, 27.63), (5.0, 4.0), (-3.0, 6.0), (2.5, 0.4)])
def test_seeds_needed_is_where_the_same_mean_and_spread_first_decide(mean: float, std: float) -> None:
    n = seeds_needed(mean, std, 2.0)
    assert verdict(with_spread(mean, std, n)).decision != INCONCLUSIVE
    if n > 2:
        assert verdict(with_spread(mean, std, n - 1)).decision == INCONCLUSIVE
    assert seeds_needed(2.0, 3.0, 2.0) is None


# ------------------------------------------------------------------------------------------ calibration
CLEAN, SCRATCH = 0.95, [0.50, 0.55, 0.60]  # per seed: the clean model beats scratch by ~40 points


def rows(method: str, attacked: list[float], *, clean: float = CLEAN, scratch: list[float] = SCRATCH,
         fraction: float = 0.1) -> list[AttackRow]:
    """One cell's attack runs (one attack per seed) and scratch's runs for the same seeds."""
    out = [AttackRow("digits", "cnn", method, "n=8,eps=1", fraction, seed, "finetune", acc, acc,
                     {"acc_clean": clean, "acc_encrypted": 0.1}, epochs=10) for seed, acc in enumerate(attacked)]
    return out + [AttackRow("digits", "cnn", None, None, fraction, seed, "scratch", acc, acc, {"acc_clean": clean},
                            epochs=10) for seed, acc in enumerate(scratch)]


def cells(*groups: list[AttackRow]) -> dict[str, object]:
    """Each method's cell verdict (scratch rows repeated across groups collapse to one per seed)."""
    unique = list({(r.method, r.seed, r.attack, r.fraction): r for g in groups for r in g}.values())
    return {s.method: s.verdict for s in summarize(unique)}


def test_controls_that_come_out_as_they_must_vouch_for_the_measurement() -> None:
    found = cells(rows("advparams", [0.52, 0.56, 0.61]), rows("random", [0.94, 0.93, 0.95]),
                  rows("reinit", [0.50, 0.55, 0.61]))
    assert found["random"].stolen.decision == BROKEN and found["reinit"].stolen.decision == HOLDS
    assert found["advparams"].clean_gain.decision == BROKEN
    assert {m: (v.trusted, v.warnings) for m, v in found.items()} == {m: (True, ()) for m in found}


@pytest.mark.parametrize(("random", "reinit", "warning"), [
    ([0.52, 0.70, 0.58], [0.50, 0.55, 0.61], "the random control (it protects nothing) came out inconclusive"),
    ([0.94, 0.93, 0.95], [0.80, 0.82, 0.85], "the reinit control (nothing to steal) came out broken"),
])
def test_a_control_that_fails_marks_every_cell_of_its_setting_untrustworthy(
        random: list[float], reinit: list[float], warning: str) -> None:
    found = cells(rows("advparams", [0.52, 0.56, 0.61]), rows("random", random), rows("reinit", reinit))
    for v in found.values():
        assert v.trusted is False and v.trust == "no"
        [message] = v.warnings
        assert message.startswith(warning)


def test_random_is_only_held_to_broken_where_the_clean_model_beats_scratch() -> None:
    close = [0.93, 0.94, 0.96]  # the clean model is worth nothing over scratch: the random control proves nothing
    found = cells(rows("advparams", [0.93, 0.94, 0.95], scratch=close), rows("random", [0.93, 0.95, 0.95], scratch=close))
    assert found["random"].clean_gain.decision != BROKEN
    assert {v.trusted for v in found.values()} == {None}  # no control could be checked
    assert cells(rows("advparams", [0.52, 0.56, 0.61]))["advparams"].trust == "unchecked"


def test_summary_runs_carry_the_cells_verdict() -> None:
    summaries = summarize(rows("advparams", [0.80, 0.82, 0.85]) + rows("reinit", [0.80, 0.82, 0.85])[:3])
    logged = summary_result(next(s for s in summaries if s.method == "advparams"))
    assert logged.tags["verdict"] == BROKEN and logged.tags["trusted"] == "no"
    assert "reinit control" in logged.tags["calibration"]
    assert logged.metrics["verdict.n"] == 3 and logged.metrics["verdict.seeds_needed"] == 2
    assert logged.metrics["verdict.lower"] > logged.metrics["verdict.tolerance"] == 2.0
    assert logged.metrics["clean_gain.mean"] == pytest.approx(40.0)


def test_report_prints_and_writes_bounds_verdicts_and_the_warning(tmp_path: Path) -> None:
    summaries = summarize(rows("advparams", [0.52, 0.56, 0.61]) + rows("random", [0.52, 0.70, 0.58])[:3]
                          + rows("reinit", [0.50, 0.55, 0.61])[:3], tolerance=2.0)
    report = Report("demo", [], attack_rows(summaries), 2.0)
    console = Console(record=True, width=400)
    print_report(report, console)
    text = console.export_text()
    assert "inconclusive" in text and "holds" in text and "[-" in text
    assert "NOT TRUSTWORTHY: digits / cnn at 10 % of the data, 10 epochs of compute: the random control" in text
    assert "the random control came out broken in 0 of 1 cell(s)" in text
    write_tables(report, tmp_path)
    with (tmp_path / "attacks.csv").open() as fh:
        table = {r["method"]: r for r in csv.DictReader(fh)}
    assert table["random"]["stolen.decision"] == INCONCLUSIVE and table["random"]["trusted"] == "False"
    assert float(table["reinit"]["stolen.upper"]) <= 2.0 and table["reinit"]["stolen.decision"] == HOLDS
    assert table["advparams"]["warnings"].startswith("the random control")
    assert (tmp_path / "stolen_value_digits.png") in write_plots(report, tmp_path)
    console = Console(record=True, width=400)
    print_report(Report("demo", [], attack_rows(summarize(rows("advparams", [0.52, 0.56, 0.61]))), 2.0), console)
    assert "calibration: unchecked" in console.export_text()


# ---------------------------------------------------------------------------------------- failed baselines
def test_a_scratch_run_at_chance_is_left_out_of_the_verdict_with_its_reason(tmp_path: Path) -> None:
    failed = "val accuracy 0.100 is at chance (1/10 + 0.05): training did not converge"
    runs = [replace(r, failed=failed) if r.attack == "scratch" and r.seed == 1 else r
            for r in rows("advparams", [0.52, 0.56, 0.61, 0.60], scratch=[0.50, 0.10, 0.60, 0.58])]
    summaries = summarize(runs)
    by_seed = {s.seed: s for s in summaries}
    assert by_seed[1].scratch_accuracy is None and by_seed[1].scratch_failed == failed
    assert by_seed[1].stolen_value_points is None
    assert by_seed[0].verdict.stolen.n == 3  # three seeds paired, not four: the failure is not averaged in
    report = Report("demo", [], attack_rows(summaries), 2.0)
    assert report.attacks[0].scratch_failed == (f"seed 1: {failed}",)
    console = Console(record=True, width=400)
    print_report(report, console)
    assert f"FAILED BASELINE: scratch on digits / cnn at 10 % of the data, 10 epochs of compute: seed 1: {failed}" \
        in console.export_text()
    assert summary_result(by_seed[1]).tags["scratch_failed"] == failed


# ------------------------------------------------------------------------------------------------ curves
def agg(fraction: float, epochs: int, best: list[float], scratch: list[float]) -> object:
    """A report row of one cell at one attacker budget, from per-seed accuracies (fractions)."""
    summaries = summarize([replace(r, epochs=epochs) for r in rows("advparams", best, scratch=scratch, fraction=fraction)])
    [row] = attack_rows(summaries)
    return row


def test_the_plateau_is_the_first_cap_whose_doubling_moves_both_curves_less_than_their_standard_error() -> None:
    curve = [agg(0.1, 1, [0.30, 0.32, 0.34], [0.20, 0.22, 0.24]),
             agg(0.1, 2, [0.60, 0.62, 0.64], [0.40, 0.42, 0.44]),
             agg(0.1, 4, [0.61, 0.62, 0.64], [0.41, 0.42, 0.44]),  # within a standard error of the cap before
             agg(0.1, 8, [0.62, 0.62, 0.64], [0.41, 0.43, 0.44])]
    [found] = plateaus(curve)
    assert found.caps == (1, 2, 4, 8) and found.epochs == 2 and found.stolen.mean == pytest.approx(20.0)
    [rising] = plateaus(curve[:2])
    assert rising.epochs is None and rising.stolen is None  # still climbing at the largest cap


@pytest.mark.parametrize(("best", "expected", "relation"), [
    ([0.70] * 3, 3.0, EXACT),        # scratch reaches 70 % halfway between 20 % (60 %) and 40 % (80 %): 30 % / 10 %
    ([0.35] * 3, 1.0, AT_MOST),      # scratch (40 % at 10 %) already beats it at the smallest share swept
    ([0.95] * 3, 4.0, MORE_THAN),    # scratch never gets there: more than the largest share over 10 %
])
def test_the_data_equivalent_value_interpolates_scratch_between_the_shares_swept(
        best: list[float], expected: float, relation: str) -> None:
    scratch_curve = [agg(0.2, 10, [0.60] * 3, [0.60] * 3), agg(0.4, 10, [0.80] * 3, [0.80] * 3)]
    target = agg(0.1, 10, best, [0.40] * 3)
    found = {(d.fraction, d.method): d for d in data_equivalents([*scratch_curve, target])}
    value = found[(0.1, "advparams")]
    assert value.ratio == pytest.approx(expected) and value.relation == relation
