"""The sweep's jobs: one typed entry point per kind, each a function of its spec and its inputs' files.

A job reads the files its upstream jobs stored (`bench.sweep.storage`: a shared folder or an object store),
stores its own, and returns a `JobResult` of plain figures. It never touches MLflow (the driver logs) and
never returns a key (keys stay in the storage's private folder). Because a job depends only on its spec, it
can run alone, in a test, on any node, and be retried.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from attacks import AttackerBudget
from bench.errors import BenchError
from bench.sweep.config import SweepConfig
from bench.sweep.plan import AttackJob, EncryptJob, Job, TrainJob
from bench.sweep.results import CELL_METRICS, JobResult, recovery
from bench.sweep.storage import Storage
from bench.zoo.baseline import compute_device, train_baseline
from bench.zoo.data import DataSet, default_data_root
from bench.zoo.modelfile import load_model
from bench.zoo.models import build_model
from bench.zoo.workflow import (
    DataOptions,
    attack_model,
    encrypt_file,
    read_key,
    verify_decryption,
)
from common import acceleration
from common.acceleration import Acceleration
from common.files import sha256


@dataclass(frozen=True)
class JobContext:
    """What every job needs besides its spec: where files live (a folder or an object store's URL), where
    data comes from, its threads."""

    storage: str | Path
    data: DataOptions
    num_threads: int = 1
    acceleration: Acceleration = Acceleration()

    @classmethod
    def for_config(cls, cfg: SweepConfig, num_threads: int = 1) -> JobContext:
        """The context of ``cfg``'s jobs: its storage and data root (resolved, so every node and process reads
        the same folders), its acceleration setting, ``num_threads`` torch threads."""
        root = Path(cfg.data_root) if cfg.data_root else default_data_root()
        return cls(storage=Storage.at(cfg.storage).root, data=DataOptions(root.resolve(), cfg.download),
                   num_threads=max(1, num_threads), acceleration=Acceleration(cfg.jobs.amp, cfg.jobs.channels_last))

    def prepare(self) -> None:
        torch.set_num_threads(max(1, self.num_threads))
        acceleration.use(self.acceleration)

    @contextmanager
    def job(self) -> Iterator[Storage]:
        """Set the job's threads and acceleration; the storage it works through, for its lifetime
        (`bench.sweep.storage.Storage.for_job`)."""
        self.prepare()
        with Storage.at(self.storage).for_job() as storage:
            yield storage

    def options(self, job: TrainJob) -> DataOptions:
        """The data options, pointed at the job's own folder for the imagefolder data set."""
        return self.data.for_folder(job.dataset_path)

    def dataset(self, job: TrainJob) -> DataSet:
        return self.options(job).load(job.dataset)


def _environment_tags() -> dict[str, str]:
    device = compute_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"host": platform.node(), "device": f"{device.type}:{name}", **acceleration.current().describe(device)}


# ------------------------------------------------------------------------------------------- verified files
DIGEST_TAG = "sha256."  # + the file's role: a job's result records the digest of each file it wrote


def output_files(job: Job, storage: Storage) -> dict[str, Path]:
    """The files a job writes for its dependants, by role."""
    if isinstance(job, TrainJob):
        return {"baseline": storage.baseline(job)}
    if isinstance(job, EncryptJob):
        return {"model": storage.encrypted(job), "key": storage.key(job)}
    return {}


def _store_outputs(job: Job, storage: Storage) -> dict[str, str]:
    """Store the files the job wrote; the tags that record each one's digest."""
    tags = {}
    for role, path in output_files(job, storage).items():
        storage.publish(path)
        tags[DIGEST_TAG + role] = sha256(path)
    return tags


def damaged_output(job: Job, storage: Storage, result: JobResult, *, copies: bool = False) -> str | None:
    """Why the files a finished job stored cannot be used (missing, unreadable, or not the bytes its result
    recorded: altered or truncated), or None when they are intact; ``copies``: check the working copies a job
    fetched instead. A result without digests (written before they were recorded) is checked for the files'
    existence only."""
    for role, path in output_files(job, storage).items():
        recorded = result.tags.get(DIGEST_TAG + role)
        where = storage.where(path)
        try:
            digest = (sha256(path) if path.is_file() else None) if copies else storage.sha256(path)
        except OSError as err:
            return f"its {role} file {where} cannot be read: {err.strerror or err}"
        if digest is None:
            return f"its {role} file {where} is missing"
        if recorded is not None and digest != recorded:
            return f"its {role} file {where} is not the one it wrote (SHA-256 differs: altered or truncated)"
    return None


