"""Extending the harness touches no file of this repository: a protection method, a data set and a model
written in one outside module, declared through entry points, run through `advparams list`, `advparams sweep
--dry-run` and a real tiny sweep on Ray.

The outside package is a module and a ``.dist-info`` folder on ``PYTHONPATH`` (what pip would install), so
the commands, and the Ray workers they start, find it exactly as they find an installed plugin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = '''
"""A user's extension: one protection method, one data set and one model."""

import torch
from torch import nn

from bench.zoo.data import Images, SplitRequest


def shrink(run):
    """Move the largest-magnitude weights towards zero (a toy protection method)."""
    c, ledger = run.candidates, run.ledger
    weights = torch.cat([c.params[n].detach().reshape(-1).cpu() for n in c.names])
    signs = -torch.sign(weights).to(torch.int8)
    movable = torch.cat([
        ledger.propose(n, signs[s : s + c.params[n].numel()])[1].cpu() > 0
        for n, s in zip(c.names, c.starts.tolist())
    ])
    order = weights.abs().argsort(descending=True)
    picked = order[movable[order]][: run.budget.max_params]
    for name, local, where in c.split(picked):
        ledger.apply(name, local, signs[picked[where]])
    return {"stop_reason": "max_params"}


def bars(request: SplitRequest) -> Images:
    """Four classes of 8x8 images, each a bright bar in its own row band, with noise."""
    n = 400 if request.split == "train" else 200
    g = torch.Generator().manual_seed(0 if request.split == "train" else 1)
    labels = torch.arange(n) % 4
    images = torch.randint(0, 60, (n, 1, 8, 8), generator=g)
    for i, label in enumerate(labels.tolist()):
        images[i, 0, 2 * label : 2 * label + 2, :] += 180
    return Images(images.to(torch.uint8), labels, ("a", "b", "c", "d"))


def tiny_mlp(*, num_classes, input_shape, hidden=16):
    """A one-hidden-layer perceptron."""
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
'''

ENTRY_POINTS = """
[advparams.methods]
shrink = extra_plugin:shrink

[advparams.datasets]
bars = extra_plugin:bars

[advparams.models]
tiny_mlp = extra_plugin:tiny_mlp
"""

CONFIG = """
name: extension
seeds: [0]
storage: {storage}
datasets:
  - name: bars
    owner_samples: 64
    models:
      - name: tiny_mlp
        args: {{hidden: 24}}
        training: {{epochs: 3, lr: 0.1}}
protect:
  methods: [shrink]
  max_params: [16]
attacks:
  names: [finetune, scratch]
  fractions: [0.3]
  trials: 1
  epochs: 1
"""


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A folder holding the outside package, and the environment that puts it on the path."""
    root = tmp_path_factory.mktemp("outside")
    (root / "extra_plugin.py").write_text(PLUGIN)
    info = root / "extra_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    return root, env


def advparams(env: dict[str, str], cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bench.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_list_shows_the_outside_method_data_set_and_model(outside: tuple[Path, dict[str, str]]) -> None:
    root, env = outside
    done = advparams(env, root, "list", "--json")
    assert done.returncode == 0, done.stderr
    found = {kind: {e["name"]: e for e in entries} for kind, entries in json.loads(done.stdout).items()}
    assert found["methods"]["shrink"]["summary"].startswith("Move the largest-magnitude weights")
    assert "bars" in found["datasets"]
    assert found["models"]["tiny_mlp"]["arguments"] == {"hidden": 16}
    assert "shrink" not in json.loads(advparams(os.environ.copy(), root, "list", "methods", "--json").stdout)


def test_dry_run_plans_the_outside_entries(outside: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    _, env = outside
    (tmp_path / "cfg.yaml").write_text(CONFIG.format(storage=tmp_path / "runs"))
    done = advparams(env, tmp_path, "sweep", "cfg.yaml", "--dry-run")
    assert done.returncode == 0, done.stderr
    counts = {line.split()[1]: line.split()[3] for line in done.stdout.splitlines() if line.count("│") == 3}
    assert counts == {"train": "1", "encrypt": "1", "attack": "2", "total": "4"}, done.stdout
    refused = advparams(os.environ.copy(), tmp_path, "sweep", "cfg.yaml", "--dry-run")  # the plugin not installed
    assert refused.returncode == 2 and "unknown data set 'bars'" in refused.stderr


@pytest.mark.ray
def test_a_real_sweep_runs_the_outside_entries(outside: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    _, env = outside
    (tmp_path / "cfg.yaml").write_text(CONFIG.format(storage=tmp_path / "runs"))
    done = advparams(env, tmp_path, "sweep", "cfg.yaml", "--cpus", "1", "--out", "report",
                     "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    (row,) = report["protection"]
    assert (row["dataset"], row["method"], row["model"]) == ("bars", "shrink", "tiny_mlp(hidden=24)")
    assert row["clean"]["mean"] > 90  # the bars are easy: the baseline really trained
    assert row["decrypted"]["mean"] == row["clean"]["mean"]  # and the key restored it
    (cell,) = report["attacks"]
    assert set(cell["attacked"]) == {"finetune"} and cell["scratch"]["n"] == 1, cell
