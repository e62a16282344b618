"""Shared by the model, model-file and data-set tests: each built-in model's natural input shape, and a user's
module (models, data sets) written to a temporary folder."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

NATURAL = {
    "mlp": (1, 8, 8),
    "cnn": (1, 8, 8),
    "lenet5": (1, 28, 28),
    "vgg_compact": (3, 32, 32),
    "vgg11_bn": (3, 32, 32),
    "vgg16_bn": (3, 32, 32),
    "resnet18": (3, 32, 32),
}


def importable_module(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str) -> Iterator[str]:
    """Write ``source`` as a module under ``tmp_path``, importable under a unique name (yielded) while it lives."""
    name = f"{prefix}_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)
