"""The sweep's driver: plan the grid, run the missing jobs on Ray, log every result to MLflow.

Everything a job would otherwise find out too late is checked before Ray starts (`bench.sweep.plan.check_plan`,
`preflight`, `wait_for_cluster`), and Ray starts only when some job is left to run. Ray schedules the jobs
(train -> encrypt -> attack, dependencies passed as object refs, so each job starts when its inputs exist and
wherever the cluster has room; training jobs that need more CPUs or GPUs than the others all run first, see
`stages`); this driver only submits them, waits for results and logs each one the moment it arrives, so a
driver killed mid-sweep loses nothing that finished. Jobs whose id already has a FINISHED run are skipped; a
job that raises is logged as FAILED and the sweep goes on; a worker or node lost mid-job is retried by Ray
(`jobs.max_retries`).
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from types import ModuleType
from typing import Any

import optuna
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from attacks import attack_names
from attacks.tuning import journal
from bench.errors import BenchError
from bench.sweep.archive import Archive
from bench.sweep.config import SweepConfig
from bench.sweep.jobs import JobContext, damaged_output, output_files, run_job
from bench.sweep.lock import DriverLock, lock_path
from bench.sweep.plan import (
    ALL_CELLS,
    AttackJob,
    EncryptJob,
    Job,
    Plan,
    TrainJob,
    dependencies,
    plan_for,
    resolve_attacks,
    stable_hash,
)
from bench.sweep.results import (
    AttackRow,
    JobResult,
    Summary,
    attack_row,
    summarize,
    summary_result,
)
from bench.sweep.storage import Storage
from bench.sweep.store import check_uri, is_new_store
from bench.sweep.tracking import (
    MAX_PARAM,
    TOLERANCE_TAG,
    Tracker,
    same_metrics,
    wait_for_server,
)
from bench.zoo.data import make_splits
from common.errors import first_line


def _ray() -> ModuleType:
    """Ray, imported where a sweep first needs it: a rerun with nothing left to run never does, and the
    import costs it about 0.3 s."""
    import ray

    return ray


@cache
def _execute() -> Any:
    """`run_job` as a Ray task. The function lives in `bench.sweep.jobs`, which a worker imports by reference:
    not this module, whose MLflow and progress-bar imports a worker never needs."""
    return _ray().remote(run_job)


def outputs_exist(job: Job, storage: Storage) -> bool:
    """Whether the files a job writes for its dependants are stored (a quick look, before the store is read)."""
    return all(storage.exists(path) for path in output_files(job, storage).values())


def collect_studies(jobs: list[AttackJob], storage: Storage, console: Console) -> Path | None:
    """Copy each finished attack job's study (``jobs``) from its own journal into the sweep's one journal
    (`Storage.studies`), named by the job's id, so optuna-dashboard opens them all at once; returns that journal,
    or None when it holds nothing. A study collected before is not copied again, a job without a study file is
    passed over, and a journal that cannot be read or copied is a note: studies are for inspection, and never
    end a sweep. The driver is the journal's one writer (jobs write their own journals only)."""
    target = storage.studies
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a "new study created" line per job
    try:
        sweep = journal(target) if jobs or target.is_file() else None
        collected = set(optuna.get_all_study_names(sweep)) if sweep is not None else set()
        missing = [job for job in jobs if job.id not in collected]
        if missing:
            with storage.for_job() as work:  # an object store's journals are fetched to a private folder
                for job in missing:
                    _copy_study(job, work, sweep, console)
        return target if target.is_file() and target.stat().st_size else None
    except Exception as err:  # a foreign or unwritable journal: the sweep's figures are in MLflow all the same
        console.print(f"note: studies not collected into {target}: {type(err).__name__}: {first_line(err)}",
                      markup=False, highlight=False)
        return None


