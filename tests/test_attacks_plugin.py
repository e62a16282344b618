"""The example plugin in tests/plugin_example installs with pip and is found by entry point.

The check runs in a fresh interpreter, which reads the installed entry points anew. The package
is built from a copy so no build output lands in the repository, and it is uninstalled afterwards.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent / "plugin_example"
DIST = "advparams-example-plugin"

CHECK = """
import warnings
warnings.simplefilter("error")  # a plugin that fails to load would warn
import torch
from torch import nn
from torch.utils.data import TensorDataset
import attacks

assert "noise" in attacks.attack_names(), attacks.attack_names()
attack = attacks.get_attack("noise")
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
split = TensorDataset(torch.randn(16, 4), torch.arange(16) % 2)
data = attacks.AttackerData(split, split, 2)
budget = attacks.AttackerBudget(0.5, trials=2)
before = [p.clone() for p in model.parameters()]
result = attack.run(model, data, {"sigma": "0.2"}, budget, seed=1)  # run() checks the params
assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "input model modified"
assert not torch.equal(result.model[0].weight, model[0].weight), "no noise added"
assert result.model(split.tensors[0]).shape == (16, 2)
tuned = attacks.tune(attack, model, data, budget)
assert len(tuned.trials) == 2
print("plugin ok")
"""


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture()
def installed_plugin(tmp_path: Path) -> Iterator[None]:
    source = tmp_path / "plugin_example"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    done = pip("install", "--no-deps", "--no-build-isolation", "-q", str(source))
    try:
        assert done.returncode == 0, f"pip install failed: {done.stderr.strip()}"
        yield
    finally:
        gone = pip("uninstall", "-y", DIST)
        assert gone.returncode == 0, f"pip uninstall {DIST} failed: {gone.stderr.strip()}"


@pytest.mark.skipif(
    importlib.util.find_spec("pip") is None, reason="pip is not installed in this environment"
)
@pytest.mark.usefixtures("installed_plugin")
def test_example_plugin_is_found_by_entry_point() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "plugin ok"
