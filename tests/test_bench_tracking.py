"""The driver's MLflow tracker: one record per job id, whichever tracker logged its earlier runs."""

from __future__ import annotations

from pathlib import Path

from bench.sweep.results import JobResult
from bench.sweep.tracking import Tracker


def _result(job_id: str, status: str) -> JobResult:
    return JobResult(job_id, "train", f"job {job_id}", status=status, metrics={"acc_clean": 0.5},
                     tags={"kind": "train", "job_id": job_id})


def _statuses(tracker: Tracker) -> list[tuple[str, str]]:
    return sorted((r.data.tags["job_id"], r.info.status) for r in tracker.runs("tags.kind = 'train'"))


def test_failed_runs_are_removed_once_the_job_finishes(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = Tracker(uri, "exp")
    parent = first.open_sweep("s", "sweep", {}, ["a", "b", "c"])
    first.log_result(_result("a", "FAILED"), parent)
    first.log_result(_result("b", "FAILED"), parent)
    first.log_result(_result("b", "FINISHED"), parent)  # the same tracker, without reading the store first
    assert _statuses(first) == [("a", "FAILED"), ("b", "FINISHED")]

    second = Tracker(uri, "exp")  # a rerun: it reads which jobs finished and which did not
    assert set(second.finished()) == {"b"}
    second.log_result(_result("c", "FAILED"), parent)
    second.log_result(_result("c", "FINISHED"), parent)
    second.log_result(_result("a", "FINISHED"), parent)
    assert _statuses(second) == [("a", "FINISHED"), ("b", "FINISHED"), ("c", "FINISHED")]

    third = Tracker(uri, "exp")
    third.finished()
    third.log_result(_result("a", "FINISHED"), parent)  # a job rebuilt after its file was lost
    for _ in range(3):  # a job that fails on every rerun
        Tracker(uri, "exp").log_result(_result("d", "FAILED"), parent)
    assert _statuses(third) == [("a", "FINISHED"), ("b", "FINISHED"), ("c", "FINISHED"), ("d", "FAILED")]
    assert set(third.failures()) == {"d"} and third.failures()["d"].name == "job d"


def test_a_tracker_reads_the_store_once_until_it_logs_a_job(tmp_path: Path, monkeypatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    writer = Tracker(uri, "exp")
    parent = writer.open_sweep("s", "sweep", {}, ["a", "b"])
    writer.log_result(_result("a", "FINISHED"), parent)
    reader = Tracker(uri, "exp")  # a sweep's: its report reads what the driver read
    searches = []
    search = reader.client.search_runs
    monkeypatch.setattr(reader.client, "search_runs", lambda *a, **kw: searches.append(a) or search(*a, **kw))
    first = reader.finished()
    first.clear()  # a caller's copy: what the tracker read stays as it was
    assert set(reader.finished()) == {"a"} and len(searches) == 1
    reader.log_result(_result("b", "FINISHED"), parent)
    assert set(reader.finished()) == {"a", "b"}, "a job it logged is read back"
