"""One kind of user-facing error and one way to shorten a library's message to a line.

Every package's refusal (``ProtectError``, ``AttackError``, ``BenchError``, a bad declared parameter)
derives from ``UserError``, so the command line prints any of them as ``advparams: error: <message>``
and exits with code 2.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: the operation was refused, its message is one line naming what is wrong."""


def first_line(err: BaseException, limit: int | None = None) -> str:
    """An exception's message cut to its first line (and ``limit`` characters); its type when empty."""
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line[:limit] if limit is not None else line
