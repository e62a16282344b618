"""Running `advparams` in-process or as the installed console script, and reading what it printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.cli import main

#: The console script pip installed beside this interpreter (the real entry point, not bench.cli).
ADVPARAMS = Path(sys.executable).with_name("advparams")
PERCENT = r"\d+\.\d\d"  # how the CLI prints an accuracy


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> Run:
    """``bench.cli.main(argv)`` in this process, with what it printed on stdout and stderr."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return Run(code, out, err)


def script(*argv: object, cwd: Path, env: Mapping[str, str] | None = None) -> Run:
    """The installed ``advparams`` console script in a subprocess (one torch thread: the cores are shared)."""
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    done = subprocess.run([str(ADVPARAMS), *map(str, argv)], cwd=cwd, env=environ, capture_output=True, text=True,
                          timeout=120, check=False)
    return Run(done.returncode, done.stdout, done.stderr)


def assert_refused(run: Run, *fragments: str) -> str:
    """Exit code 2 and exactly one stderr line, `advparams: error: ...`, naming every fragment; no traceback.

    Blank lines are not counted: a progress bar on a non-terminal stderr leaves one (a known bug, see
    test_cli.py::test_error_inside_a_progress_bar_is_exactly_one_line).
    """
    assert run.code == 2, (run.code, run.err)
    assert "Traceback" not in run.err
    lines = [line for line in run.err.splitlines() if line.strip()]
    assert len(lines) == 1, run.err
    assert lines[0].startswith("advparams: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def accuracy_after(text: str, label: str) -> str:
    """The accuracy printed right after ``label`` (e.g. 'test accuracy'), as the CLI wrote it."""
    match = re.search(rf"{re.escape(label)} ({PERCENT}) %", text)
    assert match, (label, text)
    return match.group(1)


def table_row(text: str, first_cell: str) -> list[str]:
    """The cells of the rich table row starting with ``first_cell`` (or the only data row when '')."""
    rows = [[c.strip() for c in line.strip().strip("│").split("│")] for line in text.splitlines()
            if line.lstrip().startswith("│")]
    found = [r for r in rows if not first_cell or r[0] == first_cell]
    assert len(found) == 1, (first_cell, text)
    return found[0]


def files_in(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: what a refused command must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
