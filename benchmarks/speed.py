"""The speed benchmark: what encryption costs, what the harness adds, how a sweep scales, what a worker holds.

``python -m benchmarks.speed [--config configs/quick.yaml] [--set PATH=VALUE] [--write BENCHMARKS.md] [--workers N] [--repeats N] [--skip-cluster] [--encryption-only]``
prints one markdown fragment (machine, command, six tables) for BENCHMARKS.md; every figure in it comes
from this run. Measurements, with the torch threads of the config's jobs (``jobs.<kind>.num_cpus``):

1. Encryption cost: AdvParams at budgets of 8 to 256 scalars (the config's first ``--seeds`` seeds, its eps,
   target and options) with the one-scalar-per-pass loop (schedule ``fixed``, every owner sample) beside the defaults, on each
   of the config's data set and model pairs, plus Fashion-MNIST / LeNet-5 and CIFAR-10 / compact VGG when
   ``$ADVPARAMS_DATA_ROOT`` is set. Baselines are trained once and cached in the config's storage folder; the
   encryption's forward+backward passes and seconds (with the encrypt job's threads) are set against one
   training epoch of the same model on the same data (with the train job's threads and batch size), and
   the drop in test accuracy of each is printed beside its cost. ``--encryption-only`` runs this
   part alone (with the one epoch per model that its shares need).
2. Mixed precision and channels_last: one epoch and one evaluation of the same models under each setting
   of `common.acceleration`, on the compute device (CUDA when present).
3. Harness overhead: every job of the config through the `advparams sweep` command (local Ray with one CPU,
   MLflow on a fresh SQLite store, no report) against `python -m bench.sweep.loop`, the same job functions in one
   process; each command timed from its start to its end.
4. Scaling: jobs per minute on a local Ray with 1 to ``--workers`` CPUs (default 2) and on a simulated
   multi-node cluster (``ray.cluster_utils.Cluster``: a head with no CPUs and two one-CPU nodes).
5. A user's sweep: `advparams sweep CONFIG` as a new user runs it, in a fresh working folder, then the same
   command again once every job has finished (it must answer without starting Ray).
6. Peak memory: the peak RSS of the Ray worker that ran the one-CPU sweep, and of the plain loop's process.

Each sweep or loop runs as a command of its own with a fresh storage folder and store, so none inherits
another's warm Ray, imports or in-process data memo; all read the same data files (digits needs none).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
import torch
from ray.cluster_utils import Cluster
from rich.console import Console
from torch.utils.data import TensorDataset

import protect
from bench.errors import BenchError
from bench.sweep.config import (
    ModelEntry,
    SweepConfig,
    Training,
    load_config,
    parse_config,
)
from bench.sweep.driver import run_sweep
from bench.sweep.jobs import JobContext, run_train
from bench.sweep.loop import rss_mib
from bench.sweep.plan import EncryptJob, TrainJob, plan_for
from bench.sweep.results import BROKEN, HOLDS, Spread, Verdict, spread, verdict
from bench.sweep.storage import Storage
from bench.sweep.tracking import Tracker
from bench.zoo.baseline import compute_device
from bench.zoo.data import DATA_ROOT_ENV, DataSet
from bench.zoo.models import build_model
from bench.zoo.workflow import OWNER_BATCH, EncryptOutcome, encrypt_file
from benchmarks.benchfile import Machine, update_section
from common import acceleration
from common.acceleration import Acceleration
from common.errors import UserError
from common.training import accuracy, train

#: The encryption-cost targets run when the real data sets are available: these data sets' models in
#: configs/paper.yaml (one baseline per model, shared by the seeds).
PAPER_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "paper.yaml"
REAL_DATASETS = ("fashion_mnist", "cifar10")
#: A selection within this many points of the reference loop's drop (paired by seed) keeps the lock (#13).
DROP_MARGIN = 1.0
#: Budgets (scalars changed at most) at which encryption is timed, and the AdvParams options compared at each:
#: the one-scalar-per-pass loop (the reference) first, then the defaults.
SCALARS = (8, 16, 32, 64, 128, 256)
SELECTIONS = {
    "fixed": {"schedule": "fixed", "gradient_samples": 0},
    "adaptive": {"schedule": "adaptive", "gradient_samples": 0},
    "adaptive, 256": {"schedule": "adaptive", "gradient_samples": 256},
}
REFERENCE = "fixed"
#: Short timings are repeated until they add up to this many seconds (or MAX_RUNS), and the median kept.
MIN_TOTAL_SECONDS = 2.0
MAX_RUNS = 5
#: Ray's local-cluster switch: set only in the simulated cluster's subprocess (it binds loopback there).
LOOPBACK_CLUSTER_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
#: The simulated cluster: a head with no CPUs (it only schedules) and this many nodes of one CPU each.
CLUSTER_NODES = 2
#: Issue #13's goals for the quick sweep on a 2-core machine: a first run within, a finished rerun under (s).
FIRST_RUN_GOAL = 90.0
RERUN_GOAL = 5.0


# ------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class EncryptionCost:
    dataset: str
    model: str
    cell: str
    seed: int  # the grid's seed: the owner's samples and the method's
    selection: str  # a name in SELECTIONS
    owner_samples: int
    changed: int  # scalars the key holds
    steps: int  # passes over the owner samples, from the key's stats
    passes: int  # forward+backward passes over owner batches, from the key's stats
    seconds: float
    epoch_seconds: float  # one training epoch of the same model on the same data
    acc_clean: float
    acc_encrypted: float

    @property
    def epoch_share(self) -> float:
        return self.seconds / self.epoch_seconds

    @property
    def drop(self) -> float:
        """Test accuracy lost, in points."""
        return 100 * (self.acc_clean - self.acc_encrypted)


@dataclass(frozen=True)
class AccelerationTiming:
    """One training epoch and one test-set evaluation of a fresh model under one acceleration setting."""
    train_id: str  # the train job whose model and training settings were timed
    dataset: str
    model: str
    device: str
    amp: str  # the autocast dtype, or "off"
    channels_last: bool
    epoch_seconds: float
    eval_seconds: float
    accuracy: float  # test accuracy after that one epoch


@dataclass(frozen=True)
class SweepTiming:
    """One run of a config's jobs: by the sweep driver on some Ray, or by the plain loop."""
    label: str
    cpus: int  # CPUs the jobs could use at once
    done: int
    failed: int
    seconds: float
    peak_rss_mib: float | None = None  # of the worker (sweep) or the process (loop); None: not measured
    note: str = ""
    command_seconds: float = 0.0  # the whole subprocess, from its start to its end: Python, imports and all
    ray_start_seconds: float | None = None  # within ``seconds``: starting Ray (and the cluster's nodes); None: not timed
    ray_stop_seconds: float | None = None  # within ``seconds``: shutting them down

    @property
    def jobs_per_minute(self) -> float:
        return 60.0 * (self.done + self.failed) / self.seconds