def _copy_study(job: AttackJob, storage: Storage, sweep: optuna.storages.BaseStorage, console: Console) -> None:
    """Copy the one study in ``job``'s journal into ``sweep`` under the job's id; nothing without a journal,
    a note when it cannot be read or copied."""
    try:
        if not storage.exists(storage.study(job)):
            return
        source = journal(storage.fetch(storage.study(job)))
        names = optuna.get_all_study_names(source)
        if len(names) != 1:
            raise ValueError(f"it holds {len(names)} studies, not one")
        optuna.copy_study(from_study_name=names[0], from_storage=source, to_storage=sweep, to_study_name=job.id)
    except Exception as err:  # an unreadable or truncated journal, an object store that does not answer
        console.print(f"note: the study of {job.name} ({storage.where(storage.study(job))}) was not collected: "
                      f"{type(err).__name__}: {first_line(err)}", markup=False, highlight=False)


def to_run(plan: Plan, finished: dict[str, JobResult], storage: Storage, console: Console,
           restored: set[str] = frozenset()) -> set[str]:
    """The ids of the jobs left: those without a finished run, and finished ones whose files are not the bytes
    they wrote (missing, altered or truncated: rebuilt, and said so, never used). A job ``restored`` from the
    results archive wrote its files on another machine: they are rebuilt only where a job left reads them."""
    left, needed, rebuilding = set(), set(), []
    for job in reversed(plan.jobs):  # a job's dependants come after it in the plan: decided before it
        if job.id not in finished:
            left.add(job.id)
        elif job.id in restored and job.id not in needed:
            continue
        elif problem := damaged_output(job, storage, finished[job.id]):
            rebuilding.append(f"rebuilding {job.name}: {problem}")
            left.add(job.id)
        if job.id in left:
            needed.update(dependencies(job))
    for line in reversed(rebuilding):
        console.print(line, markup=False, highlight=False)
    return left


def restorable(plan: Plan, finished: dict[str, JobResult], archive: Archive | None) -> dict[str, JobResult]:
    """The archived results of the plan's jobs that the store has no finished run of."""
    if archive is None:
        return {}
    return {job.id: archive.results[job.id] for job in plan.jobs
            if job.id in archive.results and job.id not in finished}


def stages(plan: Plan, cfg: SweepConfig) -> list[list[Job]]:
    """The jobs in the order they go to Ray, stage after stage. Ray starts whatever fits the free CPUs and
    GPUs, so a training job asking for more than the encrypt and attack jobs could wait behind them until the
    last of them has ended; such training jobs all run first, the rest once they have ended (so the attacks
    of a fast baseline wait for the slowest one: the price of never starving a training job)."""
    train, others = cfg.jobs.train, (cfg.jobs.encrypt, cfg.jobs.attack)
    if any(train.num_cpus > o.num_cpus or train.num_gpus > o.num_gpus for o in others):
        return [list(plan.trains), [*plan.encrypts, *plan.attacks]]
    return [plan.jobs]


def check_resources(cfg: SweepConfig) -> None:
    """One line, instead of a sweep that waits forever, when no node can ever run a kind of job."""
    nodes = [n.get("Resources", {}) for n in _ray().nodes() if n.get("Alive")]
    for kind in ("train", "encrypt", "attack"):
        res = getattr(cfg.jobs, kind)
        if not any(n.get("CPU", 0) >= res.num_cpus and n.get("GPU", 0) >= res.num_gpus for n in nodes):
            raise BenchError(f"jobs.{kind} asks for num_cpus={res.num_cpus:g}, num_gpus={res.num_gpus:g}, "
                             "more than any node of this Ray cluster has")


def sweep_id(cfg: SweepConfig) -> str:
    """The grid's identity: execution settings (`jobs`: resources, retries, acceleration), tracking and how
    results are judged (`report`) are not part of it, so a rerun with other resources reopens the same parent run."""
    return stable_hash(cfg.model_dump(exclude={"tracking", "jobs", "report"}))


def cluster_address(address: str | None) -> str | None:
    """The cluster a sweep joins: ``address``, else $RAY_ADDRESS (as `ray job submit` sets it); None: a local Ray."""
    return address or os.environ.get("RAY_ADDRESS")


