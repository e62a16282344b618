"""What a sweep checks before Ray starts, each refused in one line with exit 2: repeated YAML keys, a grid over
the job limit, unknown model names, data sets too small for the shares, a storage folder that cannot be
written, a Ray cluster or tracking server that does not answer within the connect deadline."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import assert_refused, cli, files_in, table_row
from rich.console import Console
from sweep_helpers import tiny_config

from bench.cli import build_parser
from bench.errors import BenchError
from bench.sweep import driver
from bench.sweep.config import load_config, parse_config
from bench.sweep.jobs import JobContext
from bench.sweep.plan import MAX_JOBS, check_plan, count_jobs, make_plan
from bench.sweep.tracking import Tracker, wait_for_server


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting (or joining) Ray fails the test: every refusal here comes before it."""
    def started(*_: Any) -> bool:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(driver, "connect", started)


def write_config(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(json.loads(tiny_config(tmp_path, **changes).model_dump_json())))
    return path


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------ YAML keys
@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("name: a\nname: b\n", "line 2: key 'name' appears twice in one mapping (first at line 1)"),
        ("name: a\nprotect:\n  eps: [1.0]\n  max_params: [8]\n  eps: [2.0]\n",
         "line 5: key 'eps' appears twice in one mapping (first at line 3)"),
        ("name: a\ndatasets:\n  - name: digits\n    models: []\n    name: fashion_mnist\n",
         "line 5: key 'name' appears twice in one mapping (first at line 3)"),
        ("name: a\nprotect: {eps: [1.0], eps: [2.0]}\n", "line 2: key 'eps' appears twice in one mapping (first at line 2)"),
    ],
)
def test_a_repeated_yaml_key_is_refused_naming_it_and_its_line(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(BenchError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: not valid YAML at {where}"


def test_a_merged_key_may_be_overridden_and_a_repeated_key_in_set_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("name: a\ndatasets:\n  - name: digits\n    models:\n"
                    "      - {name: mlp, training: &t {epochs: 3, lr: 0.1}}\n"
                    "      - {name: cnn, training: {<<: *t, epochs: 5}}\n")
    merged = load_config(path).datasets[0].models[1].training
    assert (merged.epochs, merged.lr) == (5, 0.1)
    with pytest.raises(BenchError, match=r"--set protect: cannot parse value .*\(key 'eps' appears twice"):
        parse_config({"name": "a", "datasets": [{"name": "digits", "models": [{"name": "mlp"}]}]},
                     overrides=["protect={eps: [1.0], eps: [2.0]}"])


# ----------------------------------------------------------------------------------------- grid size
def grid(**changes: Any) -> dict:
    raw = {"name": "g", "seeds": [0, 1], "datasets": [{"name": "digits", "models": [{"name": "cnn"}, {"name": "mlp"}]}],
           "protect": {"methods": ["advparams", "random"], "match": {"random": "advparams"}, "max_params": [4, 8],
                       "eps": [0.5, 1.0]},
           "attacks": {"names": ["finetune", "clip", "scratch"], "fractions": [0.1, 0.3], "trials": 1}}
    raw.update(changes)
    return raw


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"seeds": [0, 0, 1], "protect": {"methods": ["advparams", "random", "advparams"], "max_params": [4, 4, 8],
                                         "eps": [1.0, 1]}},
        {"attacks": {"names": ["all"], "methods": ["advparams"], "fractions": [0.1, 0.1, 0.3]}},
        {"datasets": [{"name": "digits", "models": [{"name": "mlp", "train_seed": 3}, {"name": "mlp", "train_seed": 3},
                                                     {"name": "cnn"}]}]},
        {"datasets": [{"name": "digits", "owner_samples": 100, "models": [{"name": "mlp"}]},
                      {"name": "digits", "owner_samples": 200, "models": [{"name": "mlp"}]},
                      {"name": "digits", "owner_samples": 100, "models": [{"name": "mlp"}]}]},
        {"protect": {"methods": ["advparams", "reinit", "random"], "max_params": [4, 8], "eps": [1.0, 2.0]},
         "attacks": {"names": ["all"], "fractions": [0.1, 0.3], "epochs": [2, 4, 4]}},
        {"protect": {"methods": ["advparams", "random", "keyed_lock", "reinit"], "match": {"random": "advparams"},
                     "max_params": [4, 8], "eps": [1.0, 2.0], "method_max_params": {"keyed_lock": [8, 64, 64], "random": [4]}},
         "attacks": {"names": ["all"], "methods": ["keyed_lock", "random"]}},
    ],
    ids=["plain", "repeated-entries", "narrowed-attacks", "shared-baselines", "repeated-datasets", "reinit-and-caps",
         "own-budgets"],
)
def test_counting_the_jobs_gives_what_planning_them_gives(changes: dict) -> None:
    cfg = parse_config(grid(**changes))
    registered, free = ["finetune", "clip", "adaptive", "scratch"], {"scratch"}
    assert count_jobs(cfg, registered, free) == make_plan(cfg, registered, free).counts()