@dataclass
class SpeedReport:
    machine: Machine
    command: str
    config: str
    counts: dict[str, int]
    encryption: list[EncryptionCost]
    acceleration: list[AccelerationTiming]
    cli: SweepTiming  # `advparams sweep --cpus 1`, the harness overhead's numerator: the median run
    loop: SweepTiming  # `python -m bench.sweep.loop`, its denominator: the median run
    pair_ratios: list[float]  # command over command of each (sweep, loop) pair, in the order they ran
    local: list[SweepTiming]  # the sweep driver on a local Ray with 1, 2, ... CPUs
    cluster: SweepTiming | None  # None: skipped
    first_run: float  # seconds of `advparams sweep CONFIG` in a fresh working folder, as a new user runs it
    rerun: float  # seconds of the same command again, every job finished
    notes: list[str] = field(default_factory=list)

    @property
    def ray_one(self) -> SweepTiming:
        return self.local[0]

    @property
    def overhead(self) -> float:
        """Sweep command over plain-loop command, same jobs, one CPU, each timed from its start to its end
        (the project's goal: <= 1.10)."""
        return self.cli.command_seconds / self.loop.command_seconds

    @property
    def inner_overhead(self) -> float:
        """The same ratio without Python's start and the imports (from planning to the end of each run)."""
        return self.cli.seconds / self.loop.seconds

    def markdown(self) -> str:
        m = self.machine
        total = sum(self.counts.values())
        kinds = ", ".join(f"{n} {k}" for k, n in self.counts.items())
        lines = [
            f"### Speed (`{self.command}`)",
            "",
            f"Machine: {m.cpu}, {m.cores} cores, GPU: {m.gpu}; Python {m.python}, torch {m.torch}, Ray {m.ray}; "
            f"{m.date}; 1-minute load average at start {m.load:.2f}.",
            f"Config `{self.config}`: {total} jobs ({kinds}); one torch thread per job.",
            *(f"Note: {n}" for n in self.notes),
            "",
            *encryption_table(self.encryption),
            "",
            "**Mixed precision and channels_last** (`jobs.amp`, `jobs.channels_last`: one training epoch and one "
            f"test-set evaluation of a fresh model, the median of up to {MAX_RUNS} runs; speed-up over float32 with the "
            "default layout; `auto` turns both on for CUDA only)",
            "",
            *_table(["data set", "model", "device", "autocast", "channels_last", "epoch (s)", "speed-up", "evaluation (ms)",
                     "speed-up", "test accuracy after the epoch"],
                    [[a.dataset, a.model, a.device, a.amp, "on" if a.channels_last else "off", f"{a.epoch_seconds:.3f}",
                      f"{base.epoch_seconds / a.epoch_seconds:.2f}", f"{1000 * a.eval_seconds:.2f}",
                      f"{base.eval_seconds / a.eval_seconds:.2f}", f"{100 * a.accuracy:.1f} %"]
                     for a, base in _with_baseline(self.acceleration)]),
            "",
            "**Harness overhead** (all jobs, one CPU, each run a command of its own. \"command\" runs from the command's "
            "start to its end: Python's start and every import included. \"inner\" runs from planning to the end: "
            "for the sweep, Ray's start and shutdown, the worker's start-up and MLflow logging included.)",
            "",
            *_table(["run", "jobs", "command s", "ratio", "inner s", "ratio"],
                    [[self.cli.label, _jobs(self.cli), f"{self.cli.command_seconds:.1f}", f"{self.overhead:.3f}",
                      f"{self.cli.seconds:.1f}", f"{self.inner_overhead:.3f}"],
                     [self.loop.label, _jobs(self.loop), f"{self.loop.command_seconds:.1f}", "1.000",
                      f"{self.loop.seconds:.1f}", "1.000"]]),
            "",
            f"{len(self.pair_ratios)} pair(s) of runs, sweep then loop, one after the other; the table holds each command's "
            f"median run. Command ratio of each pair: {', '.join(f'{r:.3f}' for r in self.pair_ratios)}.",
            "",
            f"**Scaling** (sweep driver, the config's jobs; seconds from Ray's start, which for the cluster includes "
            f"starting its {CLUSTER_NODES + 1} nodes, to the sweep's end; Ray's shutdown follows)",
            "",
            *_table(["setting", "CPUs", "jobs", "seconds", "of which Ray's start", "Ray's shutdown (after)", "jobs per minute",
                     "speed-up"],
                    [_scaling_row(t, self.ray_one) for t in self.local]
                    + [_scaling_row(self.cluster, self.ray_one) if self.cluster is not None
                       else ["simulated cluster", str(CLUSTER_NODES), "skipped (--skip-cluster)", "", "", "", "", ""]]),
            "",
            "**A user's sweep** (`advparams sweep CONFIG` as a user runs it: the config's CPUs, the report written, in a "
            f"fresh working folder; then the same command again with every job finished; goals: within {FIRST_RUN_GOAL:g} s "
            f"and under {RERUN_GOAL:g} s on a 2-core machine)",
            "",
            *_table(["run", "jobs", "command s"],
                    [["first run, fresh folder", str(total), f"{self.first_run:.1f}"],
                     ["rerun, every job finished", "0 to run", f"{self.rerun:.1f}"]]),
            "",
            "**Peak memory** (peak RSS, `getrusage` ru_maxrss)",
            "",
            *_table(["process", "peak RSS (MiB)"],
                    [["Ray worker that ran the 1-CPU sweep's jobs", _peak(self.ray_one)],
                     ["plain loop's process (every job in one process)", _peak(self.loop)]]),
        ]
        return "\n".join(lines) + "\n"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _options(values: dict[str, object] | tuple) -> str:
    """Options as ``name=value`` (declared ``Param`` records: their defaults)."""
    pairs = values.items() if isinstance(values, dict) else ((p.name, p.default) for p in values)
    return ", ".join(f"`{k}={v}`" for k, v in pairs)


