"""Small sweep configs and MLflow queries for the sweep tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from mlflow.tracking import MlflowClient

from bench.sweep.config import SweepConfig, parse_config

TESTS = Path(__file__).resolve().parent
ADVPARAMS = Path(sys.executable).with_name("advparams")


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


def subprocess_env() -> dict[str, str]:
    """The environment of a sweep run as a command of its own: this one, with the tests' helpers importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_RUN")}
    env["PYTHONPATH"] = str(TESTS) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def write_config(cfg: SweepConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    return path


def finished_jobs(uri: str, experiment: str) -> int:
    """How many train, encrypt and attack runs have finished (0 before the store or experiment exists)."""
    try:
        runs = runs_by_kind(uri, experiment)
    except Exception:  # the store or experiment is not created yet
        return 0
    return sum(r.info.status == "FINISHED" for k in ("train", "encrypt", "attack") for r in runs.get(k, []))


def running_after(argv: list[str], cfg: SweepConfig, jobs: int, env: dict[str, str] | None = None,
                  cwd: Path | None = None, timeout: float = 240) -> subprocess.Popen:
    """Start ``argv`` (a sweep command on ``cfg``) in a session of its own; return it once ``jobs`` jobs have
    finished and it still runs, else kill it with its process group and fail with the end of its stderr."""
    driver = subprocess.Popen(argv, env=env or subprocess_env(), cwd=cwd, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + timeout
    while finished_jobs(cfg.tracking.uri, cfg.experiment) < jobs and time.time() < deadline and driver.poll() is None:
        time.sleep(0.5)
    if driver.poll() is None and finished_jobs(cfg.tracking.uri, cfg.experiment) >= jobs:
        return driver
    with contextlib.suppress(ProcessLookupError):
        os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    raise AssertionError(f"the sweep did not run on to {jobs} finished jobs: " + driver.stderr.read().decode()[-2000:])