def _check_input(job: Job, storage: Storage, result: JobResult) -> None:
    """Fetch an upstream job's files; refuse them unless they are the bytes it wrote (a rerun rebuilds them)."""
    for path in output_files(job, storage).values():
        try:
            storage.fetch(path)
        except FileNotFoundError:
            pass  # said below, in the words of every other problem
    problem = damaged_output(job, storage, result, copies=True)
    if problem:
        raise BenchError(f"upstream job {job.name}: {problem}; rerun the sweep to rebuild it")


def _train_params(job: TrainJob) -> dict:
    return {"dataset": job.dataset, "model": job.model, "train_seed": job.seed,
            **{f"model.{k}": v for k, v in job.model_args.items()},
            **{f"train.{k}": v for k, v in job.training.items()}}


def run_train(job: TrainJob, ctx: JobContext) -> JobResult:
    with ctx.job() as storage:
        start = time.perf_counter()
        _, acc = train_baseline(job, ctx.dataset(job), storage.baseline(job))
        seconds = time.perf_counter() - start
        stored = _store_outputs(job, storage)
    return JobResult(
        job.id, "train", job.name,
        params={**_train_params(job), "seed": job.seed, "job_id": job.id},
        metrics={"acc_clean": acc, "train_seconds": seconds},
        tags={"kind": "train", "job_id": job.id, **_environment_tags(), **stored},
    )


def _budget_params(job: EncryptJob, max_params: int) -> dict:
    b = {**job.budget, "max_params": max_params}
    options = b.pop("options", {})
    return {"method": job.method, "cell": job.cell, "owner_samples": job.owner_samples,
            **{f"budget.{k}": (",".join(v) if isinstance(v, list) else v) for k, v in b.items()},
            **{f"budget.options.{k}": v for k, v in options.items()}}


def run_encrypt(job: EncryptJob, ctx: JobContext, train: JobResult, match: JobResult | None = None) -> JobResult:
    """Encrypt the baseline; a job matched to another (``protect.match``) changes as many scalars as it did."""
    import protect

    max_params = job.budget["max_params"]
    if match is not None:
        max_params = max(1, int(match.metrics["num_encrypted"]))
    budget = protect.Budget.from_dict({**job.budget, "max_params": max_params})
    with ctx.job() as storage:
        _check_input(job.train, storage, train)
        outcome = encrypt_file(
            storage.baseline(job.train), storage.encrypted(job), storage.key(job),
            budget=budget, method=job.method, data=ctx.options(job.train), split_seed=job.seed,
            owner_count=job.owner_samples, force=True,
        )
        acc_decrypted, exact = verify_decryption(
            storage.encrypted(job), storage.key(job), storage.baseline(job.train), data=ctx.options(job.train)
        )
        stored = _store_outputs(job, storage)
    stats = {f"stat.{k}": float(v) for k, v in outcome.stats.items() if isinstance(v, (int, float))}
    return JobResult(
        job.id, "encrypt", job.name,
        params={**_train_params(job.train), **_budget_params(job, max_params), "seed": job.seed, "job_id": job.id},
        metrics={
            "acc_clean": outcome.acc_clean, "acc_encrypted": outcome.acc_encrypted, "acc_decrypted": acc_decrypted,
            "drop_points": outcome.drop_points, "drop_relative": outcome.drop_relative,
            "encrypted_fraction": outcome.encrypted_fraction, "num_encrypted": float(outcome.num_changed),
            "total_params": float(outcome.total_params), "encrypt_seconds": outcome.seconds,
            "decrypt_bit_exact": float(exact), **stats,
        },
        tags={"kind": "encrypt", "job_id": job.id, "key_fingerprint": outcome.key_fingerprint, **_environment_tags(),
              **stored},
    )