@dataclass(frozen=True)
class EncryptionCell:
    """One selection at one budget of one model, across the seeds measured; ``against_reference`` holds the
    per-seed paired drop differences from the reference loop (`REFERENCE`) against ``-DROP_MARGIN``:
    `results.BROKEN` there reads "within the margin", `results.HOLDS` "more than the margin below"."""
    runs: tuple[EncryptionCost, ...]
    against_reference: Verdict | None  # None for the reference itself

    def median(self, figure: Callable[[EncryptionCost], float]) -> float:
        return statistics.median(figure(e) for e in self.runs)

    def mean(self, figure: Callable[[EncryptionCost], float]) -> float:
        return statistics.fmean(figure(e) for e in self.runs)

    @property
    def drop(self) -> Spread:
        return spread([e.drop for e in self.runs])


def encryption_cells(rows: list[EncryptionCost]) -> list[EncryptionCell]:
    """``rows`` grouped across seeds by data set, model, budget and selection (in measured order), each set
    against the reference loop's drop on the same seeds."""
    groups: dict[tuple, list[EncryptionCost]] = {}
    for e in rows:
        groups.setdefault((e.dataset, e.model, e.cell, e.selection), []).append(e)
    cells = []
    for (dataset, model, cell, selection), runs in groups.items():
        against = None
        if selection != REFERENCE:
            reference = {e.seed: e.drop for e in groups.get((dataset, model, cell, REFERENCE), [])}
            against = verdict([e.drop - reference[e.seed] for e in runs if e.seed in reference], tolerance=-DROP_MARGIN)
        cells.append(EncryptionCell(tuple(runs), against))
    return cells