def test_reinit_runs_once_per_seed_and_every_attack_at_every_cap() -> None:
    cfg = parse_config(grid(protect={"methods": ["advparams", "reinit"], "max_params": [4, 8], "eps": [1.0]},
                            attacks={"names": ["finetune", "scratch"], "fractions": [0.1], "epochs": [2, 6]}))
    plan = make_plan(cfg, ["finetune", "scratch"], {"scratch"})
    reinit = [j for j in plan.encrypts if j.method == "reinit"]
    baselines = len(cfg.seeds) * 2  # two models
    assert len(reinit) == baselines and {j.cell for j in reinit} == {"all"}  # the budget does not apply to it
    assert len([j for j in plan.encrypts if j.method == "advparams"]) == 2 * baselines  # two cells
    caps = {(j.attack, j.encrypt.id if j.encrypt else None, j.seed): set() for j in plan.attacks}
    for j in plan.attacks:
        caps[(j.attack, j.encrypt.id if j.encrypt else None, j.seed)].add(j.epochs)
    assert set(map(frozenset, caps.values())) == {frozenset({2, 6})}
    assert len({j.id for j in plan.attacks}) == len(plan.attacks)


def test_a_grid_over_the_limit_is_refused_in_a_moment_and_the_limit_can_be_raised() -> None:
    seeds = list(range(300))
    cfg = parse_config(grid(seeds=seeds, protect={"max_params": list(range(1, 41)), "eps": [0.5, 1.0, 2.0]}))
    start = time.perf_counter()
    counts = check_plan(cfg, max_jobs=10**7)  # counted, not planned
    assert time.perf_counter() - start < 5
    total = sum(counts.values())
    assert total > 500_000 and counts["train"] == 600
    with pytest.raises(BenchError) as err:
        check_plan(cfg)
    assert str(err.value).startswith(f"the config plans {total:,} jobs (train 600, encrypt {counts['encrypt']:,}, ")
    assert f"more than the limit of {MAX_JOBS:,}" in str(err.value) and "--max-jobs" in str(err.value)
    with pytest.raises(BenchError, match=f"plans {total:,} jobs"):
        check_plan(cfg, max_jobs=total - 1)


def test_the_cli_refuses_an_oversized_grid_even_in_a_dry_run(capsys, tmp_path: Path, no_ray: None) -> None:
    path = write_config(tmp_path, seeds=list(range(50)), protect={"max_params": list(range(1, 101))})
    before = files_in(tmp_path)
    line = assert_refused(cli(capsys, "sweep", path, "--dry-run"), "jobs (train 50, encrypt 10,000",
                          f"more than the limit of {MAX_JOBS:,}")
    assert_refused(cli(capsys, "sweep", path, "--no-report"), line.removeprefix("advparams: error: "))
    r = cli(capsys, "sweep", path, "--dry-run", "--max-jobs", "1000000")
    assert r.code == 0, r.err
    total = int(table_row(r.out, "total")[1])
    assert str(total) == line.split("plans ")[1].split(" jobs")[0].replace(",", "")
    assert_refused(cli(capsys, "sweep", path, "--dry-run", "--max-jobs", str(total - 1)), f"limit of {total - 1:,}")
    assert files_in(tmp_path) == before
    assert f"{MAX_JOBS:,}" in build_parser()._subparsers._group_actions[0].choices["sweep"].format_help()


