"""Training and evaluation loops over in-memory tensor data sets.

Shared by the attacks that train (fine-tuning, scratch, pruning with recovery) and by the harness,
which trains its clean baselines with the same loop. Data sets here are ``TensorDataset``s already
decoded and normalised, so batches are sliced from tensors rather than collated sample by sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.data import TensorDataset

from common import acceleration

OPTIMIZERS = ("sgd", "adam")


class StopTraining(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by an ``on_epoch`` or ``on_batch`` hook of :func:`train` to end training there (early stopping)."""


def batches(
    data: TensorDataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(inputs, labels)`` slices of a tensor data set, shuffled with ``generator`` if asked."""
    inputs, labels = data.tensors[0], data.tensors[1]
    n = len(labels)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield inputs[idx], labels[idx]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def count_params(model: nn.Module) -> int:
    """How many parameter scalars ``model`` has."""
    return sum(p.numel() for p in model.parameters())


def accuracy(model: nn.Module, data: TensorDataset, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on ``data``, in eval mode under `torch.inference_mode` with large batches
    (and AMP / channels_last where `common.acceleration` turns them on); the model's mode is restored after."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    correct = 0
    total = 0
    with acceleration.layout(model, device) as channels_last:  # outside inference mode: weights stay trainable
        with torch.inference_mode(), acceleration.autocast(device):
            for x, y in batches(data, batch_size):
                pred = model(acceleration.inputs(x.to(device, non_blocking=True), channels_last)).argmax(dim=1)
                correct += int((pred.cpu() == y).sum())
                total += len(y)
    model.train(was_training)
    return correct / max(total, 1)


def make_optimizer(
    params: list[nn.Parameter], name: str, lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """An optimizer by name: ``sgd`` (momentum 0.9) or ``adam``."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def planned_steps(samples: int, batch_size: int, epochs: int, max_samples: int | None = None) -> int:
    """Optimizer steps :func:`train` takes over ``epochs`` epochs of ``samples``, stopping at ``max_samples``.

    Shuffled batches are full but for each epoch's last, so a cut epoch runs ``remainder // batch_size`` steps.
    """
    per_epoch = -(-samples // batch_size)
    if max_samples is None or max_samples >= epochs * samples:
        return epochs * per_epoch
    full, remainder = divmod(max_samples, samples)
    return full * per_epoch + remainder // batch_size


def train(
    model: nn.Module,
    data: TensorDataset,
    *,
    epochs: int,
    lr: float,
    optimizer: str = "sgd",
    batch_size: int = 128,
    weight_decay: float = 0.0,
    seed: int = 0,
    params: list[nn.Parameter] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    max_samples: int | None = None,
    train_mode: bool = True,
) -> nn.Module:
    """Train ``model`` in place with cross-entropy and a cosine learning-rate schedule (with AMP and
    channels_last where `common.acceleration` turns them on).

    ``params`` restricts training to some parameters (all trainable ones by default). ``on_epoch``
    is called with (epoch index, mean training loss) after each epoch; ``on_batch`` with the batch's
    sample count after every step. Either may raise :class:`StopTraining` to end training there, or
    any other exception to abort it (Optuna's pruning does). ``max_samples`` caps the samples passed
    through the backward pass: training stops before a batch that would exceed it, the schedule spans
    what fits, and the cut epoch still ends with ``on_epoch``. ``train_mode=False`` trains in eval
    mode, keeping batch-norm statistics and dropout as they are.
    """
    device = model_device(model)
    trainable = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(trainable, optimizer, lr, weight_decay)
    steps = planned_steps(len(data), batch_size, epochs, max_samples)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    scaler = acceleration.grad_scaler(device)
    left = max_samples if max_samples is not None else epochs * len(data)
    model.train(train_mode)
    with acceleration.layout(model, device) as channels_last:
        try:
            for epoch in range(epochs):
                total_loss = 0.0
                count = ran = 0
                for x, y in batches(data, batch_size, shuffle=True, generator=gen):
                    if len(y) > left:
                        break
                    left -= len(y)
                    ran += 1
                    x, y = acceleration.inputs(x.to(device, non_blocking=True), channels_last), y.to(device, non_blocking=True)
                    opt.zero_grad(set_to_none=True)
                    with acceleration.autocast(device):
                        loss = loss_fn(model(x), y)
                    scale = scaler.get_scale() if scaler.is_enabled() else 1.0
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    # A float16 overflow makes the scaler skip the step (and lower its scale): the schedule
                    # then waits, and the loss stays out of the epoch's mean.
                    if not scaler.is_enabled() or scaler.get_scale() >= scale:
                        sched.step()
                        total_loss += float(loss.detach()) * len(y)
                        count += len(y)
                    if on_batch is not None:
                        on_batch(len(y))
                if ran == 0:
                    break
                if on_epoch is not None:
                    on_epoch(epoch, total_loss / max(count, 1))
        except StopTraining:
            pass
    model.eval()
    return model