def connect(address: str | None, runtime_env: dict | None, local_cpus: int | None = None) -> bool:
    """Join the cluster at `cluster_address`, else start a local Ray with ``local_cpus`` CPUs (default: this
    machine's cores). Returns whether this call started Ray (and so must shut it down). Joining, Ray tries the
    cluster once (`wait_for_cluster` has seen it answer)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    target = cluster_address(address)
    handlers = _signal_handlers()
    try:
        if target:
            with _one_gcs_attempt():
                ray.init(address=target, runtime_env=runtime_env, log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=local_cpus or os.cpu_count(), include_dashboard=False,
                     log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise BenchError(f"cannot start or reach Ray{f' at {target}' if target else ''}: {first_line(err)}") from None
    for number, handler in handlers.items():
        signal.signal(number, handler)
    return True


def _signal_handlers() -> dict[signal.Signals, Any]:
    """SIGTERM's and SIGHUP's handlers as they are before Ray starts, to be put back after: Ray installs its
    own (its core's aborts the driver on the spot, exit -6; its Python one exits at once, exit 15), either way
    leaving its processes to linger, where the command's handler stops the sweep as Ctrl-C does. Signal
    handlers belong to the main thread; elsewhere there is nothing to keep."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {n: h for n in (signal.SIGTERM, signal.SIGHUP) if callable(h := signal.getsignal(n))}


def wait_for_cluster(address: str, timeout: float) -> None:
    """Wait until a cluster's ``address`` (HOST:PORT, or ray://HOST:PORT) takes a TCP connection, at most
    ``timeout`` seconds (a head still starting gets them), else one line: Ray itself retries a dead address for
    over ten minutes. An address without a port (``auto``) is left to Ray; one that takes connections but is
    not Ray's ends after Ray's single attempt (`connect`), about 40 s."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    if not 0 < int(port) < 2**16:
        raise BenchError(f"Ray address {address}: port {port} is out of range")
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=max(0.1, min(5.0, deadline - time.monotonic()))).close()
            return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise BenchError(f"Ray at {address} did not answer within {timeout:g} s ({err.strerror or err}); "
                                 "check --address, or raise --connect-timeout (jobs.connect_timeout)") from None
            time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))


@contextmanager
def _one_gcs_attempt() -> Iterator[None]:
    """Ray tries to reach a cluster's GCS once, not 20 times (its default); a user's own setting wins."""
    added = "RAY_gcs_server_port_wait_time_s" not in os.environ
    if added:
        os.environ["RAY_gcs_server_port_wait_time_s"] = "1"
    try:
        yield
    finally:
        if added:
            os.environ.pop("RAY_gcs_server_port_wait_time_s", None)


def preflight(cfg: SweepConfig, ctx: JobContext, *, on_cluster: bool, console: Console) -> None:
    """What every job would otherwise find out for itself, checked once before Ray starts: each data set loads
    and its training split holds the owner's samples beside the largest attacker share (and the smallest
    share holds at least 2 samples), and the storage folder can be written.

    The data sets are loaded in a child process: loaded here, they would stay in the driver's memory for the
    whole sweep (a process keeps what it loaded; 2 GB for configs/paper.yaml). The child is a fresh
    interpreter (`_in_fresh_process`): a forked child of a process whose torch thread pool has run hangs in
    its first parallel operation, and multiprocessing's spawn re-runs a calling script that lacks a
    ``__main__`` guard (both seen in the tests). Joining a cluster, the nodes may reach data and storage this
    machine does not: a problem here is then a note, and the jobs find out on the nodes.
    """
    problems = _in_fresh_process(_size_problems, cfg, ctx)
    try:
        Storage.at(ctx.storage).check_writable()
    except BenchError as err:
        problems.append(str(err))
    if problems and not on_cluster:
        raise BenchError(problems[0])
    for problem in problems:
        console.print(f"note: {problem} (checked on this machine; the cluster's nodes may differ)", highlight=False)


CHILD = """
import pickle, sys
function, args = pickle.load(sys.stdin.buffer)
sys.stdout.buffer.write(pickle.dumps(function(*args)))
"""


def _in_fresh_process(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a new interpreter on this one's module path, its inputs and result passed as
    pickles through its standard streams (between this program's own processes, never a file a user
    receives); a child that fails is one line naming its last error line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    child = subprocess.run([sys.executable, "-c", CHILD], input=pickle.dumps((function, args)), capture_output=True,
                           env=env)
    if child.returncode != 0:
        lines = child.stderr.decode(errors="replace").strip().splitlines() or ["no output"]
        raise BenchError(f"the data check before the sweep failed: {lines[-1]}")
    return pickle.loads(child.stdout)


def _size_problems(cfg: SweepConfig, ctx: JobContext) -> list[str]:
    """Each data set whose shares do not fit, drawn as a job draws them (`make_splits`), or that cannot load."""
    problems = []
    for i, entry in enumerate(cfg.datasets):
        try:
            ds = ctx.data.for_folder(entry.path).load(entry.name)
            for fraction in sorted({min(cfg.attacks.fractions), max(cfg.attacks.fractions)}):
                make_splits(ds, seed=0, owner_samples=entry.owner_samples, attacker_fraction=fraction,
                            attacker_val_fraction=cfg.attacks.val_fraction)
        except BenchError as err:
            problems.append(f"datasets.{i}: {err}")
    return problems


def _open_tracker(uri: str, experiment: str, timeout: float) -> tuple[Tracker, dict[str, JobResult]]:
    tracker = Tracker(uri, experiment, connect_timeout=timeout)
    return tracker, tracker.finished()


@dataclass
class SweepOutcome:
    counts: dict[str, Counter] = field(default_factory=dict)  # kind -> Counter(done/failed/skipped)
    seconds: float = 0.0
    parent_run_id: str = ""
    failed: list[JobResult] = field(default_factory=list)
    results: dict[str, JobResult] = field(default_factory=dict)
    studies: Path | None = None  # the journal of every finished attack job's study (`collect_studies`)
    tracker: Tracker | None = None  # the store as the sweep read and wrote it: its report reads from it

    @property
    def ok(self) -> bool:
        return not self.failed


def doing(job: Job) -> str:
    """What a job was doing, in words, for its error message: a library's own message rarely says."""
    if isinstance(job, TrainJob):
        return f"training {job.model} on {job.dataset}"
    if isinstance(job, EncryptJob):
        return f"encrypting {job.train.model} with {job.method} [{job.cell}]"
    target = f"{job.encrypt.method} [{job.encrypt.cell}]" if job.encrypt else "the architecture alone"
    return f"running attack {job.attack} on {target}"


