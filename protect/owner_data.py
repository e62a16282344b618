"""The owner's samples: checked once, then evaluated for accuracy and for the loss gradient.

``data`` may be any iterable of ``(inputs, labels)`` batches, so it is turned into a list once and
moved to the model's device (and floating inputs to its dtype, so a half-precision model takes
float32 data). The loss is cross-entropy computed in float32 and averaged over all owner samples,
accumulated batch by batch; averaging rather than summing keeps half-precision gradients from
overflowing and does not change their direction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from protect.errors import ProtectError

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class OwnerPass:
    """One pass over the owner samples: accuracy, the batches run forward and backward, and the loss gradient per
    requested tensor."""

    accuracy: float
    batches: int
    grads: list[torch.Tensor]


def owner_batches(data: Iterable[Batch], model: nn.Module) -> list[Batch]:
    """The batches of ``data`` as a list on the model's device; one-line ProtectError if malformed."""
    if isinstance(data, torch.Tensor):
        raise ProtectError("data must be an iterable of (inputs, labels) batches, not a single tensor")
    try:
        items = list(data)
    except TypeError:
        kind = type(data).__name__
        raise ProtectError(f"data must be an iterable of (inputs, labels) batches, got {kind}") from None
    if not items:
        raise ProtectError("data holds no batches; encryption needs owner samples")
    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    out = []
    for i, item in enumerate(items):
        if (
            not isinstance(item, Sequence)
            or len(item) != 2
            or not all(isinstance(t, torch.Tensor) for t in item)
        ):
            raise ProtectError(f"data batch {i} is not an (inputs, labels) pair of tensors")
        x, y = item
        if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool or len(y) != len(x) or not len(y):
            raise ProtectError(
                f"data batch {i} needs 1-d integer labels, one per input (got labels of shape "
                f"{tuple(y.shape)} and dtype {y.dtype} for inputs of shape {tuple(x.shape)}); "
                "pass batches, not single samples"
            )
        x = x.to(device, dtype) if x.is_floating_point() else x.to(device)
        out.append((x, y.to(device, torch.int64)))
    return out


def num_classes(model: nn.Module, batches: list[Batch]) -> int:
    """Width of the model's output on the first batch; checks every label fits it."""
    with torch.no_grad():
        logits = model(batches[0][0])
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[1] < 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ProtectError(f"model output must be class scores of shape (batch, classes >= 2), got {shape}")
    classes = logits.shape[1]
    for i, (_, y) in enumerate(batches):
        if int(y.min()) < 0 or int(y.max()) >= classes:
            raise ProtectError(
                f"data batch {i} has labels outside [0, {classes - 1}] for a {classes}-class model"
            )
    return classes


def owner_pass(
    model: nn.Module,
    batches: list[Batch],
    params: Sequence[nn.Parameter] = (),
    loss: str = "ce",
    gradient_samples: int | None = None,
) -> OwnerPass:
    """Owner accuracy (over every sample) and the float32 gradient of the mean ``loss`` w.r.t. ``params`` (none:
    accuracy only), taken over the first ``gradient_samples`` samples (``None``: all); the others run forward only."""
    total = sum(len(y) for _, y in batches)
    head = 0 if not params else total if gradient_samples is None else min(gradient_samples, total)
    correct = backward = seen = 0
    grads = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    for x, y in batches:
        cut = min(max(head - seen, 0), len(y))
        parts = ((x[:cut], y[:cut], True), (x[cut:], y[cut:], False)) if 0 < cut < len(y) else ((x, y, cut > 0),)
        for xs, ys, with_grad in parts:
            with _gradients_for(params if with_grad else ()):
                logits = model(xs)
                correct += int((logits.argmax(dim=1) == ys).sum())
                if with_grad:
                    backward += 1
                    value = _loss(logits.float(), ys, loss) / head
                    for acc, g in zip(grads, torch.autograd.grad(value, params), strict=True):
                        acc += g.float()
        seen += len(y)
    return OwnerPass(accuracy=correct / total, batches=backward, grads=grads)


def _loss(logits: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """The summed loss encryption ascends: cross-entropy, or minus the true class's positive margin."""
    if kind == "ce":
        return F.cross_entropy(logits, y, reduction="sum")
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return -(true - others).clamp(min=0).sum()


@contextmanager
def _gradients_for(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Autograd on for a gradient pass (frozen ``params`` unfrozen for it), off for accuracy-only passes."""
    if not params:
        with torch.no_grad():
            yield
        return
    frozen = [p for p in params if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield
    finally:
        for p in frozen:
            p.requires_grad_(False)
