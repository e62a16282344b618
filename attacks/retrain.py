"""Training as an attack step: the shared params and a seeded loop that reports val accuracy.

Fine-tuning, training from scratch and recovery after pruning all train the same way; they share
the declared ``lr``/``optimizer`` params and :func:`fit`, which wraps :func:`common.training.train`
and reports validation accuracy after every epoch so a tuner can prune a hopeless trial.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from attacks.base import AttackerData, Param, Report
from common.training import OPTIMIZERS, accuracy, train

LR = Param("lr", "float", 0.01, low=1e-4, high=0.5, log=True, help="learning rate")
OPTIMIZER = Param("optimizer", "choice", "sgd", choices=OPTIMIZERS, help="sgd (momentum 0.9) or adam")


MIN_STEPS = 8


def batch_size(samples: int) -> int:
    """128, or smaller so that an epoch over ``samples`` takes at least ``MIN_STEPS`` steps (>= 8)."""
    return max(8, min(128, samples // MIN_STEPS))


def finetune_epochs(default: int) -> Param:
    """An int of recovery epochs after a destructive step, from 0 up to the budget's epochs."""
    return Param(
        "finetune_epochs",
        "int",
        default,
        low=0,
        epochs_bound=True,
        help="epochs of recovery fine-tuning afterwards (0 = none), at most the budget's epochs",
    )


def fit(
    model: nn.Module,
    data: AttackerData,
    *,
    epochs: int,
    lr: float,
    optimizer: str,
    seed: int,
    report: Report | None = None,
    params: list[nn.Parameter] | None = None,
    on_batch: Callable[[], None] | None = None,
) -> nn.Module:
    """Train ``model`` in place on the attacker's train split, seeded, reporting val accuracy.

    Batches hold up to 128 samples, fewer for a small share, so that every epoch takes at least
    ``MIN_STEPS`` optimizer steps: an attacker holding 1 % of a data set still gets to train.
    """
    torch.manual_seed(seed)  # dropout and any other global randomness; shuffles use ``seed`` too

    def on_epoch(epoch: int, _loss: float) -> None:
        if report is not None:
            report(epoch, accuracy(model, data.val))  # accuracy() restores training mode

    with torch.enable_grad():
        return train(
            model,
            data.train,
            epochs=epochs,
            lr=lr,
            optimizer=optimizer,
            seed=seed,
            batch_size=batch_size(len(data.train)),
            params=params,
            on_epoch=on_epoch,
            on_batch=on_batch,
        )
