"""The registry of encryption methods: a method is one function, registered by name, in one file.

A method receives an ``EncryptionRun`` (model in eval mode, owner batches, budget, candidates and
the ledger through which every change must go) and returns its own non-secret stats, including a
``stop_reason``. Everything common to all methods (validation, fingerprints, owner accuracy before
and after, building the key, undoing a failed run) is done once by ``protect.encryption``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from protect.budget import Budget
from protect.candidates import Candidates
from protect.errors import ProtectError
from protect.ledger import Ledger
from protect.owner_data import Batch

Progress = Callable[[int, int], None]


@dataclass
class EncryptionRun:
    """What a method works on. ``target_accuracy`` is resolved (chance level when the budget says None)."""

    model: nn.Module
    batches: list[Batch]
    budget: Budget
    candidates: Candidates
    ledger: Ledger
    target_accuracy: float
    progress: Progress | None = None

    def report_progress(self) -> None:
        """Tell the caller how many scalars have changed so far, out of ``budget.max_params``."""
        if self.progress is not None:
            self.progress(self.ledger.count, self.budget.max_params)


Method = Callable[[EncryptionRun], dict[str, Any]]

METHODS: dict[str, Method] = {}


def register_method(name: str) -> Callable[[Method], Method]:
    """Decorator adding a method to ``METHODS`` under ``name``; a name may be registered once."""

    def add(method: Method) -> Method:
        if name in METHODS:
            raise ProtectError(f"encryption method {name!r} is already registered")
        METHODS[name] = method
        return method

    return add


def get_method(name: str) -> Method:
    """The method registered as ``name``, or a ProtectError listing the registered names."""
    if name not in METHODS:
        raise ProtectError(f"unknown encryption method {name!r}; registered: {', '.join(sorted(METHODS))}")
    return METHODS[name]
