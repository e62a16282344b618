"""A small sweep end to end on the session's local Ray with a temporary SQLite store."""

from __future__ import annotations

import gc
from collections import Counter
from pathlib import Path

import optuna
import pytest
from cli_helpers import cli
from rich.console import Console
from sweep_helpers import runs_by_kind, tiny_config, write_config

from attacks.tuning import journal
from bench.sweep import driver
from bench.sweep.driver import print_outcome, run_sweep
from bench.sweep.plan import plan_for
from bench.sweep.report import build_report, print_report, write_plots, write_tables
from bench.sweep.tracking import Tracker

pytestmark = pytest.mark.ray

CELL_METRICS = {"acc_clean", "acc_encrypted", "acc_decrypted", "acc_attacked", "drop_points", "encrypted_pct",
                "encrypt_seconds", "attack_seconds"}


def test_sweep_logs_every_job_nested_and_resumes_without_duplicates(ray_session, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(tmp_path)
    plan = plan_for(cfg)
    assert plan.counts() == {"train": 1, "encrypt": 2, "attack": 7}
    outcome = run_sweep(cfg)
    assert outcome.ok, [r.error for r in outcome.failed]
    assert {k: c["done"] for k, c in outcome.counts.items()} == {"train": 1, "encrypt": 2, "attack": 7}

    runs = runs_by_kind(cfg.tracking.uri, cfg.experiment)
    [parent] = runs["sweep"]
    children = [r for kind in ("train", "encrypt", "attack", "summary") for r in runs[kind]]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert len(runs["summary"]) == 2  # advparams and random, one attacker budget, one seed
    for run in runs["attack"]:
        m = run.data.metrics
        assert run.info.status == "FINISHED"
        if run.data.params["attack"] != "scratch":
            assert CELL_METRICS <= set(m), set(m)
            assert run.data.tags["key_fingerprint"]
        if run.data.params["attack"] == "adaptive":
            assert 0 <= m["key_precision"] <= 100 and 0 <= m["key_recall"] <= 100
        assert "seed" in run.data.params and "job_id" in run.data.params
    for run in runs["encrypt"]:
        assert run.data.metrics["decrypt_bit_exact"] == 1.0
        assert run.data.metrics["acc_decrypted"] == run.data.metrics["acc_clean"]
    # Keys stay in the storage's private folder, mode 0600, and never reach MLflow.
    keys = list((tmp_path / "storage" / "keys").glob("*.key"))
    assert len(keys) == 2 and all(k.stat().st_mode & 0o077 == 0 for k in keys)
    # Every attack job's study, named by its id in its own journal, is copied into the sweep's one journal with
    # the trials it ran, and the end of the sweep says where that journal is.
    studies = tmp_path / "storage" / "studies.journal"
    assert outcome.studies == studies
    assert set(optuna.get_all_study_names(journal(studies))) == {job.id for job in plan.attacks}
    for job in plan.attacks:
        own = optuna.load_study(study_name=job.id, storage=journal(tmp_path / "storage" / "studies" / f"{job.id}.journal"))
        copied = optuna.load_study(study_name=job.id, storage=journal(studies))
        assert len(copied.trials) == cfg.attacks.trials
        assert [(t.state, t.value, t.params, t.user_attrs) for t in copied.trials] == \
               [(t.state, t.value, t.params, t.user_attrs) for t in own.trials]
    console = Console(record=True, width=2000)
    print_outcome(outcome, console)
    assert f"(optuna-dashboard {studies})" in console.export_text()
    collected = studies.read_bytes()

    # With every job finished, the rerun answers from the tracking store alone: Ray is not even asked for.
    with monkeypatch.context() as m:
        m.setattr(driver, "connect", lambda *_: pytest.fail("a rerun with nothing to run started Ray"))
        m.setattr(driver, "check_resources", lambda *_: pytest.fail("a rerun with nothing to run asked Ray"))
        again = run_sweep(cfg)
    assert {k: c["skipped"] for k, c in again.counts.items()} == {"train": 1, "encrypt": 2, "attack": 7}
    assert sum(c["done"] for c in again.counts.values()) == 0
    assert again.studies == studies and studies.read_bytes() == collected, "a rerun copies no study twice"
    rerun = runs_by_kind(cfg.tracking.uri, cfg.experiment)
    # Each invocation is a record of its own under the sweep's run, which spans them all.
    invocations = sorted(rerun["invocation"], key=lambda r: r.info.start_time)
    assert [(r.data.metrics["jobs_done"], r.data.metrics["jobs_skipped"]) for r in invocations] == [(10, 0), (0, 10)]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id and r.info.status == "FINISHED"
               for r in invocations)
    assert rerun["sweep"][0].data.tags["resolved.attacks"] == "finetune,clip,adaptive,scratch"
    ids = Counter(r.data.tags["job_id"] for kind in ("train", "encrypt", "attack", "summary") for r in rerun[kind])
    assert set(ids.values()) == {1}, "a rerun must not duplicate runs"
    assert {r.info.run_id for r in rerun["summary"]} == {r.info.run_id for r in runs["summary"]}, \
        "summaries that did not change are not written again"
    assert len(rerun["sweep"]) == 1

    # As if the sweep had last run before `adaptive` was registered: the rerun says what changed before it runs.
    tracker = Tracker(cfg.tracking.uri, cfg.experiment)
    tracker.tag_sweep(parent.info.run_id, {"resolved.attacks": "finetune,clip,scratch"})
    # ... and a study not collected yet whose journal is broken is a note, never the sweep's end.
    broken = plan.attacks[0]
    optuna.delete_study(study_name=broken.id, storage=journal(studies))
    (tmp_path / "storage" / "studies" / f"{broken.id}.journal").write_text('{"op_code": 0, "worker_id"')
    console = Console(record=True, width=2000)
    noted = run_sweep(cfg, console=console)
    said = console.export_text()
    assert ("note: the attack registry changed since this sweep last ran: added adaptive (attacks.names now means "
            "finetune,clip,adaptive,scratch); the jobs this adds run now") in said
    assert noted.ok and f"note: the study of {broken.name} " in said and "was not collected" in said
    assert set(optuna.get_all_study_names(journal(studies))) == {job.id for job in plan.attacks[1:]}

    # A finished job whose files are gone (a cleaned storage folder) runs again; the rest stay skipped.
    next((tmp_path / "storage" / "encrypted").glob("*.safetensors")).unlink()
    healed = run_sweep(cfg)
    assert healed.ok and healed.counts["encrypt"] == Counter(done=1, skipped=1)
    assert sum(c["done"] for c in healed.counts.values()) == 1

    # Files are trusted for the bytes their job recorded, not for existing: a baseline altered in place (same
    # size) and a truncated key are rebuilt, and said so; every job keeps exactly one record.
    [baseline] = (tmp_path / "storage" / "baselines").glob("*.safetensors")
    data = bytearray(baseline.read_bytes())
    data[-1] ^= 0xFF
    baseline.write_bytes(bytes(data))
    key = next((tmp_path / "storage" / "keys").glob("*.key"))
    key.write_bytes(key.read_bytes()[:-7])
    console = Console(record=True, width=2000)
    rebuilt = run_sweep(cfg, console=console)
    said = console.export_text()
    assert rebuilt.ok and rebuilt.counts["train"] == Counter(done=1) and rebuilt.counts["encrypt"] == Counter(done=1, skipped=1)
    assert f"{baseline} is not the one it wrote (SHA-256 differs: altered or truncated)" in said
    assert f"its key file {key} is not the one it wrote" in said
    final = runs_by_kind(cfg.tracking.uri, cfg.experiment)
    ids = Counter(r.data.tags["job_id"] for kind in ("train", "encrypt", "attack", "summary") for r in final[kind])
    assert set(ids.values()) == {1}, "a rebuilt job replaces its record"

    report = build_report(Tracker(cfg.tracking.uri, cfg.experiment), cfg.experiment)
    assert {r.method for r in report.protection} == {"advparams", "random"}
    assert all(r.scratch is not None and r.stolen is not None for r in report.attacks)
    files = write_tables(report, tmp_path / "report") + write_plots(report, tmp_path / "report")
    assert {p.suffix for p in files} == {".json", ".csv", ".png"} and all(p.stat().st_size > 0 for p in files)


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(ray_session, tmp_path: Path) -> None:
    # A model argument the factory does not take: found only when a job builds the model.
    models = [{"name": "mlp", "training": {"epochs": 2}}, {"name": "cnn", "args": {"no_such_argument": 1}}]
    cfg = tiny_config(tmp_path, datasets=[{"name": "digits", "owner_samples": 128, "models": models}],
                      attacks={"names": ["clip"], "fractions": [0.2], "trials": 1})
    outcome = run_sweep(cfg)
    assert not outcome.ok
    assert outcome.counts["train"] == Counter(done=1, failed=1)
    failed = {r.name: r.error for r in outcome.failed}
    [train_error] = [e for n, e in failed.items() if n.endswith("/train")]
    assert train_error.startswith("while training cnn on digits: ") and "no_such_argument" in train_error
    assert all("upstream job failed" in e for n, e in failed.items() if not n.endswith("/train"))
    runs = runs_by_kind(cfg.tracking.uri, cfg.experiment)
    statuses = Counter(r.info.status for kind in ("train", "encrypt", "attack") for r in runs[kind])
    assert statuses == Counter(FINISHED=1 + 2 + 2, FAILED=1 + 2 + 2)
    report = build_report(Tracker(cfg.tracking.uri, cfg.experiment), cfg.experiment)
    assert {name: error for name, error in report.failed} == failed  # the report says what is missing, and why
    console = Console(record=True, width=2000)
    print_report(report, console)
    assert "FAILED digits/cnn/advparams[n=8,eps=1]/seed=0: upstream job failed" in console.export_text()


