"""`advparams ui`: refusals (one line, exit 2), and SIGTERM or SIGINT end the MLflow server with it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import cli

from bench.sweep.tracking import Tracker
from bench.sweep.ui import check_port

UI_START = 240.0  # the server's start on a loaded 2-core machine; a deadline, not a timing assertion


def _store(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "exp")
    tracker.open_sweep("s", "sweep", {}, [])
    return uri


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> list[str]:
    """The command lines of the processes still in process group ``pgid``."""
    out = subprocess.run(["ps", "-eo", "pgid=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split(None, 1)[0] == str(pgid)]


def test_a_missing_store_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = cli(capsys, "ui", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}")
    assert run.code == 2 and run.err.count("\n") == 1 and "no MLflow store" in run.err
    assert not (tmp_path / "none.db").exists(), "a missing store must not be created"


def test_a_taken_port_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = _store(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        run = cli(capsys, "ui", "--tracking-uri", uri, "--port", holder.getsockname()[1])
    assert run.code == 2 and run.err.count("\n") == 1 and "is taken" in run.err, run.err


def test_a_tracking_server_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    run = cli(capsys, "ui", "--tracking-uri", "http://127.0.0.1:1")
    assert run.code == 2 and "serves its own UI" in run.err


def test_an_unknown_experiment_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = cli(capsys, "ui", "nope", "--tracking-uri", _store(tmp_path), "--port", _free_port())
    assert run.code == 2 and "no experiment named 'nope'" in run.err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_the_server_and_every_process_it_started(tmp_path: Path, sig: signal.Signals) -> None:
    uri, port = _store(tmp_path), _free_port()
    ui = subprocess.Popen([sys.executable, "-m", "bench.cli", "ui", "--tracking-uri", uri, "--port", str(port)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                          env={**os.environ, "COLUMNS": "400"})
    try:
        line = ui.stdout.readline()  # printed once the server answers
        assert f"http://127.0.0.1:{port}/#/experiments/" in line, (line, ui.stderr.read() if ui.poll() else "")
        server = [p for p in _children(ui.pid)]
        assert server, "the server runs in a child process"
        ui.send_signal(sig)
        assert ui.wait(timeout=30) == 0
        assert "stopped" in ui.stdout.read()
        deadline = time.monotonic() + 15
        while any(_group_alive(pgid) for pgid in server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for pgid in server for p in _group_alive(pgid)], "a server process outlived advparams ui"
        check_port("127.0.0.1", port)  # nothing listens there any more
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    """The process groups of ``pid``'s children (the server leads its own)."""
    out = subprocess.run(["ps", "-eo", "ppid=,pgid="], capture_output=True, text=True).stdout
    return sorted({int(pgid) for ppid, pgid in (line.split() for line in out.splitlines()) if int(ppid) == pid})