def _failure(job: Job, err: BaseException, failed_upstream: list[str]) -> JobResult:
    if failed_upstream:
        message = f"upstream job failed: {failed_upstream[0]}"
        detail = message
    else:
        cause = getattr(err, "cause", None) or err
        message = f"while {doing(job)}: {type(cause).__name__}: {first_line(cause) if str(cause) else ''}"
        detail = "".join(traceback.format_exception(err))
    return JobResult(job.id, job.kind, job.name, status="FAILED", error=message,
                     tags={"kind": job.kind, "job_id": job.id}, artifacts={"error.txt": detail})


def _failed(ref: Any) -> bool:
    """Whether an upstream job failed. Its ref is ready whenever a dependant has ended, but ray.wait may
    hand the dependant's failure over first, so ask the ref rather than the order results arrived in."""
    ray = _ray()
    if not isinstance(ref, ray.ObjectRef):
        return False  # a result read back from MLflow: finished
    ready, _ = ray.wait([ref], timeout=0)
    if not ready:
        return False
    try:
        ray.get(ref)
    except Exception:
        return True
    return False


class _Bar:
    """Live progress: done, running, failed, skipped and the time left. Where the output is not a terminal
    (a log file, `ray job submit`), the same status is printed as a line every ``LOG_EVERY`` seconds."""

    LOG_EVERY = 60.0

    def __init__(self, console: Console, total: int, slots: int) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=console, transient=False, disable=not console.is_terminal)
        self.task = self.progress.add_task("sweep", total=total, status="")
        self.console, self.total, self.slots = console, total, slots
        self.counts: Counter = Counter()
        self.start = self.logged = time.monotonic()

    def update(self, ready: int) -> None:
        running = min(ready, self.slots)
        c = self.counts
        status = f"done {c['done']} · running {running} · failed {c['failed']} · skipped {c['skipped']}"
        self.progress.update(self.task, completed=sum(c.values()), status=status)
        now = time.monotonic()
        if not self.console.is_terminal and (now - self.logged >= self.LOG_EVERY or sum(c.values()) == self.total):
            self.logged = now
            self.console.print(f"sweep {sum(c.values())}/{self.total}: {status} · {(now - self.start) / 60:.1f} min",
                               highlight=False)