def run_attack(job: AttackJob, ctx: JobContext, train: JobResult, encrypt: JobResult | None = None) -> JobResult:
    """Attack the encrypted model (or, for an attack that ignores weights, the baseline's architecture)."""
    budget = AttackerBudget(data_fraction=job.fraction, trials=job.trials, epochs=job.epochs)
    with ctx.job() as storage:
        ds = ctx.dataset(job.train)
        if job.encrypt is not None:
            _check_input(job.encrypt, storage, encrypt)
            model, _ = load_model(storage.encrypted(job.encrypt), device=compute_device())
        else:  # an attack that ignores the weights gets the architecture alone, never trained weights
            torch.manual_seed(job.seed)
            model = build_model(job.train.model, num_classes=ds.num_classes, input_shape=ds.input_shape,
                                **job.train.model_args).to(compute_device())
        key = read_key(storage.key(job.encrypt), None) if job.encrypt else None
        # A study file left here is a failed or killed attempt's: resumed, its sampler would go on from a state
        # no undisturbed run reaches, so a retry would give other figures than the same job id without one. The
        # job starts its study clean, named by the job's id; the file is stored afterwards, failed or not, for
        # inspection, and the driver copies a finished job's study into the sweep's one journal
        # (`bench.sweep.driver.collect_studies`). Nothing reads it mid-study, so it is written once, when the
        # trials end, not fsynced on every report. Optuna's journal needs a POSIX file: with an object store it
        # is written in the job's working folder and uploaded when the job ends.
        study = storage.study(job)
        study.unlink(missing_ok=True)
        try:
            outcome = attack_model(
                job.attack, model, ds, budget=budget, seed=job.seed, owner_count=job.owner_samples,
                val_fraction=job.val_fraction, fixed=job.fixed, key=key, study=study, study_name=job.id,
                durable_study=False,
            )
        finally:
            if study.is_file():
                storage.publish(study)
    metrics = {"acc_attacked": outcome.acc_attacked, "val_attacked": outcome.val_attacked,
               "val_encrypted": outcome.val_before, "attack_seconds": outcome.seconds,
               # the compute of every trial together, in epoch-equivalents (never above the cap, ``epochs``)
               "compute_epochs": outcome.compute_epochs, "forward_epochs": outcome.forward_epochs}
    params = {**_train_params(job.train), "attack": job.attack, "fraction": job.fraction, "trials": job.trials,
              "epochs": job.epochs, "seed": job.seed, "job_id": job.id,
              **{f"tuned.{k}": v for k, v in outcome.best_params.items()}}
    if encrypt is not None:
        metrics.update({k: encrypt.metrics[k] for k in (*CELL_METRICS, "encrypt_seconds") if k in encrypt.metrics})
        rec = recovery(encrypt.metrics["acc_clean"], encrypt.metrics["acc_encrypted"], outcome.acc_attacked)
        if rec is not None:
            metrics["recovery"] = rec
        params.update({k: v for k, v in encrypt.params.items() if k in ("method", "cell") or k.startswith("budget.")})
    else:
        metrics["acc_clean"] = train.metrics["acc_clean"]
    if outcome.key_precision is not None:
        metrics["key_precision"] = outcome.key_precision
        metrics["key_recall"] = outcome.key_recall
    trials = [asdict(t) for t in outcome.trials]
    return JobResult(
        job.id, "attack", job.name, params=params, metrics=metrics,
        tags={"kind": "attack", "job_id": job.id, **_environment_tags(),
              **({"key_fingerprint": encrypt.tags["key_fingerprint"]} if encrypt else {}),
              **({"failed_baseline": outcome.failed_baseline} if outcome.failed_baseline else {})},
        artifacts={"trials.json": json.dumps(trials, indent=1, default=str)},
    )


def run_job(job: Job, ctx: JobContext, *upstream: JobResult | None) -> JobResult:
    """Run any job, given its upstream jobs' results in `bench.sweep.plan.dependencies` order: the one entry point
    that the sweep's Ray workers and a plain loop both call (a worker imports this module, not the driver's)."""
    if isinstance(job, TrainJob):
        return run_train(job, ctx)
    if isinstance(job, EncryptJob):
        return run_encrypt(job, ctx, *upstream)
    return run_attack(job, ctx, *upstream)
