"""`advparams ui`: the MLflow UI on a sweep's store, as a process that cleans up after itself.

The server runs in its own process group, so SIGTERM, SIGINT (Ctrl-C) or SIGHUP to this process ends it and
every process it started: nothing is left listening. A missing store and a taken port are refused before
anything starts; an unknown experiment ends the server just started. One uvicorn worker and no job executor:
MLflow's defaults (four workers, each importing MLflow) take 30 s and more to answer on a 2-core machine. The
server starts first and the experiment is looked up while it starts (this module imports neither MLflow nor
torch until then): on a 2-core machine at load 2.2 the link came after 9 s (median of 3), 13 s with the
lookup and `bench.sweep.tracking`'s imports before the start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from bench.errors import BenchError
from bench.signals import raising_on
from bench.sweep.store import (
    COMPARISON_VIEW_KEY,
    COMPARISON_VIEW_TAG,
    check_uri,
    default_artifact_root,
)
from common.errors import first_line

#: How long the server may take to answer before the command gives up.
START_TIMEOUT = 180.0


class _Stop(Exception):
    """A signal asked this process to end."""


def check_port(host: str, port: int) -> None:
    """One line for a port another process listens on (MLflow would print the URL, fail, and exit 0). With
    SO_REUSEADDR, as the server binds: connections of an earlier server still closing do not count."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as err:
        raise BenchError(f"port {port} on {host} is taken ({err.strerror or err}); pick another with --port") from None


def server_command(uri: str, host: str, port: int) -> list[str]:
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host,
               "--port", str(port), "--workers", "1"]
    root = default_artifact_root(uri)
    return [*command, "--default-artifact-root", root] if root else command


def experiment_url(base: str, experiment_id: str, comparison: bool = True) -> str:
    """The experiment's comparison view (`bench.sweep.tracking.COMPARISON_VIEW`; without it, its runs) in
    MLflow's model-training mode (its GenAI mode hides the runs)."""
    query = {"viewStateShareKey": COMPARISON_VIEW_KEY} if comparison else {}
    query["workflowType"] = "machine_learning"
    return f"{base}/#/experiments/{experiment_id}/runs?{urllib.parse.urlencode(query)}"


def serve(uri: str, host: str, port: int, experiment: str | None,
          announce: Callable[[str], None] = print) -> None:
    """Run the MLflow UI on the store ``uri`` until a signal ends it; ``announce`` gets the URL once the server
    answers (of ``experiment``'s comparison when given, else of the newest sweep's)."""
    if uri.startswith(("http://", "https://")):
        raise BenchError(f"{uri} is a tracking server: open it in a browser, it serves its own UI")
    check_uri(uri, must_exist=True)
    check_port(host, port)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    start = time.monotonic()
    # SIGTERM, SIGINT and SIGHUP raise `_Stop`, so the server is ended before this process goes.
    with tempfile.TemporaryFile() as log, raising_on((signal.SIGTERM, signal.SIGINT, signal.SIGHUP), _Stop):
        server = subprocess.Popen(server_command(uri, host, port), stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            found = _experiment(uri, experiment)  # while the server starts: both take seconds
            base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
            _wait_until_answering(base, server, log)
            url = experiment_url(base, found.experiment_id, COMPARISON_VIEW_TAG in found.tags) if found else base
            announce(f"MLflow UI at {url} (answered after {time.monotonic() - start:.1f} s); Ctrl-C stops it")
            server.wait()
            raise BenchError(f"the MLflow server ended by itself (exit code {server.returncode}): {_last_line(log)}")
        except _Stop:
            announce("MLflow UI stopped")
        finally:
            _end(server)


def _experiment(uri: str, name: str | None) -> Any:
    """The experiment ``name`` (refused when the store has no such experiment), else the one updated last
    (None in a store without one)."""
    from mlflow.tracking import MlflowClient

    try:
        experiments = [e for e in MlflowClient(tracking_uri=uri).search_experiments() if e.name != "Default"]
    except Exception as err:  # not an MLflow database
        raise BenchError(f"cannot read MLflow store {uri}: {first_line(err, 200)}") from None
    if name is not None:
        found = [e for e in experiments if e.name == name]
        if not found:
            raise BenchError(f"no experiment named {name!r} in {uri}")
        return found[0]
    return max(experiments, key=lambda e: e.last_update_time or 0) if experiments else None


def _wait_until_answering(base: str, server: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise BenchError(f"the MLflow server did not start (exit code {server.returncode}): {_last_line(log)}")
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2).close()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise BenchError(f"the MLflow server did not answer within {START_TIMEOUT:g} s: {_last_line(log)}")


def _last_line(log) -> str:
    log.seek(0)
    lines = [line.strip() for line in log.read().decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _end(server: subprocess.Popen) -> None:
    """End the server's process group: SIGTERM, then SIGKILL for whatever is left after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=wait)
            if sig == signal.SIGTERM:
                _killpg_quietly(server.pid)  # workers the server left behind
            return
        except subprocess.TimeoutExpired:
            continue


def _killpg_quietly(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
