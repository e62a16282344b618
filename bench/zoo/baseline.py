"""Clean baseline models, trained once per (data set, model, seed, training settings) and cached.

Every encryption and attack job of a sweep starts from one of these files, so a baseline is trained once
and shared; the file is named by the train job's id, a hash of everything that determines its weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import ValidationError

from bench.errors import BenchError
from bench.sweep.config import Training
from bench.sweep.plan import TrainJob
from bench.zoo.data import DataSet
from bench.zoo.modelfile import ModelSpec, load_model, save_model
from bench.zoo.models import build_model
from common import acceleration
from common.training import accuracy, train


def training_settings(**values) -> Training:
    """Validated training settings; a bad value is one BenchError line."""
    try:
        return Training(**values)
    except ValidationError as err:
        e = err.errors()[0]
        raise BenchError(f"training {'.'.join(map(str, e['loc']))}: {e['msg']}") from None


def compute_device() -> torch.device:
    """CUDA when this process can see a GPU (Ray sets CUDA_VISIBLE_DEVICES for tasks given one)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_baseline(
    job: TrainJob, data: DataSet, out: Path, *, retrain: bool = False, on_batch: Callable[[], None] | None = None
) -> tuple[Path, float]:
    """Train the baseline ``job`` describes and write it to ``out``; return the path and test accuracy.

    An existing ``out`` is the cache hit: it is loaded and evaluated, not retrained (unless ``retrain``;
    the old file is then replaced only once the new model is saved).
    """
    device = compute_device()
    if out.exists() and not retrain:
        model, _ = load_model(out, device=device)
        return out, accuracy(model, data.test)
    settings = training_settings(**job.training)
    torch.manual_seed(job.seed)
    model = build_model(job.model, num_classes=data.num_classes, input_shape=data.input_shape, **job.model_args)
    model.to(device)
    train(
        model,
        data.train,
        epochs=settings.epochs,
        lr=settings.lr,
        optimizer=settings.optimizer,
        batch_size=settings.batch_size,
        weight_decay=settings.weight_decay,
        seed=job.seed,
        on_batch=on_batch,
    )
    acc = accuracy(model, data.test)
    extra = {"state": "clean", "seed": job.seed, "training": settings.model_dump(), "test_accuracy": acc,
             **acceleration.current().describe(device)}
    if job.dataset_path:
        extra["data_path"] = job.dataset_path
    spec = ModelSpec(
        model=job.model,
        model_args=dict(job.model_args),
        dataset=data.name,
        num_classes=data.num_classes,
        input_shape=tuple(data.input_shape),
        mean=tuple(data.mean),
        std=tuple(data.std),
        classes=tuple(data.classes),
        extra=extra,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(out, model.cpu(), spec)
    return out, acc