# ------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("cnnn", "unknown model 'cnnn'; registered: cnn, "),
        ("torchvision:resnet1", "unknown torchvision model 'resnet1'"),
        ("no_such_module_xyz:factory", "cannot import module 'no_such_module_xyz'"),
        ("json:no_such_factory", "module 'json' has no callable 'no_such_factory'"),
    ],
)
def test_unknown_model_names_are_refused_when_planning(name: str, message: str) -> None:
    raw = grid(datasets=[{"name": "digits", "models": [{"name": "mlp"}, {"name": name}]}])
    with pytest.raises(BenchError) as err:
        check_plan(parse_config(raw))
    assert str(err.value).startswith("datasets.0.models.1.name: ") and message in str(err.value)


@pytest.mark.parametrize("name", ["mlp", "torchvision:resnet18", "torch.nn:Identity"])
def test_every_form_of_model_name_passes(name: str) -> None:
    check_plan(parse_config(grid(datasets=[{"name": "digits", "models": [{"name": name}]}])))


# ------------------------------------------------------------------------------- data and storage
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"datasets": [{"name": "digits", "owner_samples": 2000, "models": [{"name": "mlp"}]}]},
         "too few for 2000 owner samples"),
        ({"datasets": [{"name": "digits", "owner_samples": 1000, "models": [{"name": "mlp"}]}],
          "attacks": {"names": ["clip"], "fractions": [0.1, 0.3]}}, "too few for 1000 owner samples and an attacker "
                                                                     "share of 0.3"),
        ({"attacks": {"names": ["clip"], "fractions": [0.001, 0.2]}}, "attacker share of 0.001 (1 samples, at least 2"),
    ],
)
def test_data_too_small_for_the_shares_is_refused_before_ray(tmp_path: Path, no_ray: None, changes: dict,
                                                             message: str) -> None:
    cfg = tiny_config(tmp_path, **changes)
    with pytest.raises(BenchError) as err:
        driver.run_sweep(cfg)
    assert str(err.value).startswith("datasets.0: training set of 'digits' has 1257 samples, ")
    assert message in str(err.value)
    assert not (tmp_path / "mlflow.db").exists(), "refused before the tracking store is created"


def test_storage_that_cannot_be_written_is_refused_before_ray(tmp_path: Path, no_ray: None) -> None:
    (tmp_path / "a-file").write_text("")
    cfg = tiny_config(tmp_path, storage=str(tmp_path / "a-file" / "runs"))
    with pytest.raises(BenchError, match=r"storage .*a-file/runs cannot be written: Not a directory"):
        driver.run_sweep(cfg)
    assert not (tmp_path / "mlflow.db").exists()
    fine = tiny_config(tmp_path)
    driver.preflight(fine, JobContext.for_config(fine), on_cluster=False, console=Console())
    assert sorted(p.name for p in (tmp_path / "storage").iterdir()) == ["baselines", "encrypted", "keys", "studies"]
    assert not list((tmp_path / "storage").rglob(".probe-*")), "the probe files are removed"


