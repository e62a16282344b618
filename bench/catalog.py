"""What is registered, as plain data: every protection method, attack, data set and model with its parameters.

Read from the four registries, never from a hand-written list, so ``advparams list`` shows a plugin the moment
it is installed. The registries are imported only when asked (they import torch), so the command line's
``--help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.params import Param, describe
from common.registry import summary

KINDS = ("methods", "attacks", "datasets", "models")


def _params(params: tuple[Param, ...]) -> list[dict[str, Any]]:
    return [describe(p) for p in params]


def methods() -> list[dict[str, Any]]:
    from protect.registry import METHODS

    return [{"name": name, "summary": m.summary, "options": _params(m.options)} for name, m in METHODS.items()]


def attacks() -> list[dict[str, Any]]:
    from attacks.registry import ATTACKS

    return [
        {"name": name, "summary": summary(cls), "paper": cls.paper, "uses_weights": cls.uses_weights,
         "params": _params(cls.params)}
        for name, cls in ATTACKS.items()
    ]


def datasets() -> list[dict[str, Any]]:
    from bench.zoo.data import DATASETS

    return [{"name": name, "summary": d.summary, "needs_path": d.needs_path} for name, d in DATASETS.items()]


def models() -> list[dict[str, Any]]:
    from bench.zoo.models import MODELS, model_arguments

    return [
        {"name": name, "summary": summary(factory), "arguments": model_arguments(factory)}
        for name, factory in MODELS.items()
    ]


READERS: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "methods": methods, "attacks": attacks, "datasets": datasets, "models": models,
}


def catalog(kinds: tuple[str, ...] = KINDS) -> dict[str, list[dict[str, Any]]]:
    """``{kind: [entry, ...]}`` for each of ``kinds``."""
    return {kind: READERS[kind]() for kind in kinds}
