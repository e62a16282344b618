"""The results archive: a sweep's finished results as a file to commit, from which a sweep on a machine that has
neither the MLflow store nor the stored models resumes, running only what the archive lacks."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console
from sweep_helpers import runs_by_kind, tiny_config

from bench.errors import BenchError
from bench.sweep import driver
from bench.sweep.archive import Archive
from bench.sweep.driver import run_sweep
from bench.sweep.plan import plan_for
from bench.sweep.results import JobResult


def result(job_id: str, status: str = "FINISHED", digest: str = "aa", acc: float = 0.5) -> JobResult:
    return JobResult(job_id, "encrypt", f"encrypt {job_id}", status=status, params={"seed": 0},
                     metrics={"acc_clean": acc}, tags={"sha256.model": digest, "key_fingerprint": "f" * 16})


def test_results_are_appended_as_they_land_and_compacted_one_line_per_job(tmp_path: Path) -> None:
    path = tmp_path / "results" / "sweep.jsonl"
    archive = Archive(path)
    assert archive.results == {} and not path.exists()
    for r in (result("b"), result("a"), result("c", status="FAILED"), result("b", digest="bb")):
        assert archive.add(r) is None
    assert len(path.read_text().splitlines()) == 3, "each finished result is on disk as soon as it lands"
    assert Archive(path).results == {"a": result("a"), "b": result("b", digest="bb")}, "the last line of a job wins"
    archive.compact([result("d"), result("a", acc=0.1), result("e", status="FAILED")])
    lines = path.read_text().splitlines()
    assert [json.loads(line)["job_id"] for line in lines] == ["a", "b", "d"], "sorted, one line per job"
    assert Archive(path).results["a"] == result("a"), "a store's result never overrides the archived one"
    assert not path.with_name("sweep.jsonl.tmp").exists()


def test_a_job_rebuilt_with_other_figures_than_archived_is_said(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "a.jsonl")
    archive.add(result("a", digest="aa"))
    assert archive.add(result("a", digest="bb")) is None, "a file's bytes may differ (safetensors' header order)"
    note = archive.add(result("a", acc=0.25))
    assert note is not None and note.startswith("note: encrypt a was rebuilt and its acc_clean differ from the archived")


@pytest.mark.parametrize(("text", "problem"), [
    ('{"job_id": "a", "kind": "train", "name": "t"}\nnot json\n', r"line 2: Expecting value"),
    ('[1, 2]\n', r"line 1: not a job result"),
    ('{"job_id": "a", "kind": "train", "name": "t", "secret": 1}\n', r"line 1: not a job result"),
    ('{"kind": "train", "name": "t"}\n', r"line 1: not a job result"),
])
def test_an_archive_that_is_not_job_results_is_refused_in_one_line(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(text)
    with pytest.raises(BenchError, match=rf"^results archive {path}, {problem}") as refused:
        Archive(path)
    assert "\n" not in str(refused.value) and path.read_text() == text


@pytest.mark.ray
def test_a_sweep_resumes_from_its_archive_on_a_machine_without_its_store_or_files(
        ray_session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "committed" / "tiny.jsonl"
    first = tiny_config(tmp_path / "first", tracking={"uri": f"sqlite:///{tmp_path / 'first.db'}", "archive": str(archive)})
    plan = plan_for(first)
    assert run_sweep(first).ok
    lines = archive.read_text().splitlines()
    assert sorted(json.loads(line)["job_id"] for line in lines) == sorted(j.id for j in plan.jobs)
    assert [json.loads(line)["job_id"] for line in lines] == sorted(j.id for j in plan.jobs)
    encrypts = [json.loads(line) for line in lines if json.loads(line)["kind"] == "encrypt"]
    assert all(e["tags"]["key_fingerprint"] and e["tags"]["sha256.key"] for e in encrypts), "fingerprints, not keys"
    recorded = {r.data.tags["job_id"]: r.data.metrics for k in ("train", "encrypt", "attack")
                for r in runs_by_kind(first.tracking.uri, first.experiment)[k]}

    # Another machine: a new store and an empty storage folder. Every job is restored; none runs, Ray never starts.
    second = first.model_copy(update={"storage": str(tmp_path / "second"),
                                      "tracking": first.tracking.model_copy(update={"uri": f"sqlite:///{tmp_path / 'second.db'}"})})
    console = Console(record=True, width=2000)
    with monkeypatch.context() as m:
        m.setattr(driver, "connect", lambda *_: pytest.fail("a sweep its archive holds whole started Ray"))
        restored = run_sweep(second, console=console)
    assert restored.ok and sum(c["done"] for c in restored.counts.values()) == 0
    assert f"restored {len(plan.jobs)} finished jobs from the results archive {archive}" in console.export_text()
    assert {r.data.tags["job_id"]: r.data.metrics for k in ("train", "encrypt", "attack")
            for r in runs_by_kind(second.tracking.uri, second.experiment)[k]} == recorded
    assert not list((tmp_path / "second").rglob("*.safetensors")), "no file is rebuilt that no job left reads"

    # An attack the archive lacks runs; the train and encrypt jobs it reads are rebuilt, to the bytes archived
    # (no note), and the attack's figures are those of the first machine: a rerun gives the same result on CPU.
    attack = next(j for j in plan.attacks if j.encrypt is not None)
    archive.write_text("".join(line + "\n" for line in lines if json.loads(line)["job_id"] != attack.id))
    third = second.model_copy(update={"storage": str(tmp_path / "third"),
                                      "tracking": first.tracking.model_copy(update={"uri": f"sqlite:///{tmp_path / 'third.db'}"})})
    console = Console(record=True, width=2000)
    resumed = run_sweep(third, console=console)
    said = console.export_text()
    assert resumed.ok, [r.error for r in resumed.failed]
    assert {k: c["done"] for k, c in resumed.counts.items()} == {"train": 1, "encrypt": 1, "attack": 1}
    assert "rebuilding" in said and "note:" not in said, said
    runs = runs_by_kind(third.tracking.uri, third.experiment)
    assert set(Counter(r.data.tags["job_id"] for k in ("train", "encrypt", "attack") for r in runs[k]).values()) == {1}
    [rerun] = [r for r in runs["attack"] if r.data.tags["job_id"] == attack.id]
    figures = ("acc_attacked", "val_attacked", "compute_epochs")
    assert {k: rerun.data.metrics[k] for k in figures} == {k: recorded[attack.id][k] for k in figures}
    again = archive.read_text().splitlines()
    assert [json.loads(line)["job_id"] for line in again] == [json.loads(line)["job_id"] for line in lines]
    ran = {attack.id, attack.encrypt.id, attack.train.id}
    assert [line for line in again if json.loads(line)["job_id"] not in ran] == \
           [line for line in lines if json.loads(line)["job_id"] not in ran], "the lines of the jobs not run stay"
