"""Signals held back while a write must finish: `bench.signals.held` delivers each signal that arrived inside it to
its earlier handler once the block ends, so a sweep stopped mid-write ends its run instead of tearing the write."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from bench.signals import held, raising_on
from bench.sweep.results import JobResult
from bench.sweep.tracking import Tracker


class Stop(Exception):
    pass


def test_a_signal_inside_the_block_is_raised_after_it_not_during_it() -> None:
    steps: list[str] = []
    with raising_on((signal.SIGTERM,), Stop), pytest.raises(Stop):
        with held():
            os.kill(os.getpid(), signal.SIGTERM)
            steps.append("the write finished")
        steps.append("not reached")
    assert steps == ["the write finished"]


def test_ctrl_c_inside_the_block_is_a_keyboard_interrupt_after_it() -> None:
    """With Python's own Ctrl-C handler (as a command has it; a test run may have replaced it, Ray's for one)."""
    earlier = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with held():
                os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, earlier)


def test_without_a_signal_the_block_runs_and_the_handlers_come_back() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with held():
        pass
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_stop_while_a_job_s_run_is_written_comes_after_the_run_is_whole(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM arrives between the run's creation and its end (as under a scheduler's stop mid-write): the tracker
    finishes the run, then the stop is raised."""
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "demo")
    sweep = tracker.open_sweep("s", "sweep", {}, ["a"])
    log_text = tracker.client.log_text

    def interrupted(run_id: str, text: str, name: str) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        log_text(run_id, text, name)

    monkeypatch.setattr(tracker.client, "log_text", interrupted)
    result = JobResult("a", "train", "train a", metrics={"acc_clean": 0.9}, artifacts={"log.txt": "done"})
    with raising_on((signal.SIGTERM,), Stop), pytest.raises(Stop):
        tracker.log_result(result, sweep)
    [run] = tracker.runs("tags.job_id = 'a'")
    assert run.info.status == "FINISHED" and run.data.metrics["acc_clean"] == pytest.approx(90.0)  # stored in percent