def _against_reference(v: Verdict | None) -> str:
    if v is None:
        return "(reference)"
    if v.lower is None:
        return f"{v.mean:+.1f} (one seed)"
    word = {BROKEN: f"within {DROP_MARGIN:g}", HOLDS: f"over {DROP_MARGIN:g} below"}.get(v.decision, v.decision)
    return f"{v.mean:+.1f} [{v.lower:+.1f}, {v.upper:+.1f}] {word}"


def encryption_table(rows: list[EncryptionCost]) -> list[str]:
    """The encryption-cost table, with its caption: one row per budget and selection, across seeds."""
    seeds = sorted({e.seed for e in rows})
    return [
        f"**Encryption cost** (AdvParams, seeds {', '.join(map(str, seeds))} (each seed draws the owner's samples "
        "and seeds the method; one baseline per model), the config's options and "
        + "; ".join(f"{name}: {_options(values)}" for name, values in SELECTIONS.items())
        + f" (defaults: {_options(protect.METHODS.get('advparams').options)}); a step is one pass over the owner samples, a "
        f"forward+backward pass one over an owner batch of up to {OWNER_BATCH} samples; seconds are the median of one "
        f"run per seed (with one seed, of up to {MAX_RUNS} runs), with the encrypt job's torch "
        "threads; one epoch is the model's training loop over the whole training split, with the train job's "
        "threads and batch size; scalars, passes and accuracies are means over seeds; the drop is in test accuracy, "
        f"and its difference from `{REFERENCE}` is paired by seed, with one-sided 95 % Student-t bounds, held "
        f"against a loss of {DROP_MARGIN:g} point: 'within' when the lower bound is above -{DROP_MARGIN:g})",
        "",
        *_table(["data set", "model", "budget", "selection", "owner samples", "scalars changed", "steps",
                 "forward+backward passes", "seconds", "one epoch (s)", "share of an epoch", "accuracy clean → encrypted",
                 "drop (points)", f"drop − {REFERENCE}"],
                [[c.runs[0].dataset, c.runs[0].model, c.runs[0].cell, c.runs[0].selection, str(c.runs[0].owner_samples),
                  f"{c.mean(lambda e: e.changed):.1f}", f"{c.mean(lambda e: e.steps):.1f}", f"{c.mean(lambda e: e.passes):.1f}",
                  f"{c.median(lambda e: e.seconds):.3f}", f"{c.median(lambda e: e.epoch_seconds):.3f}",
                  f"{100 * c.median(lambda e: e.epoch_share):.1f} %",
                  f"{100 * c.mean(lambda e: e.acc_clean):.1f} % → {100 * c.mean(lambda e: e.acc_encrypted):.1f} %",
                  f"{c.drop.mean:.1f} ± {c.drop.std:.1f}", _against_reference(c.against_reference)]
                 for c in encryption_cells(rows)]),
    ]


@dataclass
class EncryptionReport:
    """``--encryption-only``: the encryption-cost table alone."""
    machine: Machine
    command: str
    config: str
    encryption: list[EncryptionCost]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        m = self.machine
        lines = [
            f"### Encryption cost (`{self.command}`)",
            "",
            f"Machine: {m.cpu}, {m.cores} cores, GPU: {m.gpu}; Python {m.python}, torch {m.torch}; {m.date}; "
            f"1-minute load average at start {m.load:.2f}. Config `{self.config}`.",
            *(f"Note: {n}" for n in self.notes),
            "",
            *encryption_table(self.encryption),
        ]
        return "\n".join(lines) + "\n"


def _with_baseline(rows: list[AccelerationTiming]) -> list[tuple[AccelerationTiming, AccelerationTiming]]:
    """Each row beside the float32, default-layout row of the same data set and model."""
    base = {(a.dataset, a.model): a for a in rows if a.amp == "off" and not a.channels_last}
    return [(a, base[(a.dataset, a.model)]) for a in rows]


def _jobs(t: SweepTiming) -> str:
    return f"{t.done}" + (f" (+{t.failed} failed)" if t.failed else "")


def _scaling_row(t: SweepTiming, base: SweepTiming) -> list[str]:
    return [t.label, str(t.cpus), _jobs(t), f"{t.seconds:.1f}", f"{t.ray_start_seconds:.1f}", f"{t.ray_stop_seconds:.1f}",
            f"{t.jobs_per_minute:.1f}", f"{t.jobs_per_minute / base.jobs_per_minute:.2f}"]


def _peak(t: SweepTiming) -> str:
    return f"{t.peak_rss_mib:.0f}" if t.peak_rss_mib is not None else f"not measured ({t.note})"


