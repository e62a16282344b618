"""One driver per tracking store: a second is refused naming the first, before it creates or touches the
store; a driver that died holds no lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_helpers import tiny_config

from bench.errors import BenchError
from bench.sweep.driver import run_sweep
from bench.sweep.lock import DriverLock, lock_path
from bench.sweep.storage import Storage

HOLD = """
import sys, time
from pathlib import Path
from bench.sweep.lock import DriverLock
with DriverLock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_driver_is_refused_before_it_creates_the_store(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    database = Path(cfg.tracking.uri.removeprefix("sqlite:///"))
    path = lock_path(cfg.tracking.uri, Storage.at(tmp_path / "storage"), cfg.experiment)
    assert path == Path(f"{database}.driver.lock")
    with DriverLock(path), pytest.raises(BenchError) as refused:
        run_sweep(cfg)
    message = str(refused.value)
    assert message.startswith("another driver is running on this store") and f"pid {os.getpid()}" in message
    assert "\n" not in message
    assert not database.exists(), "the store's schema is created under the lock, so not by a refused driver"


def test_a_driver_that_died_leaves_no_lock(tmp_path: Path) -> None:
    path = tmp_path / "store.db.driver.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BenchError, match=f"pid {holder.pid}"):
            DriverLock(path).__enter__()
    finally:
        holder.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel drops the lock
        holder.wait()
    with DriverLock(path) as lock:  # taken at once, though the file is still there with the dead driver's name
        assert f"pid {os.getpid()}" in lock.path.read_text()


def test_a_tracking_server_sweep_locks_in_its_storage_per_experiment(tmp_path: Path) -> None:
    assert lock_path("http://127.0.0.1:5000", Storage.at(tmp_path), "quick") == tmp_path / ".driver-quick.lock"


def test_an_object_store_sweep_locks_on_the_drivers_machine(tmp_path: Path) -> None:
    """An object store takes no flock: beside a SQLite file as ever, else on this machine per server and experiment."""
    s3 = Storage.at("s3://bucket/sweeps")
    assert lock_path(f"sqlite:///{tmp_path}/mlflow.db", s3, "quick") == tmp_path / "mlflow.db.driver.lock"
    one, other = (lock_path(uri, s3, "quick") for uri in ("http://a:5000", "http://b:5000"))
    assert one != other and one.name.endswith("-quick.lock") and not str(one).startswith("s3:")
    with DriverLock(one), pytest.raises(BenchError, match="another driver is running on this store"), DriverLock(one):
        pass
