"""Small sweep configs and MLflow queries for the sweep tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from bench.sweep.config import SweepConfig, parse_config


def tiny_config(tmp: Path, **changes: Any) -> SweepConfig:
    """digits + an MLP, one cell, four attacks, one attacker budget: ten jobs that run in seconds."""
    raw: dict[str, Any] = {
        "name": "tiny",
        "seeds": [0],
        "storage": str(tmp / "storage"),
        "datasets": [{"name": "digits", "owner_samples": 128,
                      "models": [{"name": "mlp", "training": {"epochs": 5, "lr": 0.1, "batch_size": 64}}]}],
        "protect": {"methods": ["advparams", "random"], "max_params": [8], "eps": [1.0]},
        "attacks": {"names": ["finetune", "clip", "adaptive", "scratch"], "fractions": [0.2], "trials": 1, "epochs": 1},
        "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}"},
    }
    raw.update(changes)
    return parse_config(raw)


def runs_by_kind(uri: str, experiment: str) -> dict[str, list[Any]]:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    out: dict[str, list[Any]] = {}
    for run in client.search_runs([exp.experiment_id], max_results=5000):
        out.setdefault(run.data.tags.get("kind", "?"), []).append(run)
    return out
