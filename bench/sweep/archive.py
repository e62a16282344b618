"""A sweep's results as a file to commit: the sweep's memory where its MLflow store does not survive.

A long benchmark outlives the machine it started on: the store and the stored models are lost with the
working folder, the results need not be. With ``tracking.archive`` set, the driver appends every finished
job's `JobResult` to that file as one JSON line the moment it lands, and a sweep whose store lacks a job
the archive holds records it from there instead of running it again. The archive holds what MLflow holds:
figures, settings and fingerprints, never a key or a model; the driver is its one writer, and at the end of
each run it rewrites the file sorted by job id, one line per job, so a commit's diff shows the jobs that
changed. Several configs may share one archive (`configs/paper-compute.yaml` shares the paper's): each
reads the jobs of its own plan and keeps the others' lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, fields
from pathlib import Path

from bench.errors import BenchError
from bench.sweep.results import JobResult

_FIELDS = {f.name for f in fields(JobResult)}


class Archive:
    """The results an archive file holds, by job id (the last line of a job wins), and the file's one writer."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.results: dict[str, JobResult] = {}
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise BenchError(f"results archive {self.path}: cannot be read: {getattr(err, 'strerror', None) or err}") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or set(record) - _FIELDS or "job_id" not in record:
                    raise ValueError("not a job result")
                result = JobResult(**record)
            except (ValueError, TypeError) as err:
                raise BenchError(f"results archive {self.path}, line {number}: {err}") from None
            if result.status == "FINISHED":
                self.results[result.job_id] = result

    def add(self, result: JobResult) -> str | None:
        """Keep a finished ``result`` (appended at once, so a driver killed next loses nothing); a failed one is
        not kept. Returns a note when it replaces an archived result with other figures (`_figures`): the
        results of the jobs after it, archived too, came from the old one."""
        if result.status != "FINISHED":
            return None
        before = self.results.get(result.job_id)
        self.results[result.job_id] = result
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as file:
            file.write(_line(result))
        old = _figures(before) if before is not None else {}
        changed = sorted(k for k, v in _figures(result).items() if old.get(k, v) != v)
        if not changed:
            return None
        return (f"note: {result.name} was rebuilt and its {', '.join(changed)} differ from the archived result in "
                f"{self.path}; the archived results of the jobs that use it were made from the old one (remove "
                f"their lines to run them again)")

    def compact(self, also: Iterable[JobResult] = ()) -> None:
        """Rewrite the file as one line per job, sorted by job id (written aside, then moved over it), with the
        finished results of ``also`` it lacks (those a store recorded before the archive was named)."""
        for result in also:
            if result.status == "FINISHED":
                self.results.setdefault(result.job_id, result)
        if not self.results and not self.path.exists():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        aside = self.path.with_name(self.path.name + ".tmp")
        aside.write_text("".join(_line(self.results[k]) for k in sorted(self.results)), encoding="utf-8")
        aside.replace(self.path)


def _figures(result: JobResult) -> dict[str, object]:
    """What a rebuilt job must reproduce for the archived results after it to stand: its accuracies and its key's
    fingerprint. Not its files' bytes: safetensors writes a header's metadata in any order, a key file holds a
    random nonce."""
    figures: dict[str, object] = {k: v for k, v in result.metrics.items() if k.startswith("acc_")}
    if "key_fingerprint" in result.tags:
        figures["key_fingerprint"] = result.tags["key_fingerprint"]
    return figures


def _line(result: JobResult) -> str:
    return json.dumps(asdict(result), sort_keys=True, separators=(",", ":")) + "\n"
