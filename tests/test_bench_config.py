"""Sweep configs: validation messages name the key's path, overrides apply, the plan expands the grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.sweep.config import load_config, parse_config
from bench.sweep.plan import MAX_JOBS, check_plan, make_plan, plan_for
from protect import check_options

REPO = Path(__file__).resolve().parents[1]


def base() -> dict:
    return {"name": "t", "seeds": [0, 1], "datasets": [{"name": "digits", "models": [{"name": "cnn"}]}],
            "protect": {"methods": ["advparams", "random"], "match": {"random": "advparams"}, "max_params": [4, 8],
                        "eps": [1.0]},
            "attacks": {"names": ["finetune", "scratch"], "fractions": [0.1, 0.3], "trials": 2}}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"protect": {"epss": 1}}, "protect.epss: unknown key"),
        ({"protect": {"eps": [-1]}}, "protect.eps: every eps must be > 0"),
        ({"protect": {"max_params": [0]}}, "protect.max_params: every max_params must be >= 1"),
        ({"attacks": {"fractions": [1.5]}}, "attacks.fractions: every attacker fraction must be in (0, 1)"),
        ({"datasets": [{"name": "mnist", "models": [{"name": "cnn"}]}]}, "datasets.0.name: unknown data set 'mnist'"),
        ({"datasets": [{"name": "imagefolder", "models": [{"name": "cnn"}]}]}, "imagefolder data set needs 'path'"),
        ({"jobs": {"attack": {"num_gpus": -1}}}, "jobs.attack.num_gpus"),
        ({"jobs": {"amp": "fast"}}, "jobs.amp"),
        ({"name": "bad name!"}, "name: String should match pattern"),
        ({"protect": {"methods": ["advparams", "fgsm"]}},
         "protect.methods: unknown protection method 'fgsm'; registered: advparams, keyed_lock, nnsplitter, random, reinit"),
        ({"protect": {"methods": ["random"], "match": {"random": "random"}}}, "protect.match: 'random' cannot match itself"),
        ({"protect": {"methods": ["random"], "match": {"random": "advparams"}}},
         "protect.match: 'random' matches 'advparams', which is not in protect.methods (random)"),
        ({"protect": {"methods": ["advparams", "random"], "match": {"random": "advparams", "advparams": "random"}}},
         "protect.match: 'random' matches 'advparams', which matches 'random' in turn"),
        ({"protect": {"loss": "margin"}}, "protect.loss: unknown key"),
        ({"protect": {"random_matches_advparams": True}}, "protect.random_matches_advparams: unknown key"),
        ({"protect": {"method_max_params": {"lock": [8]}}},
         "protect.method_max_params: unknown protection method 'lock'"),
        ({"protect": {"method_max_params": {"keyed_lock": []}}},
         "protect.method_max_params: 'keyed_lock': give at least one max_params, each >= 1"),
        ({"protect": {**base()["protect"], "method_max_params": {"random": [4, 16]}}},
         "protect: 'random' matches 'advparams', which does not run at max_params [16]"),
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


def test_a_method_with_budgets_of_its_own_runs_at_those_alone_and_the_others_keep_their_ids() -> None:
    raw = base()
    plain = make_plan(parse_config(raw), ["finetune", "scratch"], weight_free={"scratch"})
    raw["protect"]["methods"] += ["keyed_lock", "reinit"]
    raw["protect"]["method_max_params"] = {"keyed_lock": [8, 64], "reinit": [64]}
    plan = make_plan(parse_config(raw), ["finetune", "scratch"], weight_free={"scratch"})
    cells = {(e.method, e.cell) for e in plan.encrypts}
    assert cells == {("advparams", "n=4,eps=1"), ("advparams", "n=8,eps=1"), ("random", "n=4,eps=1"),
                     ("random", "n=8,eps=1"), ("keyed_lock", "n=8,eps=1"), ("keyed_lock", "n=64,eps=1"), ("reinit", "all")}
    assert {e.id for e in plain.encrypts} < {e.id for e in plan.encrypts}  # the shared grid's jobs are the same jobs
    assert [e.budget["max_params"] for e in plan.encrypts if e.method == "reinit"] == [4, 4]  # the first cell, per seed


def test_matched_jobs_follow_the_job_they_match_and_only_matched_jobs_match() -> None:
    raw = base()
    raw["protect"]["methods"] = ["random", "advparams"]
    plan = make_plan(parse_config(raw), ["finetune", "scratch"], weight_free={"scratch"})
    assert [e.method for e in plan.encrypts[:2]] == ["advparams", "random"]  # the matched-to job first
    raw["protect"]["match"] = {}
    unmatched = make_plan(parse_config(raw), ["finetune", "scratch"], weight_free={"scratch"})
    assert [e.method for e in unmatched.encrypts[:2]] == ["random", "advparams"]  # else the config's order
    assert all(e.match is None for e in unmatched.encrypts)


def test_options_reach_the_budget_resolved_per_method() -> None:
    raw = base()
    raw["protect"]["options"] = {"advparams": {"loss": "margin"}}
    plan = make_plan(parse_config(raw), ["finetune", "scratch"], weight_free={"scratch"})
    options = {e.method: e.budget["options"] for e in plan.encrypts}
    assert options["advparams"] == {**check_options("advparams", {}), "loss": "margin"}  # defaults filled in
    assert options["advparams"]["rank"] == "gain" and options["random"] == {}
    assert all("loss" not in e.budget and "rank" not in e.budget for e in plan.encrypts)
    default = make_plan(parse_config(base()), ["finetune", "scratch"], weight_free={"scratch"})
    assert not {e.id for e in default.encrypts if e.method == "advparams"} & {e.id for e in plan.encrypts}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"advparams": {"loss": "hinge"}}, "protect.options.advparams: protection method 'advparams': param 'loss' = "
                                           "'hinge' is not one of 'ce', 'margin'"),
        ({"advparams": {"rnk": "gain"}}, "protect.options.advparams: unknown param 'rnk' for protection method "
                                         "'advparams'; known: rank, loss"),
        ({"random": {"rank": "gain"}}, "protect.options.random: unknown param 'rank' for protection method 'random'"),
        ({"fgsm": {}}, "protect.options.fgsm: unknown protection method 'fgsm'; registered: advparams, keyed_lock, nnsplitter, random, reinit"),
    ],
)
def test_bad_options_are_refused_when_planning(options: dict, message: str) -> None:
    raw = base()
    raw["protect"]["options"] = options
    with pytest.raises(BenchError) as err:
        make_plan(parse_config(raw), ["finetune", "scratch"], weight_free={"scratch"})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_all_expands_to_registered_attacks() -> None:
    cfg = parse_config({**base(), "attacks": {"names": ["all"], "fractions": [0.1]}})
    plan = make_plan(cfg, ["a", "b", "scratch"], weight_free={"scratch"})
    assert {j.attack for j in plan.attacks} == {"a", "b", "scratch"}


@pytest.mark.parametrize("name", ["quick.yaml", "paper.yaml", "paper-gpu.yaml"])
def test_shipped_configs_validate(name: str) -> None:
    path = REPO / "configs" / name
    if not path.exists():
        pytest.skip(f"{name} not written yet")
    counts = check_plan(load_config(path))  # model names resolve, the grid is within the job limit
    assert 0 < sum(counts.values()) <= MAX_JOBS


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


def test_narrowing_the_methods_drops_a_match_whose_method_is_not_run() -> None:
    cfg = load_config("configs/quick.yaml", ["protect.methods=[advparams]"])
    assert cfg.protect.match == {"random": "advparams"}
    assert {e.method for e in plan_for(cfg).encrypts} == {"advparams"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nope": 1}, "nope: unknown key; allowed: name, seeds, storage, data_root, download, datasets, protect"),
        ({"protect": {"epss": 1}}, "protect.epss: unknown key; allowed: methods, max_params, eps, params_per_step"),
        ({"datasets": [{"name": "digits", "models": [{"name": "cnn", "training": {"epoch": 1}}]}]},
         "datasets.0.models.0.training.epoch: unknown key; allowed: epochs, lr, optimizer, batch_size, weight_decay"),
    ],
)
def test_an_unknown_key_names_the_allowed_ones(change: dict, message: str) -> None:
    with pytest.raises(BenchError) as err:
        parse_config({"name": "x", "datasets": [{"name": "digits", "models": [{"name": "cnn"}]}], **change})
    assert message in str(err.value) and "\n" not in str(err.value)
