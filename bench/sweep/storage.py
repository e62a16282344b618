"""Where a sweep's files live: the one place that knows it.

A storage is a folder every node reaches (a local disk on one machine, NFS on a cluster), or an object store
every node reaches, named by any URL fsspec knows (``s3://bucket/prefix``, ``gs://...``; s3 needs the
``s3`` extra). Jobs read and write plain files at the paths `Storage` gives (`baseline`, `encrypted`, `key`,
`study`). In a folder those are the stored files themselves, and `fetch` and `publish` do nothing: a local
sweep works as it always has. With an object store they are working copies in a private folder of the job's
own (`Storage.for_job`, removed when the job ends): `fetch` downloads an object there, `publish` uploads the
copy. The driver only reads what is stored (`exists`, `sha256`), and writes one file of its own: the sweep's
studies in one journal (`studies`).

Keys: in a folder, ``keys/`` is mode 0700 and each key 0600. An object store has no modes: a key object is
uploaded with S3's canned ACL ``bucket-owner-full-control`` (it grants no one else; it is the one ACL that a
bucket with ACLs disabled also takes), never a public one, and who may read ``keys/`` is the store's access
control's business (the README says what it must give).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError
from common.errors import first_line
from common.files import sha256

if TYPE_CHECKING:
    from bench.sweep.plan import AttackJob, EncryptJob, TrainJob

FOLDERS = ("baselines", "encrypted", "studies", "keys")
PRIVATE = "keys"  # the folder whose files no one but the sweep may read

#: Extra arguments of an upload to a key's object, by the file system's protocol.
PRIVATE_UPLOAD: dict[str, dict[str, Any]] = {"s3": {"ACL": "bucket-owner-full-control"}}


def is_url(where: str | os.PathLike[str]) -> bool:
    """Whether ``where`` names an object store (``PROTOCOL://...``) rather than a folder (``file://`` is a folder)."""
    text = str(where)
    return "://" in text and not text.startswith("file://")


@dataclass(frozen=True)
class Storage:
    """``root``: the folder (absolute) or URL where files are stored; ``local``: where jobs read and write
    them (the folder itself, or a job's working folder for an object store)."""

    root: str
    local: Path

    @classmethod
    def at(cls, where: str | os.PathLike[str]) -> Storage:
        """The storage at ``where``: a folder (resolved, so every process names the same one) or a URL. An
        object store's paths are named under the system's temporary folder until `for_job` gives a job its
        own working folder; the driver only names them and never writes there."""
        if not is_url(where):
            folder = Path(str(where).removeprefix("file://")).resolve()
            return cls(str(folder), folder)
        return cls(str(where).rstrip("/"), Path(tempfile.gettempdir()) / "advparams-storage")

    @contextmanager
    def for_job(self) -> Iterator[Storage]:
        """The storage a job works through: this one for a folder; for an object store, one whose working
        copies live in a new private folder (mode 0700) on this machine, removed, keys and all, when the job
        ends, however it ends."""
        if not self.remote:
            yield self.create()
            return
        work = Path(tempfile.mkdtemp(prefix="advparams-job-"))
        try:
            yield Storage(self.root, work).create()
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @property
    def remote(self) -> bool:
        return is_url(self.root)

    @cached_property
    def _fs(self) -> tuple[Any, str]:
        """The fsspec file system of an object store and the root's path in it; one line when fsspec does not
        know the protocol or its package is missing."""
        import fsspec

        try:
            return fsspec.core.url_to_fs(self.root)
        except (ImportError, ValueError) as err:
            raise BenchError(f"storage {self.root}: {first_line(err)}") from None

    # ------------------------------------------------------------------------------------------ where files are
    def baseline(self, job: TrainJob) -> Path:
        return self.local / "baselines" / f"{job.id}.safetensors"

    def encrypted(self, job: EncryptJob) -> Path:
        return self.local / "encrypted" / f"{job.id}.safetensors"

    def key(self, job: EncryptJob) -> Path:
        return self.local / PRIVATE / f"{job.id}.key"

    def study(self, job: AttackJob) -> Path:
        return self.local / "studies" / f"{job.id}.journal"

    @property
    def studies(self) -> Path:
        """The journal the driver collects every finished attack job's study into, named by job id, for
        optuna-dashboard: in a folder, ``studies.journal`` in it; for an object store, on the driver's machine
        (a journal needs a POSIX file and one writer), under the system's temporary folder, one per store."""
        if not self.remote:
            return self.local / "studies.journal"
        store = hashlib.sha256(self.root.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / "advparams-studies" / f"{store}.journal"

    def where(self, path: Path) -> str:
        """Where the file at ``path`` is stored, as a user would look for it: the path, or the object's URL."""
        return f"{self.root}/{self._relative(path)}" if self.remote else str(path)

    def _private(self, path: Path) -> bool:
        return path.parent == self.local / PRIVATE

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.local).as_posix()

    def _object(self, path: Path) -> str:
        return f"{self._fs[1].rstrip('/')}/{self._relative(path)}"

    # ----------------------------------------------------------------------------------------- making the folders
    def create(self) -> Storage:
        """Make the local folders; the key folder readable by its owner only."""
        for sub in FOLDERS:
            (self.local / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.local / PRIVATE, 0o700)
        return self

    def check_writable(self) -> Storage:
        """Write and remove a file in each folder (an object under each prefix): a storage no job could write
        is refused before any job runs, not found by every job."""
        probe = f".probe-{os.getpid()}"
        fs = self._fs[0] if self.remote else None
        try:
            if fs is not None:
                for sub in FOLDERS:
                    target = f"{self._object(self.local / sub)}/{probe}"
                    fs.pipe_file(target, b"", **(PRIVATE_UPLOAD.get(_protocol(fs), {}) if sub == PRIVATE else {}))
                    fs.rm_file(target)
            else:
                self.create()
                for sub in FOLDERS:
                    (self.local / sub / probe).write_bytes(b"")
                    (self.local / sub / probe).unlink()
        except OSError as err:
            where = f" ({err.filename})" if getattr(err, "filename", None) else ""
            raise BenchError(f"storage {self.root} cannot be written: {err.strerror or first_line(err)}{where}") from None
        except Exception as err:  # an object store's client raises its own errors (credentials, a missing bucket)
            raise BenchError(f"storage {self.root} cannot be written: {type(err).__name__}: {first_line(err)}") from None
        return self

    # ---------------------------------------------------------------------------------------------- moving files
    def fetch(self, path: Path) -> Path:
        """Make the stored file readable at ``path``: downloaded from an object store, as it is in a folder.
        Raises ``FileNotFoundError`` when nothing is stored there."""
        if self.remote:
            fs, _ = self._fs
            fs.get_file(self._object(path), str(path))
            if self._private(path):
                os.chmod(path, 0o600)
        return path

    def publish(self, path: Path) -> None:
        """Store the file a job wrote at ``path``: uploaded to an object store (a key privately); in a folder it
        is stored already."""
        if self.remote:
            fs, _ = self._fs
            extra = PRIVATE_UPLOAD.get(_protocol(fs), {}) if self._private(path) else {}
            fs.put_file(str(path), self._object(path), **extra)

    def sha256(self, path: Path) -> str | None:
        """The SHA-256 of the file stored for ``path`` (an object store's object read as a stream, never kept),
        or None when there is none. Raises ``OSError`` when it cannot be read."""
        if not self.remote:
            return sha256(path) if path.is_file() else None
        fs, _ = self._fs
        digest = hashlib.sha256()
        try:
            with fs.open(self._object(path), "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        except FileNotFoundError:
            return None
        return digest.hexdigest()

    def exists(self, path: Path) -> bool:
        """Whether a file is stored for ``path``."""
        if not self.remote:
            return path.is_file()
        fs, _ = self._fs
        try:
            return fs.isfile(self._object(path))
        except Exception as err:  # an object store's client raises its own errors (credentials, a missing bucket)
            raise BenchError(f"storage {self.root} cannot be read: {type(err).__name__}: {first_line(err)}") from None


def _protocol(fs: Any) -> str:
    protocol = fs.protocol
    return protocol if isinstance(protocol, str) else protocol[0]
