"""Training as an attack step: the shared params and recipes, early stopping, and a seeded loop within the compute.

Fine-tuning, training from scratch, recovery after pruning and descent on suspected scalars all train the
same way; they share the declared ``lr``/``optimizer``/``patience`` params, the known-good recipes a tuner
tries first, and :func:`fit`, which wraps :func:`common.training.train`: it trains until the run's compute
is spent or the attacker's val accuracy has not improved for ``patience`` epochs, then restores the best
state (:class:`BestState`), so more compute never leaves a worse model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from attacks.base import AttackerData, ComputeMeter, Param, Report
from common.training import OPTIMIZERS, StopTraining, accuracy, train

LR = Param("lr", "float", 3e-3, low=1e-4, high=0.1, log=True, help="learning rate")
OPTIMIZER = Param("optimizer", "choice", "adam", choices=OPTIMIZERS, help="adam, or sgd (momentum 0.9)")
PATIENCE = Param(
    "patience", "int", 5, low=1, high=1000, tune=False,
    help="epochs without a better attacker val accuracy before training stops (the best state is kept)",
)
FINETUNE_AFTER = Param("finetune_after", "bool", True, help="fine-tune afterwards, with the compute left")

RECIPES = ({"optimizer": "sgd", "lr": 0.05}, {"optimizer": "adam", "lr": 1e-3})
"""Tried, in order, right after the defaults (Adam, lr 3e-3: of the three, the best for scratch on Fashion-MNIST
LeNet-5 with 1 % of the data and 3.3 epochs, where SGD lags): SGD with momentum 0.9 at lr 0.05 (the best there
for fine-tuning), and Adam at the common lr 1e-3."""

MIN_STEPS = 8


def batch_size(samples: int) -> int:
    """128, or smaller so that an epoch over ``samples`` takes at least ``MIN_STEPS`` steps (>= 8)."""
    return max(8, min(128, samples // MIN_STEPS))


class BestState:
    """The model's state with the best attacker val accuracy so far, starting with the state it has now.

    :meth:`check` evaluates the model (forward-only, noted on the meter), reports it, keeps its state if it
    is strictly better than every earlier one, and raises :class:`common.training.StopTraining` after
    ``patience`` checks in a row without improvement (``None``: never); :meth:`restore` loads the best.
    """

    def __init__(
        self, model: nn.Module, data: AttackerData, meter: ComputeMeter, *, patience: int | None, report: Report | None
    ) -> None:
        self.model, self.data, self.meter, self.patience, self.report = model, data, meter, patience, report
        self.best = self._evaluate()
        self.state = copy.deepcopy(model.state_dict())
        self.stale = 0

    def _evaluate(self) -> float:
        self.meter.see(len(self.data.val))
        return accuracy(self.model, self.data.val)  # restores the model's mode

    def check(self, step: int) -> float:
        value = self._evaluate()
        if self.report is not None:
            self.report(step, value)
        if value > self.best:
            self.best, self.state, self.stale = value, copy.deepcopy(self.model.state_dict()), 0
        else:
            self.stale += 1
            if self.patience is not None and self.stale >= self.patience:
                raise StopTraining
        return value

    def restore(self) -> nn.Module:
        self.model.load_state_dict(self.state)
        return self.model


def fit(
    model: nn.Module,
    data: AttackerData,
    meter: ComputeMeter,
    *,
    lr: float,
    optimizer: str,
    seed: int,
    patience: int,
    report: Report | None = None,
    params: list[nn.Parameter] | None = None,
    on_batch: Callable[[], None] | None = None,
    train_mode: bool = True,
) -> nn.Module:
    """Train ``model`` in place on the attacker's train split with the compute ``meter`` has left, seeded.

    Val accuracy is checked (and reported) after every epoch; training stops when the compute is spent or
    after ``patience`` epochs without a better one, and the best state, the starting one included, is
    restored. Batches hold up to 128 samples, fewer for a small share, so that every epoch takes at least
    ``MIN_STEPS`` optimizer steps: an attacker holding 1 % of a data set still gets to train. ``on_batch``
    runs after every step (e.g. re-applying a pruning mask); ``train_mode=False`` keeps batch-norm statistics.
    """
    torch.manual_seed(seed)  # dropout and any other global randomness; shuffles use ``seed`` too
    best = BestState(model, data, meter, patience=patience, report=report)
    samples = len(data.train)

    def spend(count: int) -> None:
        meter.charge(count)
        if on_batch is not None:
            on_batch()

    with torch.enable_grad():
        train(
            model,
            data.train,
            epochs=math.ceil(meter.remaining / samples),
            lr=lr,
            optimizer=optimizer,
            seed=seed,
            batch_size=batch_size(samples),
            params=params,
            on_epoch=lambda epoch, _loss: best.check(epoch),
            on_batch=spend,
            max_samples=meter.remaining,
            train_mode=train_mode,
        )
    return best.restore()