def run_sweep(cfg: SweepConfig, *, address: str | None = None, tracking_uri: str | None = None,
              console: Console | None = None, local_cpus: int | None = None, max_jobs: int | None = None) -> SweepOutcome:
    """Run every job of ``cfg`` not yet finished in its MLflow experiment; log each result as it lands.

    A config planning more than ``max_jobs`` jobs (None: `bench.sweep.plan.MAX_JOBS`) is refused; Ray starts
    only if a job is left, after `preflight`, so a sweep with nothing to run answers from the tracking store
    alone. A sweep's fixed costs overlap where they can: the store opens while Ray starts (when some job is
    surely left), and the summaries are logged while Ray shuts down. A second driver on the same store is
    refused (`bench.sweep.lock`): the store's schema is created, and every job logged, by one driver.
    """
    console = console or Console(stderr=True)
    start = time.perf_counter()
    plan = plan_for(cfg, max_jobs)
    contexts = {kind: JobContext.for_config(cfg, int(getattr(cfg.jobs, kind).num_cpus))
                for kind in ("train", "encrypt", "attack")}
    storage = Storage.at(contexts["train"].storage)
    uri = tracking_uri or cfg.tracking.uri
    check_uri(uri)  # refused before anything starts: a malformed URI, a CPU count for a cluster
    cluster = cluster_address(address)
    if local_cpus is not None and cluster:
        raise BenchError("a CPU count applies to a local Ray only; a cluster's CPUs are those of its nodes")
    wait_for_server(uri, cfg.jobs.connect_timeout)  # the tracking server and the cluster answer before anything starts
    if cluster:
        wait_for_cluster(cluster, cfg.jobs.connect_timeout)
    with DriverLock(lock_path(uri, storage, cfg.experiment)):  # held until the sweep's run is closed
        return _drive(cfg, plan, contexts, storage, uri, cluster, address, local_cpus, console, start)


