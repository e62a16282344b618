"""A config's jobs, one after another in this process: no Ray, no MLflow.

    python -m bench.sweep.loop CONFIG [--set PATH=VALUE] [--threads N] [--result FILE]

The baseline the speed benchmark holds the sweep driver against (same jobs, same `bench.sweep.jobs.run_job`), and
a way to step through a config's jobs in one debuggable process. Files land in the config's storage folder
as a sweep's would; nothing is tracked, and every job runs again (a loop has no memory of finished jobs).
With --result, the figures are also written there as JSON: jobs run, seconds, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.errors import BenchError
from bench.sweep.config import SweepConfig, load_config
from bench.sweep.jobs import JobContext, run_job
from bench.sweep.plan import dependencies, plan_for
from bench.sweep.results import JobResult


def run_loop(cfg: SweepConfig, *, threads: int = 1) -> dict[str, JobResult]:
    """Every job of ``cfg`` in plan order, each given its upstream results; a failing job stops the loop."""
    ctx = JobContext.for_config(cfg, threads)
    results: dict[str, JobResult] = {}
    for job in plan_for(cfg).jobs:
        results[job.id] = run_job(job, ctx, *[results[d] for d in dependencies(job)])
    return results


def rss_mib(ru_maxrss: int) -> float:
    """A peak resident set size from getrusage (KiB on Linux, bytes on macOS) in MiB."""
    return ru_maxrss / 2**20 if sys.platform == "darwin" else ru_maxrss / 2**10


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sweep.loop", description=__doc__.split("\n\n")[0])
    p.add_argument("config", type=Path, help="sweep config, e.g. configs/quick.yaml")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override a config key")
    p.add_argument("--threads", type=int, default=1, help="torch threads for every job (default: %(default)s)")
    p.add_argument("--result", type=Path, help="write jobs run, seconds and peak RSS here as JSON")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        start = time.perf_counter()
        results = run_loop(cfg, threads=args.threads)
    except BenchError as err:
        print(f"bench.sweep.loop: error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    figures = {"jobs": len(results), "seconds": seconds,
               "peak_rss_mib": rss_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)}
    print(f"{figures['jobs']} jobs in {figures['seconds']:.1f} s")
    if args.result:
        args.result.write_text(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