def test_jobs_are_pure_functions_of_their_spec(tmp_path: Path) -> None:
    """The same spec and seed give the same figures on CPU, in any storage folder, without Ray or MLflow."""
    from bench.sweep.jobs import JobContext, run_attack, run_encrypt, run_train
    from bench.zoo.workflow import DataOptions

    cfg = tiny_config(tmp_path, attacks={"names": ["finetune", "adaptive"], "fractions": [0.2], "trials": 2, "epochs": 1})
    plan = plan_for(cfg)
    figures = []
    for folder in ("a", "b"):
        ctx = JobContext(storage=tmp_path / folder, data=DataOptions())
        train = run_train(plan.trains[0], ctx)
        adv = run_encrypt(plan.encrypts[0], ctx, train)
        attacks = [run_attack(job, ctx, train, adv) for job in plan.attacks if job.encrypt == plan.encrypts[0]]
        figures.append([train.metrics["acc_clean"], adv.tags["key_fingerprint"],
                        *[(a.metrics["acc_attacked"], a.params.get("tuned.lr")) for a in attacks]])
    assert figures[0] == figures[1]


def test_a_retried_attack_job_gives_the_figures_of_an_undisturbed_one(tmp_path: Path, monkeypatch) -> None:
    """A first attempt that fails after one tuning trial leaves its study file behind; the retry starts clean,
    so the job id gives the same figures as a run that never failed."""
    from attacks.builtin.finetune import FineTune
    from bench.sweep.jobs import JobContext, run_attack, run_encrypt, run_train
    from bench.zoo.workflow import DataOptions

    cfg = tiny_config(tmp_path, attacks={"names": ["finetune"], "fractions": [0.2], "trials": 3, "epochs": 3})
    plan = plan_for(cfg)
    [job] = [j for j in plan.attacks if j.encrypt == plan.encrypts[0]]
    figures = []
    for folder, fail in (("undisturbed", False), ("retried", True)):
        ctx = JobContext(storage=tmp_path / folder, data=DataOptions())
        train = run_train(plan.trains[0], ctx)
        adv = run_encrypt(plan.encrypts[0], ctx, train)
        if fail:
            calls, attack = [], FineTune.attack

            def flaky(self, *args, **kwargs):
                calls.append(1)
                if len(calls) == 2:
                    raise RuntimeError("worker lost")
                return attack(self, *args, **kwargs)

            with monkeypatch.context() as m:
                m.setattr(FineTune, "attack", flaky)
                with pytest.raises(RuntimeError, match="worker lost"):
                    run_attack(job, ctx, train, adv)
            assert (ctx.storage / "studies" / f"{job.id}.journal").is_file()  # the failed attempt's study
        result = run_attack(job, ctx, train, adv)
        figures.append((result.metrics["acc_attacked"], result.metrics["compute_epochs"],
                        sorted(result.params.items())))
    assert figures[0] == figures[1]