def _drive(cfg: SweepConfig, plan: Plan, contexts: dict[str, JobContext], storage: Storage, uri: str,
           cluster: str | None, address: str | None, local_cpus: int | None, console: Console,
           start: float) -> SweepOutcome:
    """`run_sweep` past its checks, with the store's lock held: open the store, start Ray if a job is left,
    run and log the jobs, log the summaries, close the sweep's run."""
    started_at = time.time() - (time.perf_counter() - start)  # the invocation's wall-clock start
    archive = Archive(cfg.tracking.archive) if cfg.tracking.archive else None
    check = partial(preflight, cfg, contexts["train"], on_cluster=cluster is not None, console=console)
    start_ray = partial(connect, address, cfg.jobs.runtime_env, local_cpus)
    # A new store, or a file missing that a finished job leaves: some job is surely left, so Ray starts while
    # the store opens. Otherwise the store is read first, and Ray starts only if it says a job is left.
    # A plan the results archive holds whole is no such case: its jobs' files may well be on another machine.
    covered = archive is not None and all(job.id in archive.results for job in plan.jobs)
    surely_left = not covered and (is_new_store(uri) or not all(outputs_exist(job, storage) for job in plan.jobs))
    if surely_left:
        check()
    with ThreadPoolExecutor(1) as pool:
        opening = pool.submit(_open_tracker, uri, cfg.experiment, cfg.jobs.connect_timeout)
        started = start_ray() if surely_left else False
        try:
            tracker, finished = opening.result()
            restored = restorable(plan, finished, archive)
            finished = {**finished, **restored}
            left = to_run(plan, finished, storage, console, set(restored))
            if left and not surely_left:
                check()
                started = start_ray()
            if left:
                check_resources(cfg)
            parent = tracker.open_sweep(sweep_id(cfg), cfg.name,
                                        {"config": cfg.model_dump_json(), **{f"jobs.{k}": v for k, v in plan.counts().items()}},
                                        [j.id for j in plan.jobs])
            for result in restored.values():
                tracker.log_result(result, parent)
            if restored:
                console.print(f"restored {len(restored)} finished jobs from the results archive {archive.path}",
                              markup=False, highlight=False)
            said_before = tracker.sweep_tag(parent, RESOLVED_TAG)
            resolved = ",".join(resolve_attacks(cfg.attacks.names, attack_names()))
            if said_before is not None and said_before != resolved:
                console.print(registry_change(said_before, resolved), markup=False, highlight=False)
            tracker.tag_sweep(parent, {TOLERANCE_TAG: str(cfg.report.tolerance), RESOLVED_TAG: resolved})
        except BaseException:  # a store that cannot be read or written, a cluster too small: Ray goes too
            if started:
                _ray().shutdown()
            raise
    outcome = SweepOutcome(counts={k: Counter() for k in ("train", "encrypt", "attack")}, parent_run_id=parent,
                           tracker=tracker)
    refs: dict[str, Any] = {}
    pending: dict[Any, Job] = {}
    names = {job.id: job.name for job in plan.jobs}
    slots = max(1, int(_ray().cluster_resources().get("CPU", 1) // cfg.jobs.attack.num_cpus)) if left else 1
    bar = _Bar(console, len(plan.jobs), slots)
    status = "FAILED"  # anything that ends the loop early, but Ctrl-C, leaves the sweep FAILED
    try:
        with bar.progress:
            for stage in stages(plan, cfg):
                for job in stage:
                    if job.id not in left:
                        refs[job.id] = finished[job.id]
                        outcome.results[job.id] = finished[job.id]
                        outcome.counts[job.kind]["skipped"] += 1
                        bar.counts["skipped"] += 1
                        continue
                    res = getattr(cfg.jobs, job.kind)
                    task = _execute().options(num_cpus=res.num_cpus, num_gpus=res.num_gpus,
                                              max_retries=cfg.jobs.max_retries, name=job.name)
                    ref = task.remote(job, contexts[job.kind], *[refs[d] for d in dependencies(job)])
                    refs[job.id] = ref
                    pending[ref] = job
                while pending:
                    bar.update(ready=len(pending))
                    done, _ = _ray().wait(list(pending), num_returns=1, timeout=1.0)
                    for ref in done:
                        job = pending.pop(ref)
                        try:
                            result = _ray().get(ref)
                        except Exception as err:  # the job raised, or its upstream did: record it, go on
                            result = _failure(job, err, [names[d] for d in dependencies(job) if _failed(refs[d])])
                        tracker.log_result(result, parent)
                        if archive is not None and (note := archive.add(result)):
                            console.print(note, markup=False, highlight=False)
                        outcome.results[job.id] = result
                        if result.status == "FINISHED":
                            outcome.counts[job.kind]["done"] += 1
                            bar.counts["done"] += 1
                        else:
                            outcome.failed.append(result)
                            outcome.counts[job.kind]["failed"] += 1
                            bar.counts["failed"] += 1
            bar.update(ready=0)
        rows = [attack_row(r) for r in outcome.results.values() if r.kind == "attack" and r.status == "FINISHED"]
        with ThreadPoolExecutor(1) as pool:  # every job has ended: Ray is no longer needed
            logged = pool.submit(_log_summaries, tracker, parent, rows, finished, cfg.report.tolerance,
                                 partial(grouping_params, plan, cfg))
            if started:
                _ray().shutdown()
                started = False
            logged.result()
        outcome.studies = collect_studies([j for j in plan.attacks if outcome.results[j.id].status == "FINISHED"],
                                          storage, console)
        status = "FINISHED" if outcome.ok else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        if not started:  # a cluster outlives this driver: free its CPUs. A Ray this driver started ends with
            # ray.shutdown below, workers and all; cancelling first only races Ray's task manager, whose fatal
            # check ("Tried to complete task that was not pending") aborted the driver twice under load.
            for ref in pending:
                _ray().cancel(ref, force=True)
        raise
    finally:
        outcome.seconds = time.perf_counter() - start
        try:  # the sweep's run is ended before Ray goes, so nothing Ray's shutdown does can leave it RUNNING
            if archive is not None:
                try:
                    archive.compact(outcome.results.values())
                except OSError as err:  # every result was appended as it landed: the file is whole, only unsorted
                    console.print(f"note: results archive {archive.path} not rewritten: {err.strerror or err}",
                                  markup=False, highlight=False)
            try:
                counts = {f"jobs_{what}": float(sum(c[what] for c in outcome.counts.values()))
                          for what in ("done", "skipped")}
                tracker.close_sweep(parent, status, {"sweep_seconds": outcome.seconds,
                                                     "jobs_failed": len(outcome.failed), **counts}, started=started_at)
            except BenchError as err:
                if sys.exc_info()[0] is None:  # nothing else is on its way out: this is the error to report
                    raise
                console.print(f"note: {err}", markup=False, highlight=False)
        finally:
            if started:
                _ray().shutdown()
    return outcome


RESOLVED_TAG = "resolved.attacks"  # on the sweep run: the attacks `attacks.names` meant when it last ran


def registry_change(before: str, now: str) -> str:
    """What a rerun says when `attacks.names` resolves to other attacks than when the sweep last ran (a plugin
    installed or removed): the jobs that adds are then run, not slipped in unannounced."""
    old, new = before.split(","), now.split(",")
    added, removed = [a for a in new if a not in old], [a for a in old if a not in new]
    return ("note: the attack registry changed since this sweep last ran: "
            + "; ".join(part for part in (f"added {', '.join(added)}" if added else "",
                                         f"removed {', '.join(removed)}" if removed else "") if part)
            + f" (attacks.names now means {now}); the jobs this adds run now")


def grouping_params(plan: Plan, cfg: SweepConfig, summary: Summary) -> dict[str, Any]:
    """What a summary run is grouped, filtered and charted by in the MLflow UI, as numbers: the protection
    budget of its cell as configured (a matched control's own count is its `encrypted_pct`; a method that
    changes all weights has none), the attacker's share in percent and its tuning trials (the compute cap,
    `epochs`, is a param of every summary already)."""
    params: dict[str, Any] = {"attacker_pct": round(100 * summary.fraction, 6), "trials": cfg.attacks.trials}
    if summary.cell != ALL_CELLS:
        budget = next(job.budget for job in plan.encrypts if job.cell == summary.cell)
        params.update({"budget.max_params": budget["max_params"], "budget.eps": budget["eps"]})
    return params


def _log_summaries(tracker: Tracker, parent: str, rows: list[AttackRow], logged: dict[str, JobResult],
                   tolerance: float, params: Callable[[Summary], dict[str, Any]]) -> None:
    """Log the summaries of the attack ``rows`` (verdicts against ``tolerance``) with their grouping ``params``,
    each replacing its earlier run; one that the store already holds as it is (``logged``, as
    `Tracker.finished` read it) is left alone, so a rerun with nothing new writes nothing."""
    for summary in summarize(rows, tolerance=tolerance):
        result = summary_result(summary)
        result.params.update(params(summary))
        if not _recorded(result, logged.get(result.job_id)):
            tracker.log_result(result, parent)


def _recorded(result: JobResult, run: JobResult | None) -> bool:
    """Whether ``run`` (read back from MLflow: params as strings) records ``result`` as it is."""
    return (run is not None and run.status == "FINISHED"
            and same_metrics(run.metrics, {k: float(v) for k, v in result.metrics.items() if v is not None})
            and run.params == {k: str(v)[:MAX_PARAM] for k, v in result.params.items()}
            and all(run.tags.get(k) == str(v) for k, v in result.tags.items()))


def print_outcome(outcome: SweepOutcome, console: Console) -> None:
    table = Table(title=f"sweep finished in {outcome.seconds:.0f} s")
    for col in ("jobs", "done", "skipped", "failed"):
        table.add_column(col, justify="left" if col == "jobs" else "right")
    for kind, c in outcome.counts.items():
        table.add_row(kind, str(c["done"]), str(c["skipped"]), str(c["failed"]))
    console.print(table)
    for r in outcome.failed[:10]:  # names hold [n=8,eps=1]: printed literally, never read as markup
        console.print(Text.assemble(("FAILED", "red"), f" {r.name}: {r.error}"))
    if outcome.studies is not None:
        console.print(f"Optuna studies, one per attack job named by its id: {outcome.studies} "
                      f"(optuna-dashboard {outcome.studies})", markup=False, highlight=False, soft_wrap=True)
