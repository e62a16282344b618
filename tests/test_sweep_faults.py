"""Faults a sweep must survive: a driver killed mid-sweep, a node lost mid-sweep, a tracking server.

Each test runs its sweep in a subprocess with a Ray of its own, after the session's Ray tests, so the
clusters never meet.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from sweep_helpers import (
    ADVPARAMS,
    running_after,
    runs_by_kind,
    subprocess_env,
    tiny_config,
    write_config,
)

pytestmark = pytest.mark.ray


def test_resume_after_the_driver_is_killed(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, attacks={"names": ["finetune", "clip", "adaptive", "magnitude_prune", "scratch"],
                                         "fractions": [0.2, 0.4], "trials": 2, "epochs": 1})
    path = write_config(cfg, tmp_path / "cfg.yaml")
    driver = running_after([str(ADVPARAMS), "sweep", str(path), "--no-report"], cfg, 6, cwd=tmp_path)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started, with no chance to clean up
    driver.wait()
    before = {r.data.tags["job_id"]: r.info.run_id for k in ("train", "encrypt", "attack")
              for r in runs_by_kind(cfg.tracking.uri, cfg.experiment).get(k, []) if r.info.status == "FINISHED"}
    assert 6 <= len(before) < 3 + 2 * 9

    rerun = subprocess.run([str(ADVPARAMS), "sweep", str(path), "--no-report"], env=subprocess_env(), cwd=tmp_path,
                           capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    runs = runs_by_kind(cfg.tracking.uri, cfg.experiment)
    jobs = [r for k in ("train", "encrypt", "attack") for r in runs[k]]
    finished = [r for r in jobs if r.info.status == "FINISHED"]
    assert len(finished) == 1 + 2 + 2 * (4 * 2 + 1)
    assert set(Counter(r.data.tags["job_id"] for r in finished).values()) == {1}, "no job may run twice"
    after = {r.data.tags["job_id"]: r.info.run_id for r in finished}
    assert all(after[j] == run_id for j, run_id in before.items()), "finished jobs must be kept, not rerun"


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (read from /proc: the Ray a driver started, its agents and workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_stops_the_sweep_like_ctrl_c_and_ray_goes_with_it(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, attacks={"names": ["finetune", "clip", "adaptive", "magnitude_prune", "scratch"],
                                         "fractions": [0.2, 0.4], "trials": 2, "epochs": 2})
    path = write_config(cfg, tmp_path / "cfg.yaml")
    driver = running_after([str(ADVPARAMS), "sweep", str(path), "--no-report"], cfg, 4, cwd=tmp_path)
    try:
        ray_processes = _descendants(driver.pid)
        assert ray_processes, "a local Ray runs below the driver"
        driver.send_signal(signal.SIGTERM)  # the driver alone, as a scheduler or `kill` would
        code = driver.wait(timeout=120)
        err = driver.stderr.read().decode()
        assert code == 130, err[:3000] + "\n...\n" + err[-1000:]  # the start names the cause; Ray's stacks follow
        deadline = time.time() + 60
        while any(_alive(p) for p in ray_processes) and time.time() < deadline:
            time.sleep(0.5)
        assert not [p for p in ray_processes if _alive(p)], "Ray's processes outlived the driver"
        [sweep] = runs_by_kind(cfg.tracking.uri, cfg.experiment)["sweep"]
        assert sweep.info.status == "KILLED", err[-2000:]
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)


NODE_LOSS = textwrap.dedent(
    """
    import sys, threading, time
    from pathlib import Path
    from ray.cluster_utils import Cluster
    from bench.sweep.driver import run_sweep
    from sweep_helpers import ADVPARAMS, finished_jobs, runs_by_kind, tiny_config, write_config

    tmp = Path(sys.argv[1])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    cfg = tiny_config(tmp, attacks={"names": ["finetune", "clip", "magnitude_prune", "scratch"], "fractions": [0.2, 0.4],
                                    "trials": 2, "epochs": 1}, jobs={"max_retries": 3})
    removed = []

    def kill_a_node():
        while True:
            try:
                n = sum(r.info.status == "FINISHED" for r in runs_by_kind(cfg.tracking.uri, cfg.experiment).get("attack", []))
            except Exception:
                n = 0
            if n >= 2:
                cluster.remove_node(workers[0], allow_graceful=False)
                removed.append(time.time())
                return
            time.sleep(0.3)

    threading.Thread(target=kill_a_node, daemon=True).start()
    outcome = run_sweep(cfg, address=cluster.address)
    print("REMOVED", len(removed), "FAILED", len(outcome.failed), "DONE",
          sum(c["done"] for c in outcome.counts.values()), flush=True)
    cluster.shutdown()
    """
)


def test_a_node_lost_mid_sweep_is_survived(tmp_path: Path) -> None:
    script = tmp_path / "node_loss.py"
    script.write_text(NODE_LOSS)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], env=subprocess_env(), capture_output=True, text=True,
                          timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("REMOVED")][-1].split()
    assert line[1] == "1", "the node was never removed"
    assert line[3] == "0", proc.stderr[-3000:]
    assert int(line[5]) == 1 + 2 + (3 * 2 * 2 + 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_logging_through_an_mlflow_server(tmp_path: Path) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "art"),
         "--workers", "1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        uri = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        cfg = tiny_config(tmp_path, attacks={"names": ["clip", "scratch"], "fractions": [0.2], "trials": 1},
                          tracking={"uri": uri})
        path = write_config(cfg, tmp_path / "cfg.yaml")
        proc = subprocess.run([str(ADVPARAMS), "sweep", str(path), "--out", str(tmp_path / "report")], env=subprocess_env(),
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs = runs_by_kind(uri, cfg.experiment)
        assert len(runs["train"]) == 1 and len(runs["encrypt"]) == 2 and len(runs["attack"]) == 3
        client_artifacts = [a.path for a in __import__("mlflow").tracking.MlflowClient(uri).list_artifacts(
            runs["sweep"][0].info.run_id, "report")]
        assert any(p.endswith(".png") for p in client_artifacts)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a loaded machine: the test's own server must not outlive it
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
