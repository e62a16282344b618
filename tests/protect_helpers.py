"""Small models and data for the protect/ tests: tiny, seeded, and fast on two CPU cores."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from common.params import Param
from common.training import train
from protect import METHODS, EncryptionRun, register_method, state_fingerprint


def mlp(seed: int = 0, width: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(10, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 4)
    )


def bn_cnn(seed: int = 0) -> nn.Module:
    """A CNN with batch norm (running statistics are buffers, which the fingerprints must cover)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )


def conv1d_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(2, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 14, 3))


ARCHITECTURES = {"mlp": mlp, "bn_cnn": bn_cnn, "conv1d": conv1d_net}
INPUT_SHAPES = {"mlp": (10,), "bn_cnn": (1, 8, 8), "conv1d": (2, 16)}
CLASSES = {"mlp": 4, "bn_cnn": 10, "conv1d": 3}


def batches(
    arch: str, n: int = 96, batch_size: int = 32, seed: int = 1
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random inputs labelled by a fixed random linear map: learnable, and enough to compute gradients."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *INPUT_SHAPES[arch], generator=gen)
    w = torch.randn(x[0].numel(), CLASSES[arch], generator=gen)
    y = (x.reshape(n, -1) @ w).argmax(dim=1)
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)]


def with_bn_stats(model: nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]) -> nn.Module:
    """Run the data through in train mode once so batch-norm buffers hold non-default values."""
    model.train()
    with torch.no_grad():
        for x, _ in data:
            model(x.to(next(model.parameters()).dtype))
    return model.eval()


def states_equal(a: nn.Module | dict[str, torch.Tensor], b: nn.Module | dict[str, torch.Tensor]) -> bool:
    """Bit-for-bit equality of every state entry (parameters and buffers), names included."""
    sa = a.state_dict() if isinstance(a, nn.Module) else a
    sb = b.state_dict() if isinstance(b, nn.Module) else b
    return sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa
    )


def changed_scalars(before: dict[str, torch.Tensor], model: nn.Module) -> set[tuple[str, int]]:
    """Positions (name, flat index) where the model's state differs from ``before``."""
    out = set()
    for name, value in model.state_dict().items():
        diff = (value.reshape(-1) != before[name].reshape(-1)).nonzero().reshape(-1)
        out |= {(name, int(i)) for i in diff}
    return out


def assert_one_line_and_untouched(excinfo: object, model: nn.Module, fingerprint: str) -> None:
    message = str(excinfo.value)  # type: ignore[attr-defined]
    assert message and "\n" not in message
    assert state_fingerprint(model) == fingerprint


@dataclass(frozen=True)
class Digits:
    """A digits CNN trained once per test session, its owner samples and its held-out test set."""

    state: dict[str, torch.Tensor]
    owner: list[tuple[torch.Tensor, torch.Tensor]]
    test: TensorDataset

    def model(self) -> nn.Module:
        model = bn_cnn()
        model.load_state_dict(copy.deepcopy(self.state))
        return model.eval()


@lru_cache(maxsize=1)
def digits() -> Digits:
    """scikit-learn's 8x8 digits (bundled, no download): 1200 to train, 200 of them as owner samples."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(raw.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train_idx, test_idx = order[:1200], order[1200:]
    model = bn_cnn()
    train(model, TensorDataset(x[train_idx], y[train_idx]), epochs=6, lr=0.01, optimizer="adam", seed=0)
    owner = [(x[train_idx[i : i + 100]], y[train_idx[i : i + 100]]) for i in (0, 100)]
    return Digits(copy.deepcopy(model.state_dict()), owner, TensorDataset(x[test_idx], y[test_idx]))


SIGN = Param("sign", "choice", 1, choices=(1, -1), help="direction of every move")


def first_scalars(run: EncryptionRun) -> dict[str, Any]:
    """A test method: the first movable scalars in candidate order, each moved by eps in the direction ``sign``."""
    for name in run.candidates.names:
        wanted = run.budget.max_params - run.ledger.count
        sign = torch.full((run.candidates.params[name].numel(),), run.options["sign"])
        movable = (run.ledger.propose(name, sign)[1] > 0).nonzero().reshape(-1)[:wanted].cpu()
        run.ledger.apply(name, movable, sign[movable])
    run.report_progress()
    return {"stop_reason": "max_params" if run.ledger.count == run.budget.max_params else "no_movable_scalar"}


@contextmanager
def registered(name: str, function: Any = first_scalars, options: tuple[Param, ...] = (SIGN,)) -> Iterator[str]:
    """``function`` registered as method ``name`` for the duration of the block."""
    register_method(name, options=options)(function)
    try:
        yield name
    finally:
        METHODS.remove(name)