def test_joining_a_cluster_what_this_machine_cannot_reach_is_a_note(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    cfg = tiny_config(tmp_path, storage=str(tmp_path / "a-file" / "runs"),
                      datasets=[{"name": "digits", "owner_samples": 2000, "models": [{"name": "mlp"}]}])
    console = Console(record=True, width=300)
    driver.preflight(cfg, JobContext.for_config(cfg), on_cluster=True, console=console)
    notes = console.export_text().splitlines()
    assert len(notes) == 2 and all(n.startswith("note: ") and "the cluster's nodes may differ" in n for n in notes)
    assert "2000 owner samples" in notes[0] and "cannot be written" in notes[1]


# ------------------------------------------------------------------------------------------ connections
def test_a_dead_ray_address_is_refused_within_the_deadline(capsys, tmp_path: Path, no_ray: None) -> None:
    path = write_config(tmp_path)
    before = files_in(tmp_path)
    for address in (f"127.0.0.1:{closed_port()}", "no-such-host.invalid:6379"):
        start = time.perf_counter()
        with pytest.raises(BenchError) as err:
            driver.wait_for_cluster(address, 2)
        assert 1.5 < time.perf_counter() - start < 4, "retried until the deadline, and no longer"
        assert str(err.value).startswith(f"Ray at {address} did not answer within 2 s (")
        assert_refused(cli(capsys, "sweep", path, "--address", address, "--connect-timeout", "1"),
                       f"Ray at {address} did not answer within 1 s")
    assert files_in(tmp_path) == before, "refused before the tracking store or storage is created"
    with pytest.raises(BenchError, match="port 70000 is out of range"):
        driver.wait_for_cluster("127.0.0.1:70000", 1)


def test_a_dead_tracking_server_is_refused_within_the_deadline(capsys, tmp_path: Path, no_ray: None) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    start = time.perf_counter()
    with pytest.raises(BenchError) as err:
        Tracker(uri, "x", connect_timeout=2)
    assert 1.5 < time.perf_counter() - start < 4
    assert str(err.value) == (f"tracking server {uri} did not answer within 2 s (Connection refused); check "
                              "--tracking-uri, or raise --connect-timeout (jobs.connect_timeout)")
    path = write_config(tmp_path)
    before = files_in(tmp_path)
    assert_refused(cli(capsys, "sweep", path, "--tracking-uri", uri, "--set", "jobs.connect_timeout=1"),
                   "did not answer within 1 s")
    assert files_in(tmp_path) == before


@pytest.fixture
def late_listener() -> Iterator[int]:
    """A loopback HTTP server that starts listening one second from now (a server still starting up)."""
    port = closed_port()
    server: list[http.server.HTTPServer] = []

    def serve() -> None:
        time.sleep(1)
        server.append(http.server.HTTPServer(("127.0.0.1", port), http.server.BaseHTTPRequestHandler))
        server[0].serve_forever()

    threading.Thread(target=serve, daemon=True).start()
    yield port
    deadline = time.monotonic() + 5
    while not server and time.monotonic() < deadline:
        time.sleep(0.1)
    if server:
        server[0].shutdown()
        server[0].server_close()


def test_a_cluster_still_starting_is_waited_for(late_listener: int) -> None:
    start = time.perf_counter()
    driver.wait_for_cluster(f"127.0.0.1:{late_listener}", 10)
    assert 0.5 < time.perf_counter() - start < 5


def test_a_tracking_server_still_starting_is_waited_for(late_listener: int) -> None:
    start = time.perf_counter()
    wait_for_server(f"http://127.0.0.1:{late_listener}", 10)  # any HTTP answer will do (here 501)
    assert 0.5 < time.perf_counter() - start < 5


def test_the_connect_deadline_is_a_config_key_and_a_flag(capsys, tmp_path: Path) -> None:
    assert tiny_config(tmp_path).jobs.connect_timeout == 30
    with pytest.raises(BenchError, match="jobs.connect_timeout: Input should be greater than 0"):
        tiny_config(tmp_path, jobs={"connect_timeout": 0})
    path = write_config(tmp_path)
    for value in ("0", "-1", "nan"):
        assert_refused(cli(capsys, "sweep", path, "--connect-timeout", value),
                       "jobs.connect_timeout: Input should be greater than 0")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "cfg.yaml", "--connect-timeout", "soon"])
    assert "invalid float value: 'soon'" in capsys.readouterr().err
