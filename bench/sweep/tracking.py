"""MLflow tracking, written from the sweep's driver only.

Workers return `JobResult`s; the driver turns each into one MLflow run nested under the sweep's parent
run, so concurrent jobs never meet SQLite's "database is locked" and no worker needs MLflow at all. The
same store is the sweep's memory: a job whose id has a FINISHED run is skipped when the config is rerun.
"""

from __future__ import annotations

import contextlib
import getpass
import http.client
import json
import math
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

from bench.errors import BenchError
from bench.signals import held
from bench.sweep.results import JobResult
from bench.sweep.store import COMPARISON_VIEW_TAG, check_uri, default_artifact_root
from common.errors import first_line

PARENT_TAG = "mlflow.parentRunId"
SWEEP_JOBS = "jobs.json"
TOLERANCE_TAG = "report.tolerance"  # on the sweep run: the tolerance its verdicts were held against
MAX_PARAM = 6000
MAX_TAG = 5000


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


#: The comparison, as a view of MLflow's runs table that a link opens (`bench.sweep.store.COMPARISON_VIEW_KEY`):
#: the summary runs grouped by method (averaged over each group's runs), with the deciding figures as columns.
COMPARISON_COLUMNS = (
    "metrics.`stolen_value_points`", "metrics.`verdict.lower`", "metrics.`verdict.upper`", "tags.`verdict`",
    "tags.`trusted`", "metrics.`worst_case_attacked`", "metrics.`scratch_accuracy`", "metrics.`encrypted_pct`",
    "params.`best_attack`", "params.`budget.max_params`", "params.`budget.eps`", "params.`attacker_pct`",
    "params.`dataset`", "params.`model`", "params.`seed`",
)
COMPARISON_VIEW = {
    "searchFilter": "tags.kind = 'summary'",
    "selectedColumns": list(COMPARISON_COLUMNS),
    "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "param", "groupByData": "method"}]},
}
#: The experiment marked as holding model-training runs (MLflow 3's UI would open its GenAI overview:
#: traces, token usage), and the comparison view.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development",
                   COMPARISON_VIEW_TAG: json.dumps(COMPARISON_VIEW)}


def code_tags() -> dict[str, str]:
    """The code a run came from, in MLflow's standard source tags (the UI's Source and Version columns), and
    the package versions."""
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": f"advparams ({Path(sys.argv[0]).name})"}
    try:
        tags["mlflow.user"] = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a container)
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent)
        if commit.returncode == 0:
            tags["mlflow.source.git.commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    for pkg in ("advparams", "torch", "torchvision", "ray", "mlflow", "optuna", "torch-pruning"):
        try:
            tags[f"version.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return tags


# ----------------------------------------------------------------------------------------- units
#: Inside the code accuracies and shares are fractions (0.983); wherever a user reads them (MLflow, reports,
#: plots) they are percent (98.3), and differences of accuracies are points. The store's side of that
#: convention is applied here, when a result is logged and when it is read back: each metric below is
#: logged times 100, under the name on the right.
PERCENT_METRICS = {
    "acc_clean": "acc_clean", "acc_encrypted": "acc_encrypted", "acc_decrypted": "acc_decrypted",
    "acc_attacked": "acc_attacked", "val_attacked": "val_attacked", "val_encrypted": "val_encrypted",
    "worst_case_attacked": "worst_case_attacked", "scratch_accuracy": "scratch_accuracy",
    "encrypted_fraction": "encrypted_pct", "recovery": "recovery", "key_precision": "key_precision",
    "key_recall": "key_recall",
}
#: Every attack's accuracy in a summary run: `acc_attacked.NAME`.
PERCENT_PREFIXES = ("acc_attacked.",)
#: The tag that says a run's metrics follow `PERCENT_METRICS` (runs logged before it are read as they are).
UNITS_TAG, PERCENT = "units", "percent"
_FROM_STORE = {shown: name for name, shown in PERCENT_METRICS.items()}


def to_store(metrics: dict[str, float | None]) -> dict[str, float]:
    """Metrics as MLflow shows them: fractions as percent (renamed where the name says fraction)."""
    out = {}
    for name, value in metrics.items():
        if value is None:
            continue
        if name in PERCENT_METRICS or name.startswith(PERCENT_PREFIXES):
            out[PERCENT_METRICS.get(name, name)] = 100.0 * float(value)
        else:
            out[name] = float(value)
    return out


def from_store(metrics: dict[str, float]) -> dict[str, float]:
    """The inverse of `to_store`."""
    return {_FROM_STORE.get(name, name): (value / 100.0 if name in _FROM_STORE or name.startswith(PERCENT_PREFIXES)
                                          else value)
            for name, value in metrics.items()}


def same_metrics(a: dict[str, float], b: dict[str, float]) -> bool:
    """Whether two sets of metrics hold the same figures (a read-back percent divided by 100 may differ from
    the fraction it came from in the last bit)."""
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-12) for k in a)