def test_a_tracking_store_that_stops_taking_writes_ends_the_sweep_in_one_line(ray_session, tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing MLflow write (a full disk, a server gone) mid-sweep: one line naming what was being written,
    and no run left RUNNING, neither the half-written job's nor the sweep's."""
    from bench.errors import BenchError

    cfg = tiny_config(tmp_path)
    calls, log = [], Tracker._log

    def full_disk(self, *args, **kwargs):
        calls.append(1)
        if len(calls) >= 3:  # the sweep's params and the first job go in; then the disk is full
            raise OSError(28, "No space left on device")
        return log(self, *args, **kwargs)

    monkeypatch.setattr(Tracker, "_log", full_disk)
    with pytest.raises(BenchError) as raised:
        run_sweep(cfg)
    message = str(raised.value)
    assert "cannot record job" in message and "No space left on device" in message and "\n" not in message
    monkeypatch.undo()
    runs = runs_by_kind(cfg.tracking.uri, cfg.experiment)
    statuses = Counter(r.info.status for kind_runs in runs.values() for r in kind_runs)
    assert statuses["RUNNING"] == 0 and statuses["FAILED"] >= 2, statuses  # the half-written job and the sweep
    assert runs["sweep"][0].info.status == "FAILED"


def test_a_job_no_node_can_run_is_refused_not_waited_for(ray_session, tmp_path: Path) -> None:
    from bench.errors import BenchError

    cfg = tiny_config(tmp_path, jobs={"attack": {"num_cpus": 1, "num_gpus": 1}})
    with pytest.raises(BenchError, match="jobs.attack asks for num_cpus=1, num_gpus=1, more than any node"):
        run_sweep(cfg)


def test_training_jobs_that_ask_for_more_cpus_run_first(ray_session, tmp_path: Path) -> None:
    from bench.sweep.driver import stages

    models = [{"name": "mlp", "training": {"epochs": 2}}, {"name": "cnn", "training": {"epochs": 6}}]
    raw = {"datasets": [{"name": "digits", "owner_samples": 128, "models": models}],
           "protect": {"methods": ["advparams"], "max_params": [4], "eps": [1.0]},
           "attacks": {"names": ["clip"], "fractions": [0.2], "trials": 1}}
    assert len(stages(plan_for(tiny_config(tmp_path, **raw)), tiny_config(tmp_path, **raw))) == 1
    cfg = tiny_config(tmp_path, **raw, jobs={"train": {"num_cpus": 2}})
    assert [len(s) for s in stages(plan_for(cfg), cfg)] == [2, 4]
    assert run_sweep(cfg).ok
    runs = runs_by_kind(cfg.tracking.uri, cfg.experiment)
    assert max(r.info.start_time for r in runs["train"]) < min(r.info.start_time for r in runs["encrypt"])


def test_a_rerun_with_nothing_new_leaves_the_report_as_it_was(ray_session, tmp_path: Path, capsys) -> None:
    """The report of a rerun that finds every job finished is the one written before: not drawn again, and
    said where it is; another tolerance (`advparams report --tolerance`) draws it anew, as does the sweep's own
    tolerance after it."""
    cfg = tiny_config(tmp_path, attacks={"names": ["clip", "scratch"], "fractions": [0.2], "trials": 1, "epochs": 1})
    path, out = write_config(cfg, tmp_path / "cfg.yaml"), tmp_path / "report"
    collector = gc.get_threshold(), gc.get_freeze_count()
    first = cli(capsys, "sweep", path, "--out", out)
    assert first.code == 0 and f"report written to {out}/ " in first.out, first.err
    again = cli(capsys, "sweep", path, "--out", out)
    assert again.code == 0 and f"report unchanged: {out}/ " in again.out and "report written" not in again.out
    other = cli(capsys, "report", "--tracking-uri", cfg.tracking.uri, "--out", out, "--tolerance", "50")
    assert other.code == 0 and f"report written to {out}/ " in other.out
    back = cli(capsys, "sweep", path, "--out", out)
    assert back.code == 0 and f"report written to {out}/ " in back.out
    assert (gc.get_threshold(), gc.get_freeze_count()) == collector, "a caller's garbage collector is its own"
