"""BENCHMARKS.md: the machine a figure was measured on, and the sections the benchmarks rewrite.

Each benchmark (`python -m benchmarks.paper`, `python -m benchmarks.speed`) prints its tables and, with `--write`,
replaces only its own section of the file, so the two can be rerun independently.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import ray
import torch


@dataclass(frozen=True)
class Machine:
    """What the figures were measured on."""
    cpu: str
    cores: int
    gpu: str
    python: str
    torch: str
    ray: str
    date: str
    load: float  # 1-minute load average when the benchmark started: other work on the machine shows here

    @classmethod
    def current(cls) -> Machine:
        return cls(
            cpu=_cpu_model(), cores=os.cpu_count() or 1,
            gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            python=platform.python_version(), torch=torch.__version__, ray=ray.__version__,
            date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), load=os.getloadavg()[0],
        )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def update_section(path: Path, name: str, text: str) -> None:
    """Replace the ``<!-- name:begin -->`` ... ``<!-- name:end -->`` section of ``path`` (appended if absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text}{end}\n"
    old = path.read_text() if path.exists() else "# Benchmarks\n\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + block
    path.write_text(new)