def wait_for_server(uri: str, timeout: float) -> None:
    """Wait until the tracking server at an http(s) ``uri`` answers, at most ``timeout`` seconds (a server still
    starting gets them), else one line: MLflow's own client retries for over four minutes. Any HTTP answer
    will do (a proxy in front may refuse MLflow's ``/health``); other URIs are left to MLflow."""
    if not uri.startswith(("http://", "https://")):
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=max(0.1, min(5.0, deadline - time.monotonic()))).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except (ValueError, http.client.HTTPException) as err:  # no host, a bad port; a server that is not HTTP
            raise BenchError(f"tracking URI {uri!r} does not lead to an HTTP server: {first_line(err)}") from None
        except OSError as err:
            if time.monotonic() >= deadline:
                reason = getattr(err, "reason", err)
                raise BenchError(f"tracking server {uri} did not answer within {timeout:g} s "
                                 f"({getattr(reason, 'strerror', None) or reason}); check --tracking-uri, "
                                 "or raise --connect-timeout (jobs.connect_timeout)") from None
            time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))


class Tracker:
    """One experiment of an MLflow store, seen through job ids; a tracking server that does not answer
    within ``connect_timeout`` seconds is one line (`wait_for_server`)."""

    def __init__(self, uri: str, experiment: str, connect_timeout: float = 30.0) -> None:
        check_uri(uri)
        wait_for_server(uri, connect_timeout)
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        try:
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = (
                found.experiment_id
                if found is not None
                else self.client.create_experiment(experiment, artifact_location=default_artifact_root(uri))
            )
            for key, value in EXPERIMENT_TAGS.items():  # also on an experiment an older version created
                if found is None or found.tags.get(key) != value:
                    self.client.set_experiment_tag(self.experiment_id, key, value)
        except Exception as err:  # connection refused, bad URI, store errors: one line for the user
            raise BenchError(f"cannot open MLflow store {uri!r}: {first_line(err, 300)}") from None
        self.code = code_tags()
        self._recorded: set[str] | None = None  # job ids with a run in the store; None: not read yet
        self._finished: dict[str, JobResult] | None = None  # `finished` as last read; None: read again

    # ---------------------------------------------------------------------------------------- reading
    def runs(self, filter_string: str = "") -> list[Any]:
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string, max_results=1000, page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out

    def finished(self) -> dict[str, JobResult]:
        """Results of every job with a FINISHED run, by job id (the newest run wins). Also notes which jobs
        have runs at all, so logging a job looks for its old runs to remove only there. The store is read once
        per tracker, and again after the tracker logs a job (`log_result`): a sweep's report reads what its
        driver read rather than the whole store a second time (what others write meanwhile, a new tracker sees)."""
        if self._finished is not None:
            return dict(self._finished)
        found: dict[str, JobResult] = {}
        self._recorded = set()
        for run in sorted(self.runs(), key=lambda r: r.info.start_time):
            job_id = run.data.tags.get("job_id")
            if job_id and run.info.status == "FINISHED":
                found[job_id] = result_from_run(run)
            if job_id:
                self._recorded.add(job_id)
        self._finished = found
        return dict(found)

    def failures(self, finished: dict[str, JobResult] | None = None) -> dict[str, JobResult]:
        """The FAILED run of every job that has no FINISHED one, by job id (one record per job id); ``finished``
        is `finished()` where the caller has read it already."""
        failed = {r.data.tags.get("job_id"): result_from_run(r) for r in self.runs("attributes.status = 'FAILED'")}
        finished = self.finished() if finished is None else finished
        return {job_id: r for job_id, r in failed.items() if job_id and job_id not in finished}

    # ---------------------------------------------------------------------------------------- writing
    def open_sweep(self, sweep_id: str, name: str, params: dict[str, Any], job_ids: list[str]) -> str:
        """The sweep's parent run: reopened when the same config ran before, so reruns nest together. It
        keeps the plan's job ids (``jobs.json``), so a report covers this sweep's jobs and no others."""
        previous = self.runs(f"tags.sweep_id = '{sweep_id}' and tags.kind = 'sweep'")
        if previous:
            run_id = previous[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run_id = self.client.create_run(self.experiment_id, run_name=name,
                                            tags={"kind": "sweep", "sweep_id": sweep_id, **self.code}).info.run_id
            self._log(run_id, params=params)
        self.client.log_text(run_id, json.dumps(job_ids), SWEEP_JOBS)
        return run_id

    def latest_sweep(self) -> str | None:
        """The newest sweep run of the experiment."""
        sweeps = sorted(self.runs("tags.kind = 'sweep'"), key=lambda r: r.info.start_time, reverse=True)
        return sweeps[0].info.run_id if sweeps else None

    def sweep_jobs(self, run_id: str) -> set[str] | None:
        """The job ids a sweep run planned (None for a run that did not record them)."""
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self.client.download_artifacts(run_id, SWEEP_JOBS, tmp)
            except Exception:  # no such artifact: a sweep logged before job lists were kept
                return None
            return set(json.loads(Path(path).read_text()))

    def tag_sweep(self, run_id: str, tags: dict[str, str]) -> None:
        """Tags of the sweep run that a rerun may change (params are immutable): how its results are judged."""
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    def sweep_tag(self, run_id: str, key: str) -> str | None:
        return self.client.get_run(run_id).data.tags.get(key)

    def close_sweep(self, run_id: str, status: str, metrics: dict[str, float] | None = None,
                    started: float | None = None) -> None:
        """End the sweep's run as ``status``; its figures first, each driver invocation also as a run of its
        own under it (kind ``invocation``, started at ``started``, a time.time()), since the sweep's run spans
        every invocation; a store that takes no figures still gets the status, so no sweep is left RUNNING
        by a driver that exits."""
        with held():  # a stop waits for the sweep's run to be ended
            try:
                self._log(run_id, metrics=metrics or {})
                invocation = self.client.create_run(
                    self.experiment_id, run_name=f"invocation {time.strftime('%Y-%m-%d %H:%M:%S')}",
                    start_time=int(1000 * started) if started else None,
                    tags={PARENT_TAG: run_id, "kind": "invocation", **self.code}).info.run_id
                self._log(invocation, metrics=metrics or {})
                self.client.set_terminated(invocation, status=status)
            except Exception as err:
                raise self._write_error(err, f"record the sweep's figures ({status})", run_id, status) from None
            try:
                self.client.set_terminated(run_id, status=status)
            except Exception as err:
                raise self._write_error(err, f"end the sweep's run as {status}") from None

    def _write_error(self, err: Exception, what: str, run_id: str | None = None, status: str = "FAILED") -> BenchError:
        """A store write that failed, as one line naming what was being written; the run it leaves open (if
        any) is ended as ``status`` where the store still allows it."""
        if run_id is not None:
            with contextlib.suppress(Exception):
                self.client.set_terminated(run_id, status=status)
        return BenchError(f"tracking store {self.uri}: cannot {what}: {first_line(err, 300)}")

    def log_result(self, result: JobResult, parent_id: str) -> str:
        """The one run of a job: its earlier runs, FAILED or FINISHED (a retry, a rebuild after its file was
        lost), are removed once this one is logged, so the store holds exactly one record per job id (looked
        for among the jobs with runs when `finished` read the store, and those this tracker logged; without
        that read, every job)."""
        tags = {**result.tags, PARENT_TAG: parent_id, "job_id": result.job_id, "kind": result.kind, **self.code,
                UNITS_TAG: PERCENT}
        if result.error:
            tags["error"] = result.error[:MAX_TAG]
        run_id = None
        self._finished = None
        with held():  # a stop waits for the run to be written whole: torn, it could leave the store locked
            try:
                run_id = self.client.create_run(self.experiment_id, run_name=result.name, tags=tags).info.run_id
                self._log(run_id, params=result.params, metrics=to_store(result.metrics))
                for name, text in result.artifacts.items():
                    self.client.log_text(run_id, text, name)
                self.client.set_terminated(run_id, status=result.status)
                if self._recorded is None or result.job_id in self._recorded:
                    for old in self.runs(f"tags.job_id = '{result.job_id}'"):
                        if old.info.run_id != run_id:
                            self.client.delete_run(old.info.run_id)
            except Exception as err:  # a full disk, a server gone: one line; the half-written run is not left RUNNING
                raise self._write_error(err, f"record job {result.name}", run_id) from None
        if self._recorded is not None:
            self._recorded.add(result.job_id)
        return run_id

    def log_artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    def log_table(self, run_id: str, rows: list[dict[str, Any]], artifact_file: str) -> None:
        """``rows`` as an MLflow table (the UI shows it as one, and `mlflow.load_table` reads it), replacing an
        earlier one: `MlflowClient.log_table` would append a rerun's rows to it. So the file is written in
        its format and the run tagged as it does."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            pd.DataFrame(rows).to_json(path, orient="split", index=False, date_format="iso")
            folder = str(Path(artifact_file).parent)
            self.client.log_artifact(run_id, str(path), None if folder == "." else folder)
        logged = json.loads(self.client.get_run(run_id).data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
        entry = {"path": artifact_file, "type": "table"}
        if entry not in logged:
            self.client.set_tag(run_id, MLFLOW_LOGGED_ARTIFACTS, json.dumps([*logged, entry]))

    def _log(self, run_id: str, params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None) -> None:
        now = int(time.time() * 1000)
        ps = [Param(k, str(v)[:MAX_PARAM]) for k, v in (params or {}).items()]
        ms = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None]
        for chunk in _chunks(ps, 100):
            self.client.log_batch(run_id, params=chunk)
        for chunk in _chunks(ms, 1000):
            self.client.log_batch(run_id, metrics=chunk)


def result_from_run(run: Any) -> JobResult:
    """A JobResult read back from MLflow (params come back as strings, metrics in the code's units)."""
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    percent = tags.pop(UNITS_TAG, None) == PERCENT
    return JobResult(
        job_id=tags.get("job_id", ""),
        kind=tags.get("kind", ""),
        name=run.info.run_name or "",
        status=run.info.status,
        params=dict(run.data.params),
        metrics=from_store(dict(run.data.metrics)) if percent else dict(run.data.metrics),
        tags=tags,
        error=tags.get("error"),
    )