def _median_run(runs: list[SweepTiming]) -> SweepTiming:
    """The run with the median command time (the lower middle one of an even count)."""
    return sorted(runs, key=lambda t: t.command_seconds)[(len(runs) - 1) // 2]


def _median_seconds(run: Callable[[], float], most: int = MAX_RUNS) -> float:
    """Median of ``run()`` (which returns seconds), repeated while short (at most ``most`` runs), so a fast
    step is not all noise."""
    times: list[float] = []
    while not times or (sum(times) < MIN_TOTAL_SECONDS and len(times) < most):
        times.append(run())
    return statistics.median(times)


# ----------------------------------------------------------------------------------- encryption cost
def real_models() -> dict[str, ModelEntry]:
    """`REAL_DATASETS`' models as configs/paper.yaml trains them."""
    paper = load_config(PAPER_CONFIG)
    return {d.name: d.models[0] for d in paper.datasets if d.name in REAL_DATASETS}


def encryption_configs(cfg: SweepConfig, data_root: str | None, seeds: int = 1) -> tuple[list[SweepConfig], list[str]]:
    """The configs whose AdvParams encryptions are timed: ``cfg`` itself, and `real_models` under ``cfg``'s
    protection settings when a data root holding them is given; each at the `SCALARS` budgets, on the first
    ``seeds`` of ``cfg``'s seeds. Returns them and notes on what was skipped."""
    if not 1 <= seeds <= len(cfg.seeds):
        raise BenchError(f"--seeds {seeds}: config {cfg.name} has {len(cfg.seeds)} seed(s); pick 1 to {len(cfg.seeds)}")
    raw = json.loads(cfg.model_dump_json())
    raw.update(seeds=cfg.seeds[:seeds],
               protect={**raw["protect"], "methods": ["advparams"], "match": {}, "max_params": list(SCALARS)})
    configs = [parse_config(raw, f"{cfg.name} (encryption cost)")]
    models = real_models()
    real = ", ".join(f"{d} / {m.name}" for d, m in models.items())
    if data_root is None:
        return configs, [f"{real} skipped: {DATA_ROOT_ENV} is unset"]
    datasets = [{"name": d, "models": [m.model_dump()]} for d, m in models.items()]
    return [*configs, parse_config({**raw, "data_root": data_root, "datasets": datasets}, "real data (encryption cost)")], []


def encryption_cost(cfg: SweepConfig, epochs: dict[str, float]) -> list[EncryptionCost]:
    """Time AdvParams under each of `SELECTIONS` at every cell of ``cfg`` (a config from `encryption_configs`)
    against one epoch of each baseline (``epochs``, seconds by train job id, as `acceleration_cost` timed it
    under the config's setting), with the encrypt job's torch threads; each baseline is trained once and kept
    in the config's storage. With several seeds each encryption runs once (the seeds' median is the figure)."""
    ctx = JobContext.for_config(cfg, int(cfg.jobs.encrypt.num_cpus))
    plan = plan_for(cfg)
    most = MAX_RUNS if len(cfg.seeds) == 1 else 1
    rows: list[EncryptionCost] = []
    threads = torch.get_num_threads()
    try:
        ctx.prepare()
        storage = Storage.at(ctx.storage)  # a folder: the benchmark's configs store under its temporary folder
        for job in plan.trains:
            run_train(job, ctx)  # a cache hit when the baseline file exists
            rows.extend(_encryption(enc, selection, storage.baseline(job), ctx, epochs[job.id], most)
                        for enc in plan.encrypts if enc.train == job for selection in SELECTIONS)
    finally:
        torch.set_num_threads(threads)
    return rows


#: Samples of the untimed warm-up epoch run under each setting before it is timed.
WARM_UP_SAMPLES = 512
#: The settings the acceleration table compares: (amp, channels_last), float32 and the default layout first.
ACCELERATION_SETTINGS = (("off", "off"), ("on", "off"), ("off", "on"), ("on", "on"))


def acceleration_cost(
    cfg: SweepConfig, settings: Sequence[tuple[str, str]] = ACCELERATION_SETTINGS
) -> list[AccelerationTiming]:
    """One epoch and one evaluation of each of ``cfg``'s models under every setting, on the compute device,
    with the train job's torch threads."""
    ctx = JobContext.for_config(cfg, int(cfg.jobs.train.num_cpus))
    device = compute_device()
    rows: list[AccelerationTiming] = []
    threads = torch.get_num_threads()
    try:
        ctx.prepare()
        for job in plan_for(cfg).trains:
            ds = ctx.dataset(job)
            for amp, layout in settings:
                setting = Acceleration(amp, layout)
                acceleration.use(setting)
                _one_epoch(job, _head(ds, WARM_UP_SAMPLES))  # kernels chosen and caches filled before timing
                runs: list[tuple[float, float, float]] = []

                def once() -> float:
                    runs.append(_one_epoch(job, ds))
                    return runs[-1][0]

                _median_seconds(once)
                epoch, evaluation, acc = (statistics.median(r[i] for r in runs) for i in range(3))
                used = setting.describe(device)
                rows.append(AccelerationTiming(job.id, job.dataset, job.model, device.type, used["amp"],
                                               used["channels_last"] == "on", epoch, evaluation, acc))
    finally:
        torch.set_num_threads(threads)
        acceleration.use(Acceleration())
    return rows


def epochs_at(rows: list[AccelerationTiming], setting: Acceleration) -> dict[str, float]:
    """One epoch's seconds of each timed model under ``setting`` (as it resolves on the compute device)."""
    used = setting.describe(compute_device())
    return {a.train_id: a.epoch_seconds for a in rows
            if a.amp == used["amp"] and a.channels_last == (used["channels_last"] == "on")}


def _head(ds: DataSet, n: int) -> DataSet:
    """``ds`` with only its first ``n`` training and test samples."""
    return replace(ds, train=TensorDataset(*(t[:n] for t in ds.train.tensors)),
                   test=TensorDataset(*(t[:n] for t in ds.test.tensors)))


def _one_epoch(job: TrainJob, ds: DataSet) -> tuple[float, float, float]:
    """Seconds of one training epoch of a fresh ``job.model`` with ``job``'s training settings on the compute
    device, seconds of its evaluation on the test split, and its test accuracy."""
    t = Training(**job.training)
    torch.manual_seed(job.seed)
    model = build_model(job.model, num_classes=ds.num_classes, input_shape=ds.input_shape, **job.model_args)
    model.to(compute_device())
    start = time.perf_counter()
    train(model, ds.train, epochs=1, lr=t.lr, optimizer=t.optimizer, batch_size=t.batch_size,
          weight_decay=t.weight_decay, seed=job.seed)
    trained = time.perf_counter()
    acc = accuracy(model, ds.test)
    return trained - start, time.perf_counter() - trained, acc


def _encryption(enc: EncryptJob, selection: str, baseline: Path, ctx: JobContext, epoch_seconds: float,
                most: int) -> EncryptionCost:
    """Encrypt the baseline with the AdvParams options of ``selection`` over the cell's (into a temporary folder, so
    no key is left behind) as often as `_median_seconds` asks, on the owner samples the sweep's job draws
    (its grid seed's)."""
    outcomes: list[EncryptOutcome] = []
    options = {**enc.budget["options"], **SELECTIONS[selection]}
    budget = protect.Budget.from_dict({**enc.budget, "options": options})
    with tempfile.TemporaryDirectory(prefix="advparams-speed-") as tmp:

        def once() -> float:
            outcomes.append(encrypt_file(
                baseline, Path(tmp) / "encrypted.safetensors", Path(tmp) / "encrypted.key",
                budget=budget, method="advparams", data=ctx.options(enc.train),
                split_seed=enc.seed, owner_count=enc.owner_samples, force=True))
            return outcomes[-1].seconds

        seconds = _median_seconds(once, most)
    last = outcomes[-1]
    return EncryptionCost(enc.train.dataset, enc.train.model, enc.cell, enc.seed, selection, enc.owner_samples, last.num_changed,
                          int(last.stats["steps"]), int(last.stats["forward_backward_passes"]), seconds, epoch_seconds,
                          last.acc_clean, last.acc_encrypted)


def run_encryption(cfg: SweepConfig, *, command: str, data_root: str | None = None, seeds: int = 1,
                   progress: Callable[[str], None] = lambda _: None) -> EncryptionReport:
    """The encryption-cost measurement alone: each model's epoch timed under the config's own setting only."""
    machine = Machine.current()
    configs, notes = encryption_configs(cfg, data_root, seeds)
    setting = Acceleration(cfg.jobs.amp, cfg.jobs.channels_last)
    rows: list[EncryptionCost] = []
    for c in configs:
        progress(f"one epoch of each model: {_models(c)}")
        epochs = epochs_at(acceleration_cost(c, [(setting.amp, setting.channels_last)]), setting)
        progress(f"encryption cost: {_models(c)}")
        rows.extend(encryption_cost(c, epochs))
    return EncryptionReport(machine, command, cfg.name, rows, notes)


def _models(cfg: SweepConfig) -> str:
    return ", ".join(f"{d.name}/{m.name}" for d in cfg.datasets for m in d.models)


# ------------------------------------------------------------------------- sweeps, each in a subprocess
def _worker_peak() -> tuple[float | None, str]:
    """The peak RSS of the idle worker that ran the jobs just finished (Ray reuses one worker per CPU).

    The probe is a nested function, which Ray ships by value: a worker runs it without importing this
    module, so ``bench.sweep.jobs`` being loaded in it proves the worker ran sweep jobs.
    """
    def probe() -> tuple[int, bool]:
        import resource
        import sys

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "bench.sweep.jobs" in sys.modules

    peak, ran_jobs = ray.get(ray.remote(num_cpus=1)(probe).remote())
    return (rss_mib(peak), "") if ran_jobs else (None, "the probe reached a worker that ran no job")


def _sweep_here(cfg: SweepConfig, cpus: int, cluster: bool) -> dict[str, Any]:
    """Run ``cfg`` through the sweep driver on a Ray this call starts: local with ``cpus`` CPUs, or a simulated
    cluster (a head with no CPUs and ``cpus`` nodes of one CPU). The one-CPU local run also probes its worker."""
    start = time.perf_counter()
    nodes = None
    if cluster:
        nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        for _ in range(cpus):
            nodes.add_node(num_cpus=1)
        ray.init(address=nodes.address, log_to_driver=False)
        label = f"simulated cluster: head with 0 CPUs + {cpus} nodes × 1 CPU"
    else:
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        label = f"local Ray, {cpus} worker{'s' if cpus > 1 else ''} (sweep driver, MLflow on SQLite)"
    started = time.perf_counter()
    try:
        outcome = run_sweep(cfg, console=Console(file=io.StringIO()))
        seconds = time.perf_counter() - start
        peak, note = _worker_peak() if cpus == 1 and not cluster else (None, "measured on the 1-CPU local run only")
    finally:
        stopping = time.perf_counter()
        ray.shutdown()
        if nodes is not None:
            nodes.shutdown()
        stopped = time.perf_counter()
    done = sum(c["done"] for c in outcome.counts.values())
    return asdict(SweepTiming(label, cpus, done, len(outcome.failed), seconds, peak, note,
                              ray_start_seconds=started - start, ray_stop_seconds=stopped - stopping))


def child(request: str, result: str) -> None:
    """Entry point of a scaling subprocess: read the request file, run the sweep, write the result file."""
    spec = json.loads(Path(request).read_text())
    torch.set_num_threads(1)
    cfg = parse_config(spec["config"], "benchmark config")
    Path(result).write_text(json.dumps(_sweep_here(cfg, **spec["options"])))


def _fresh(cfg: SweepConfig, tmp: Path) -> dict[str, Any]:
    """``cfg`` with a fresh storage folder and MLflow store under ``tmp``, every job asking for one CPU."""
    raw = json.loads(cfg.model_dump_json())
    raw.update(storage=str(tmp / "storage"), tracking={"uri": f"sqlite:///{tmp / 'mlflow.db'}"},
               jobs={**raw["jobs"], **{k: {**raw["jobs"][k], "num_cpus": 1} for k in ("train", "encrypt", "attack")}})
    return raw


def _timed(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    """Seconds ``argv`` ran, from its start to its end; a failure is one BenchError line."""
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"benchmark command {shlex.join(argv[1:])} failed (exit {proc.returncode}): {last}")
    return seconds


def isolated(cfg: SweepConfig, env: dict[str, str] | None = None, **options: Any) -> SweepTiming:
    """Run ``cfg`` through `_sweep_here` in a fresh subprocess with a fresh storage folder and MLflow store."""
    with tempfile.TemporaryDirectory(prefix="advparams-speed-") as tmp:
        request, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        request.write_text(json.dumps({"config": _fresh(cfg, Path(tmp)), "options": options}))
        code = "import sys; from benchmarks.speed import child; child(sys.argv[1], sys.argv[2])"
        seconds = _timed([sys.executable, "-c", code, str(request), str(result)], env)
        return SweepTiming(**{**json.loads(result.read_text()), "command_seconds": seconds})


def sweep_command(cfg: SweepConfig) -> SweepTiming:
    """``cfg``'s jobs through the `advparams sweep` command on a 1-CPU local Ray (no report after it); its
    inner time is the sweep's own, as the driver logged it to MLflow."""
    with tempfile.TemporaryDirectory(prefix="advparams-speed-") as tmp:
        raw = _fresh(cfg, Path(tmp))
        config = Path(tmp) / "config.yaml"
        config.write_text(json.dumps(raw))  # JSON is YAML
        seconds = _timed([sys.executable, "-m", "bench.cli", "sweep", str(config), "--cpus", "1", "--no-report"])
        tracker = Tracker(raw["tracking"]["uri"], cfg.experiment)
        parent = tracker.client.get_run(tracker.latest_sweep())
        planned = sum(int(v) for k, v in parent.data.params.items() if k.startswith("jobs."))
        failed = int(parent.data.metrics["jobs_failed"])
        return SweepTiming("`advparams sweep --cpus 1 --no-report` (local Ray, MLflow on SQLite)", 1, planned - failed,
                           failed, parent.data.metrics["sweep_seconds"], command_seconds=seconds)


def user_sweep(cfg: SweepConfig) -> tuple[float, float]:
    """Seconds of `advparams sweep CONFIG` as a new user runs it (the config's own CPUs and storage, the store
    and report where the command puts them), in a fresh working folder, then of the same command again."""
    with tempfile.TemporaryDirectory(prefix="advparams-speed-") as tmp:
        raw = json.loads(cfg.model_dump_json())
        raw["storage"] = "runs/user"  # under the fresh folder, as are the default store and report
        raw.pop("tracking", None)
        config = Path(tmp) / "config.yaml"
        config.write_text(json.dumps(raw))  # JSON is YAML
        argv = [sys.executable, "-m", "bench.cli", "sweep", str(config)]
        return _timed(argv, cwd=Path(tmp)), _timed(argv, cwd=Path(tmp))


def loop_command(cfg: SweepConfig) -> SweepTiming:
    """``cfg``'s jobs through `python -m bench.sweep.loop`: the same job functions in one process, no Ray, no MLflow."""
    with tempfile.TemporaryDirectory(prefix="advparams-speed-") as tmp:
        config, result = Path(tmp) / "config.yaml", Path(tmp) / "result.json"
        config.write_text(json.dumps(_fresh(cfg, Path(tmp))))
        seconds = _timed([sys.executable, "-m", "bench.sweep.loop", str(config), "--threads", "1", "--result", str(result)])
        figures = json.loads(result.read_text())
        return SweepTiming("`python -m bench.sweep.loop --threads 1` (plain loop, no Ray, no MLflow)", 1, figures["jobs"], 0,
                           figures["seconds"], figures["peak_rss_mib"], command_seconds=seconds)


# ---------------------------------------------------------------------------------------------- whole
def run_benchmark(cfg: SweepConfig, *, command: str, workers: int = 2, skip_cluster: bool = False, repeats: int = 1,
                  data_root: str | None = None, seeds: int = 1,
                  progress: Callable[[str], None] = lambda _: None) -> SpeedReport:
    """Every measurement of the speed benchmark on ``cfg``, one after another (never two at once); the scaling
    table has local Rays of 1 to ``workers`` CPUs."""
    if workers < 1 or repeats < 1:
        raise BenchError(f"workers and repeats must be >= 1, got {workers} and {repeats}")
    machine = Machine.current()
    configs, notes = encryption_configs(cfg, data_root, seeds)
    encryption: list[EncryptionCost] = []
    accelerated: list[AccelerationTiming] = []
    for c in configs:
        progress(f"mixed precision and channels_last: {_models(c)}")
        timed = acceleration_cost(c)
        accelerated.extend(timed)
        progress(f"encryption cost: {_models(c)}")
        encryption.extend(encryption_cost(c, epochs_at(timed, Acceleration(c.jobs.amp, c.jobs.channels_last))))
    pairs = []
    for i in range(repeats):
        progress(f"harness overhead {i + 1}/{repeats}: `advparams sweep` on a 1-CPU local Ray, then `python -m bench.sweep.loop`")
        pairs.append((sweep_command(cfg), loop_command(cfg)))
    cli, loop = (_median_run([p[k] for p in pairs]) for k in (0, 1))
    ratios = [s.command_seconds / lp.command_seconds for s, lp in pairs]
    local = []
    for cpus in range(1, workers + 1):
        progress(f"scaling: {cpus}-CPU local Ray")
        local.append(isolated(cfg, cpus=cpus, cluster=False))
    cluster = None
    if not skip_cluster:
        progress("scaling: simulated cluster")
        cluster = isolated(cfg, env=LOOPBACK_CLUSTER_ENV, cpus=CLUSTER_NODES, cluster=True)
    progress("a user's sweep: `advparams sweep` in a fresh folder, then again")
    first_run, rerun = user_sweep(cfg)
    return SpeedReport(machine, command, cfg.name, plan_for(cfg).counts(), encryption, accelerated, cli, loop, ratios, local, cluster,
                       first_run, rerun, notes)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=Path("configs/quick.yaml"), help="sweep config (default: %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override a config key")
    p.add_argument("--write", type=Path, help="replace the speed section of this markdown file (BENCHMARKS.md)")
    p.add_argument("--workers", type=int, default=2, help="scaling: local Rays of 1 to N CPUs (default: %(default)s)")
    p.add_argument("--skip-cluster", action="store_true", help="skip the simulated multi-node cluster")
    p.add_argument("--repeats", type=int, default=3,
                   help="harness overhead: pairs of sweep and loop runs, the median kept (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=1,
                   help="encryption cost: measure on the config's first N seeds, each selection's drop paired by "
                   "seed with the reference loop's (default: %(default)s)")
    p.add_argument("--encryption-only", action="store_true",
                   help="measure the encryption cost alone (and one epoch per model for its shares)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    start = time.perf_counter()

    def progress(step: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {step}", file=sys.stderr)

    try:
        cfg = load_config(args.config, args.set)
        command = shlex.join(["python", "-m", "benchmarks.speed", *argv])
        data_root = os.environ.get(DATA_ROOT_ENV)
        report: SpeedReport | EncryptionReport
        if args.encryption_only:
            report = run_encryption(cfg, command=command, data_root=data_root, seeds=args.seeds, progress=progress)
        else:
            report = run_benchmark(cfg, command=command, workers=args.workers, skip_cluster=args.skip_cluster,
                                   repeats=args.repeats, data_root=data_root, seeds=args.seeds, progress=progress)
    except UserError as err:
        print(f"benchmarks.speed: error: {err}", file=sys.stderr)
        return 2
    text = report.markdown()
    print(text)
    if args.write:
        update_section(args.write, "encryption" if args.encryption_only else "speed", text)
    print(f"benchmark wall time: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
