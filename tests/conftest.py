"""Shared test fixtures: one local Ray for the whole test session, on loopback only."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator

import pytest
from s3_helpers import BUCKET, S3Endpoint

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


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Endpoint]:
    """A fresh moto S3 server on 127.0.0.1 holding an empty `BUCKET`; this process's environment points at it."""
    pytest.importorskip("s3fs", reason="the s3 extra is not installed: pip install -e '.[s3,test]'")
    server_module = pytest.importorskip("moto.server", reason="moto[server] is not installed: pip install -e '.[test]'")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = S3Endpoint(f"http://{host}:{port}")
        for name, value in endpoint.env.items():
            monkeypatch.setenv(name, value)
        urllib.request.urlopen(urllib.request.Request(f"{endpoint.url}/moto-api/reset", method="POST")).close()
        endpoint.client().create_bucket(Bucket=BUCKET)  # moto's state is per process: reset, then made anew
        yield endpoint
    finally:
        server.stop()
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()  # the next test's endpoint is another one
