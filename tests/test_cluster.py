"""A real two-node Ray cluster on one machine, driven as the README's "Running on a cluster" says.

Two `ray start` nodes (the head and one worker, each one CPU and a temporary folder of its own), storage in an
S3 bucket (moto's server on loopback: the nodes share no folder), the sweep submitted with `ray job submit
--working-dir .` and token authentication on. The job ends, every job of the sweep is FINISHED in MLflow,
and the report is written where the user asked. Each node is a `ray start --block` in a process group of its
own, ended by its group id: never `ray stop`, which would end every Ray on the machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_helpers import BUCKET, S3Endpoint
from sweep_helpers import runs_by_kind, tiny_config, write_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _node_ports(ports: Iterator[int]) -> list[str]:
    """Every port a node opens that would otherwise be Ray's fixed default (two nodes on one machine)."""
    names = ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--metrics-export-port",
             "--runtime-env-agent-port", "--node-manager-port", "--object-manager-port")
    return [f"{name}={next(ports)}" for name in names]


def _stop(node: subprocess.Popen) -> None:
    """End a node: its whole process group (raylet, GCS, agents, workers), SIGTERM then SIGKILL after 5 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(node.pid, sig)
        except ProcessLookupError:
            return
        try:
            node.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _wait_for_port(port: int, node: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert node.poll() is None, f"the head ended: {log.read_text()[-2000:]}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the head's GCS did not listen within {timeout} s: {log.read_text()[-2000:]}")


@pytest.fixture
def cluster(s3: S3Endpoint, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A head and a worker node, token authentication on; yields the environment of a user's shell on the head."""
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_RUN", "RAY_ADDRESS", "RAY_AUTH_TOKEN"))}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # the tests' loopback-only setting refuses a second node
    env.pop("AWS_ENDPOINT_URL", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the project's environment, activated
    # The nodes hold the store's credentials (as an instance role would); its endpoint comes with the job.
    env.update({k: v for k, v in s3.env.items() if k != "AWS_ENDPOINT_URL"})
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0")
    ports = iter(_free_ports(16))
    gcs, dashboard = next(ports), next(ports)
    nodes: list[subprocess.Popen] = []
    temp = [Path(tempfile.mkdtemp(prefix="rt", dir="/tmp")) for _ in range(2)]  # short: Ray's socket paths
    try:
        common = ["--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        head = ["ray", "start", "--head", f"--port={gcs}", f"--dashboard-port={dashboard}",
                "--dashboard-host=127.0.0.1", f"--ray-client-server-port={next(ports)}", f"--temp-dir={temp[0]}",
                *common, *_node_ports(ports)]
        worker = ["ray", "start", f"--address=127.0.0.1:{gcs}", f"--temp-dir={temp[1]}", *common, *_node_ports(ports)]
        for argv in (head, worker):
            with (tmp_path / f"node{len(nodes)}.log").open("w") as log:
                nodes.append(subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log,
                                              start_new_session=True))
            if argv is head:  # the worker joins once the head's GCS listens
                _wait_for_port(gcs, nodes[0], tmp_path / "node0.log")
        _wait_for(f"http://127.0.0.1:{dashboard}", env, nodes[0], tmp_path / "node0.log")
        _wait_for_nodes(2, gcs, env, nodes, tmp_path)
        yield {**env, "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard}"}
    finally:
        for node in reversed(nodes):
            _stop(node)
        for folder in temp:
            shutil.rmtree(folder, ignore_errors=True)


def _wait_for(url: str, env: dict[str, str], node: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Until the head's job server answers (`ray job list`)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert node.poll() is None, f"the head ended: {log.read_text()[-2000:]}"
        if subprocess.run(["ray", "job", "list", "--address", url], env=env, capture_output=True).returncode == 0:
            return
        time.sleep(1)
    raise AssertionError(f"the head's job server did not answer within {timeout} s: {log.read_text()[-2000:]}")


def _wait_for_nodes(count: int, gcs: int, env: dict[str, str], nodes: list[subprocess.Popen], tmp: Path,
                    timeout: float = 120) -> None:
    probe = f"import ray; ray.init(address='127.0.0.1:{gcs}', log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"
    deadline = time.time() + timeout
    while time.time() < deadline:
        for i, node in enumerate(nodes):
            assert node.poll() is None, f"node {i} ended: {(tmp / f'node{i}.log').read_text()[-2000:]}"
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip().splitlines()[-1] == str(count):
            return
        time.sleep(1)
    raise AssertionError(f"{count} nodes did not join within {timeout} s")


def test_a_sweep_submitted_to_a_two_node_cluster_with_s3_storage(cluster: dict[str, str], s3: S3Endpoint,
                                                                  tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, attacks={"names": ["finetune", "scratch"], "fractions": [0.2], "trials": 1, "epochs": 1})
    config = write_config(cfg, tmp_path / "cfg.yaml")
    uri, report = f"sqlite:///{tmp_path / 'cluster.db'}", tmp_path / "report"
    # The README's command: the project ships as the working dir, the entrypoint runs it as a module, storage
    # in the bucket, the tracking store and the report at absolute paths on the head, the endpoint in env_vars.
    submit = ["ray", "job", "submit", "--working-dir", ".",
              "--runtime-env-json", f'{{"env_vars": {{"AWS_ENDPOINT_URL": "{s3.url}"}}}}',
              "--", "python", "-m", "bench.cli", "sweep", str(config), "--set", f"storage=s3://{BUCKET}/cluster",
              "--tracking-uri", uri, "--out", str(report)]
    done = subprocess.run(submit, env=cluster, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "succeeded" in done.stdout and "note: storage" not in done.stdout, done.stdout[-3000:]

    runs = runs_by_kind(uri, cfg.experiment)
    jobs = [r for kind in ("train", "encrypt", "attack") for r in runs[kind]]
    assert len(jobs) == 1 + 2 + 3 and all(r.info.status == "FINISHED" for r in jobs)
    assert list(report.glob("*.csv")) and list(report.glob("*.png")), "the report is where --out says"
    folders = {name.split("/")[1] for name in s3.objects("cluster/")}
    assert folders == {"baselines", "encrypted", "keys", "studies"}, "every file is in the bucket"
    assert not (tmp_path / "storage").exists(), "and none in the config's own storage folder"
