"""Sweep configs: validation messages name the key's path, overrides apply, the plan expands the grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.sweep.config import load_config, parse_config
from bench.errors import BenchError
from bench.sweep.plan import make_plan

REPO = Path(__file__).resolve().parents[1]


def base() -> dict:
    return {"name": "t", "seeds": [0, 1], "datasets": [{"name": "digits", "models": [{"name": "cnn"}]}],
            "protect": {"methods": ["advparams", "random"], "max_params": [4, 8], "eps": [1.0]},
            "attacks": {"names": ["finetune", "scratch"], "fractions": [0.1, 0.3], "trials": 2}}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"protect": {"epss": 1}}, "protect.epss: unknown key"),
        ({"protect": {"eps": [-1]}}, "protect.eps: every eps must be > 0"),
        ({"protect": {"max_params": [0]}}, "protect.max_params: every max_params must be >= 1"),
        ({"attacks": {"fractions": [1.5]}}, "attacks.fractions: every attacker fraction must be in (0, 1)"),
        ({"datasets": [{"name": "mnist", "models": [{"name": "cnn"}]}]}, "datasets.0.name: Input should be"),
        ({"datasets": [{"name": "imagefolder", "models": [{"name": "cnn"}]}]}, "imagefolder data set needs 'path'"),
        ({"jobs": {"attack": {"num_gpus": -1}}}, "jobs.attack.num_gpus"),
        ({"jobs": {"amp": "fast"}}, "jobs.amp"),
        ({"name": "bad name!"}, "name: String should match pattern"),
    ],
)
def test_bad_values_name_the_key(change: dict, message: str) -> None:
    raw = {**base(), **change}
    with pytest.raises(BenchError) as err:
        parse_config(raw, "cfg.yaml")
    text = str(err.value)
    assert "\n" not in text and text.startswith("cfg.yaml: ")
    assert message in text


def test_overrides_replace_values_and_reject_unknown_paths() -> None:
    cfg = parse_config(base(), overrides=["protect.eps=[0.5,1.0]", "attacks.trials=5", "datasets.0.owner_samples=100"])
    assert cfg.protect.eps == [0.5, 1.0] and cfg.attacks.trials == 5 and cfg.datasets[0].owner_samples == 100
    with pytest.raises(BenchError, match="protect.nope: unknown key"):
        parse_config(base(), overrides=["protect.nope=1"])
    with pytest.raises(BenchError, match="expects path=value"):
        parse_config(base(), overrides=["protect.eps"])


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(BenchError, match="not valid YAML at line"):
        load_config(bad)


def test_plan_expands_the_grid_and_ids_are_stable() -> None:
    cfg = parse_config(base())
    plan = make_plan(cfg, ["finetune", "scratch"], weight_free={"scratch"})
    # 2 seeds x 1 model; 2 methods x 2 cells; finetune per encrypted model and fraction, scratch per baseline.
    assert plan.counts() == {"train": 2, "encrypt": 8, "attack": 2 * (4 * 2 + 2)}
    again = make_plan(parse_config(base()), ["finetune", "scratch"], weight_free={"scratch"})
    assert [j.id for j in plan.jobs] == [j.id for j in again.jobs]
    assert len({j.id for j in plan.jobs}) == len(plan.jobs)
    random_jobs = [e for e in plan.encrypts if e.method == "random"]
    adv_ids = {e.id for e in plan.encrypts if e.method == "advparams"}
    assert random_jobs and all(e.match in adv_ids for e in random_jobs)
    # Matched jobs come after the job they match, so the driver can hand over its result.
    order = [e.id for e in plan.encrypts]
    assert all(order.index(e.match) < order.index(e.id) for e in random_jobs)
    changed = make_plan(parse_config(base(), overrides=["attacks.epochs=3"]), ["finetune", "scratch"], {"scratch"})
    assert {j.id for j in changed.trains} == {j.id for j in plan.trains}  # training did not change
    assert not {j.id for j in changed.attacks} & {j.id for j in plan.attacks}


def test_all_expands_to_registered_attacks() -> None:
    cfg = parse_config({**base(), "attacks": {"names": ["all"], "fractions": [0.1]}})
    plan = make_plan(cfg, ["a", "b", "scratch"], weight_free={"scratch"})
    assert {j.attack for j in plan.attacks} == {"a", "b", "scratch"}


@pytest.mark.parametrize("name", ["quick.yaml", "paper.yaml", "paper-gpu.yaml"])
def test_shipped_configs_validate(name: str) -> None:
    path = REPO / "configs" / name
    if not path.exists():
        pytest.skip(f"{name} not written yet")
    load_config(path)


def test_a_fixed_train_seed_shares_one_baseline_and_methods_narrow_the_attacks() -> None:
    raw = base()
    raw["datasets"][0]["models"][0]["train_seed"] = 7
    raw["attacks"]["methods"] = ["advparams"]
    plan = make_plan(parse_config(raw), ["finetune", "scratch"], weight_free={"scratch"})
    [train] = plan.trains  # one baseline for both grid seeds
    assert train.seed == 7
    assert {e.seed for e in plan.encrypts} == {0, 1}  # the grid's seeds still draw owners and attackers
    assert plan.counts() == {"train": 1, "encrypt": 8, "attack": 2 * (2 * 2 + 2)}
    assert all(a.encrypt is None or a.encrypt.method == "advparams" for a in plan.attacks)
    assert {a.seed for a in plan.attacks} == {0, 1}


def test_repeated_entries_plan_each_job_once() -> None:
    raw = base()
    raw["seeds"] = [0, 0]
    raw["protect"]["max_params"] = [4, 4]
    raw["attacks"]["fractions"] = [0.1, 0.1]
    plan = make_plan(parse_config(raw), ["finetune", "scratch"], weight_free={"scratch"})
    assert len({j.id for j in plan.jobs}) == len(plan.jobs)
    assert plan.counts() == {"train": 1, "encrypt": 2, "attack": 2 + 1}
