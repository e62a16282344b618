"""Signals as exceptions: a long command stops along its own cleanup paths (finally blocks, Ray's shutdown, a
child server ended) when a scheduler, `kill` or a closed terminal signals it, not on the spot; and held back
while a write that must not be torn (a result into the store) finishes."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

#: The signals that stop a command: Ctrl-C, a scheduler's or `kill`'s SIGTERM, a closed terminal's SIGHUP.
STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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


@contextmanager
def held(signals: tuple[signal.Signals, ...] = STOPPING) -> Iterator[None]:
    """Inside, ``signals`` wait: each that arrives goes to the handler it had once the block has ended, so a write
    in flight is finished rather than torn by the exception a handler raises (an interrupt inside a store's
    transaction can leave it locked, and the sweep's run unended). Outside the main thread, where Python runs
    no handler, it holds nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[tuple[int, FrameType | None]] = []
    previous = {s: signal.signal(s, lambda number, frame: arrived.append((number, frame))) for s in signals}
    try:
        yield
    finally:
        for s, earlier in previous.items():
            signal.signal(s, earlier)
        for number, frame in arrived:
            earlier = previous[signal.Signals(number)]
            if callable(earlier):
                earlier(number, frame)  # raises, as it would have inside: the exception leaves this block
            elif earlier == signal.SIG_DFL:
                signal.raise_signal(number)
