"""Atomic file writes (a reader sees the old file or the new one, never a partial one) and file digests."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def sha256(path: str | os.PathLike[str]) -> str:
    """The file's SHA-256, hex: what a job records of each file it writes, and checks before reading one."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: str | os.PathLike[str], content: bytes | Callable[[str], None], *, mode: int = 0o644) -> None:
    """Write ``content`` (bytes, or a function that writes a file at the path it is given) to a temporary
    file beside ``path`` with permission bits ``mode``, then rename it over ``path``. The temporary file is
    created private (mkstemp's 0600) and gets ``mode`` only when complete, so a 0600 file is never readable
    by others, not even for a moment. Raises ``OSError`` (nothing is left behind) when it cannot."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        if callable(content):
            os.close(fd)
            content(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)  # after writing: a writer may have recreated the file with its own mode
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
