"""Mixed precision (AMP) and channels_last for the training and evaluation loops.

Both speed up convolutional networks on GPUs with tensor cores and rarely help on a CPU, so ``auto`` (the
default) turns them on for CUDA only; ``on`` forces them anywhere (bfloat16 autocast on a CPU), ``off``
never. Like torch's thread count, the setting is per process: a job sets it once (`use`) and every loop of
`common.training` follows it. Encryption and the adaptive attack's gradient ranking stay in float32: a
key's positions must not depend on rounding. Weights leave a loop in their own dtype and contiguous, so
model files and keys have the same form whatever the setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import ContextManager, Literal

import torch
from torch import nn

Mode = Literal["auto", "on", "off"]
MODES: tuple[Mode, ...] = ("auto", "on", "off")


@dataclass(frozen=True)
class Acceleration:
    amp: Mode = "auto"
    channels_last: Mode = "auto"

    def __post_init__(self) -> None:
        for name in ("amp", "channels_last"):
            if getattr(self, name) not in MODES:
                raise ValueError(f"{name} must be one of {', '.join(MODES)}, got {getattr(self, name)!r}")

    def amp_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype on ``device`` (None: full precision): bfloat16 where supported, else float16."""
        if not _enabled(self.amp, device):
            return None
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16

    def uses_channels_last(self, device: torch.device) -> bool:
        return _enabled(self.channels_last, device)

    def describe(self, device: torch.device) -> dict[str, str]:
        """What runs on ``device`` under this setting, as run tags: ``{"amp": "bfloat16", "channels_last": "on"}``."""
        dtype = self.amp_dtype(device)
        return {"amp": str(dtype).removeprefix("torch.") if dtype is not None else "off",
                "channels_last": "on" if self.uses_channels_last(device) else "off"}


def _enabled(mode: Mode, device: torch.device) -> bool:
    return mode == "on" or (mode == "auto" and device.type == "cuda")


_current = Acceleration()


def use(setting: Acceleration) -> None:
    """Set this process's acceleration (a job does, before it trains or evaluates anything)."""
    global _current
    _current = setting


def current() -> Acceleration:
    return _current


def autocast(device: torch.device) -> ContextManager[object]:
    """Autocast for a forward pass on ``device`` under the current setting (a no-op when it is off)."""
    dtype = _current.amp_dtype(device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler, enabled only for float16 autocast (bfloat16 has float32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=_current.amp_dtype(device) == torch.float16)


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


_in_layout: set[int] = set()  # ids of the models inside a `layout` block now


@contextmanager
def layout(model: nn.Module, device: torch.device) -> Iterator[bool]:
    """Within the block, ``model``'s 4-D weights are channels_last when the setting asks for it and the model
    has convolutions; after it they are contiguous again. Yields whether inputs should be converted too. A
    block inside another for the same model (an evaluation during training) leaves the layout to the outer."""
    if not (_current.uses_channels_last(device) and _has_conv(model)):
        yield False
        return
    if id(model) in _in_layout:
        yield True
        return
    model.to(memory_format=torch.channels_last)
    _in_layout.add(id(model))
    try:
        yield True
    finally:
        _in_layout.discard(id(model))
        model.to(memory_format=torch.contiguous_format)


def inputs(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A batch in the layout `layout` chose (images only: 4-D tensors)."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x
