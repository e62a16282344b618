"""Progress bars for long work (training, encryption, tuning), drawn on stderr with rich.

Long operations take a callback ``progress(done, total)``; ``progress_bar`` turns one into a bar.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

ProgressFn = Callable[[int, int], None]

_console = Console(stderr=True)


@contextmanager
def progress_bar(description: str) -> Iterator[ProgressFn]:
    """Yield a ``progress(done, total)`` callback that draws a transient bar while the block runs."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=_console,
        transient=True,
        disable=not _console.is_terminal,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
