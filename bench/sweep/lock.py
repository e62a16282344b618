"""One driver per tracking store: an exclusive lock a sweep's driver holds from before it opens the store
(so the store's schema is created under it) until it exits.

Two drivers on one store would run every job twice, and two started together on a new SQLite store race to
create its schema (one store was left unusable that way). The lock is an advisory ``flock`` on a file beside
the SQLite database (a store that takes one writer at a time; any experiment), or, for a tracking server,
in the sweep's storage folder, per experiment. An object store takes no ``flock``: with one, a tracking
server's lock is a file on the driver's machine (under the system's temporary folder, named by the server
and the experiment), which keeps out a second driver on that machine only: drive each experiment from one
machine. The kernel releases a lock when the holder's process ends, however it
ends, so a lock is never stale: the holder written into the file is only there to name it in the refusal.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import tempfile
import time
from pathlib import Path
from types import TracebackType

from bench.errors import BenchError
from bench.sweep.storage import Storage


def lock_path(uri: str, storage: Storage, experiment: str) -> Path:
    """The lock file of a sweep on store ``uri``: beside a SQLite file, else in a storage folder per
    experiment, else (an object store) on this machine per server and experiment."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///") + ".driver.lock")
    if not storage.remote:
        return Path(storage.root) / f".driver-{experiment}.lock"
    server = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "advparams-locks" / f"{server}-{experiment}.lock"


class DriverLock:
    """``with DriverLock(path):`` holds the lock, or refuses in one line naming the driver that holds it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = None

    def __enter__(self) -> DriverLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
        except OSError as err:
            raise BenchError(f"cannot create the driver lock {self.path}: {err.strerror or err}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "a driver that has not written its name yet"
            handle.close()
            raise BenchError(f"another driver is running on this store ({holder}; lock {self.path}): "
                             "wait for it to end, or stop it; a driver that died holds no lock") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"host {socket.gethostname()}, pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
