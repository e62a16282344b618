"""Storage without a shared file system: a sweep whose `storage` is an S3 bucket (moto's server on loopback).

Models, keys and studies go to the object store; a rerun after the driver is killed resumes without rerunning
finished jobs; stored objects are verified by their SHA-256 as files are; key objects are not public.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import optuna
import pytest
from rich.console import Console
from s3_helpers import BUCKET, S3Endpoint
from sweep_helpers import (
    ADVPARAMS,
    running_after,
    runs_by_kind,
    subprocess_env,
    tiny_config,
    write_config,
)

from attacks import get_attack
from attacks.tuning import journal
from bench.errors import BenchError
from bench.sweep.driver import to_run
from bench.sweep.plan import plan_for
from bench.sweep.storage import Storage
from bench.sweep.tracking import Tracker

PUBLIC = {"http://acs.amazonaws.com/groups/global/AllUsers", "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"}


def test_object_store_files_round_trip_and_keys_stay_private(s3: S3Endpoint, tmp_path: Path) -> None:
    stored = Storage.at(f"s3://{BUCKET}/unit/").check_writable()
    assert stored.root == f"s3://{BUCKET}/unit" and stored.remote
    assert s3.objects("unit/") == [], "the probe objects are removed"
    with stored.for_job() as job:
        work = job.local
        assert work.is_dir() and (work / "keys").stat().st_mode & 0o077 == 0
        key = work / "keys" / "k.key"
        key.write_bytes(b"secret")
        job.publish(key)
        model = work / "encrypted" / "m.safetensors"
        model.write_bytes(b"weights")
        job.publish(model)
    assert not work.exists(), "a job's working copies, its key among them, go when the job ends"
    assert s3.objects("unit/") == ["unit/encrypted/m.safetensors", "unit/keys/k.key"]
    grants = s3.client().get_object_acl(Bucket=BUCKET, Key="unit/keys/k.key")["Grants"]
    assert grants and not [g for g in grants if g["Grantee"].get("URI") in PUBLIC], grants

    with stored.for_job() as job:
        copy = job.fetch(job.local / "keys" / "k.key")
        assert copy.read_bytes() == b"secret" and copy.stat().st_mode & 0o077 == 0
        assert job.where(copy) == f"s3://{BUCKET}/unit/keys/k.key"
        with pytest.raises(FileNotFoundError):
            job.fetch(job.local / "keys" / "none.key")
    import hashlib

    assert stored.sha256(stored.local / "keys" / "k.key") == hashlib.sha256(b"secret").hexdigest()
    assert stored.sha256(stored.local / "keys" / "none.key") is None
    assert stored.exists(stored.local / "encrypted" / "m.safetensors")


def test_an_object_store_that_cannot_be_written_is_one_line(s3: S3Endpoint) -> None:
    with pytest.raises(BenchError, match=r"^storage s3://no-such-bucket/x cannot be written: .*bucket") as refused:
        Storage.at("s3://no-such-bucket/x").check_writable()
    assert "\n" not in str(refused.value)
    with pytest.raises(BenchError, match=r"^storage nosuchprotocol://x: .*nosuchprotocol"):
        Storage.at("nosuchprotocol://x").check_writable()


def test_a_sweep_on_s3_resumes_after_the_driver_is_killed(s3: S3Endpoint, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, storage=f"s3://{BUCKET}/sweep",
                      attacks={"names": ["finetune", "clip", "scratch"], "fractions": [0.2], "trials": 2, "epochs": 1})
    plan = plan_for(cfg)
    assert plan.counts() == {"train": 1, "encrypt": 2, "attack": 5}
    path = write_config(cfg, tmp_path / "cfg.yaml")
    studies = Storage.at(cfg.storage).studies  # on the driver's machine, not in the bucket
    studies.unlink(missing_ok=True)  # a journal an earlier test run left
    env = {**subprocess_env(), **s3.env}
    driver = running_after([str(ADVPARAMS), "sweep", str(path), "--no-report"], cfg, 4, env=env, cwd=tmp_path)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started, with no chance to clean up
    driver.wait()
    before = {r.data.tags["job_id"]: r.info.run_id for k in ("train", "encrypt", "attack")
              for r in runs_by_kind(cfg.tracking.uri, cfg.experiment).get(k, []) if r.info.status == "FINISHED"}
    assert 4 <= len(before) < 8

    rerun = subprocess.run([str(ADVPARAMS), "sweep", str(path), "--no-report"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    runs = runs_by_kind(cfg.tracking.uri, cfg.experiment)
    finished = [r for k in ("train", "encrypt", "attack") for r in runs[k] if r.info.status == "FINISHED"]
    assert len(finished) == 8
    assert set(Counter(r.data.tags["job_id"] for r in finished).values()) == {1}, "no job may run twice"
    after = {r.data.tags["job_id"]: r.info.run_id for r in finished}
    assert all(after[j] == run_id for j, run_id in before.items()), "finished jobs must be kept, not rerun"
    # The studies of the jobs either driver ran are collected on this machine, by job id, each with its trials.
    assert f"(optuna-dashboard {studies})" in rerun.stdout
    storage = journal(studies)
    assert set(optuna.get_all_study_names(storage)) == {job.id for job in plan.attacks}
    for job in plan.attacks:  # an attack with nothing to tune runs one trial
        trials = cfg.attacks.trials if get_attack(job.attack).tunable(job.fixed) else 1
        assert len(optuna.load_study(study_name=job.id, storage=storage).trials) == trials, job.name

    # Everything a job stores is in the bucket, nothing else is; no key object is public.
    objects = s3.objects("sweep/")
    folders = Counter(name.split("/")[1] for name in objects)
    assert folders == {"baselines": 1, "encrypted": 2, "keys": 2, "studies": 5}, objects
    for name in (o for o in objects if o.startswith("sweep/keys/")):
        grants = s3.client().get_object_acl(Bucket=BUCKET, Key=name)["Grants"]
        assert not [g for g in grants if g["Grantee"].get("URI") in PUBLIC], grants
    assert not (tmp_path / "storage").exists() and not (tmp_path / "sweep").exists(), "no local storage folder"

    # Stored objects are verified as files are: a truncated key object is found by its SHA-256.
    storage = Storage.at(cfg.storage)
    tracker = Tracker(cfg.tracking.uri, cfg.experiment)
    assert to_run(plan, tracker.finished(), storage, Console(file=open(os.devnull, "w"))) == set()
    [key] = [o for o in objects if o.startswith("sweep/keys/")][:1]
    body = s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    s3.client().put_object(Bucket=BUCKET, Key=key, Body=body[:-7])
    console = Console(record=True, width=2000)
    left = to_run(plan, tracker.finished(), storage, console)
    assert len(left) == 1
    assert f"its key file s3://{BUCKET}/{key} is not the one it wrote (SHA-256 differs" in console.export_text()
