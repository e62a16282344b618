"""Signals as exceptions: a long command stops along its own cleanup paths (finally blocks, Ray's shutdown, a
child server ended) when a scheduler, `kill` or a closed terminal signals it, not on the spot."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def raising_on(signals: tuple[signal.Signals, ...], exception: type[BaseException]) -> Iterator[None]:
    """Inside, each of ``signals`` raises ``exception`` in the main thread; the earlier handlers come back after."""
    def handler(_signum: int, _frame: object) -> None:
        raise exception

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, earlier in previous.items():
            signal.signal(s, earlier)
