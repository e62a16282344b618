"""Shared test fixtures: one local Ray for the whole test session, on loopback only."""

from __future__ import annotations

import os

import pytest

# Test environment only: Ray binds 127.0.0.1 (never set in the product, where it would rule out clusters).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.pop("MLFLOW_RUN_ID", None)


@pytest.fixture(scope="session")
def ray_session():
    """The one Ray every ordinary test shares (2 CPUs); tests that need their own start it in a subprocess."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def data_root_or_skip() -> str:
    root = os.environ.get("ADVPARAMS_DATA_ROOT")
    if not root:
        pytest.skip("ADVPARAMS_DATA_ROOT is unset: the real data sets are not available here")
    return root
