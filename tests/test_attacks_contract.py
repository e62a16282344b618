"""The attack contract without a trained model: params, budget, data, the prologue of run, registry, plugins."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from attacks import (
    ATTACKS,
    ENTRY_POINT_GROUP,
    Attack,
    AttackerBudget,
    AttackerData,
    AttackError,
    AttackResult,
    Param,
    attack_names,
    get_attack,
    register_attack,
    reload_plugins,
)
from common.params import ParamError

BUILTINS = {"adaptive", "clip", "finetune", "key_inversion", "magnitude_prune", "prune", "quantize", "scratch"}


def tiny_data(n: int = 8) -> TensorDataset:
    return TensorDataset(torch.randn(n, 4), torch.arange(n) % 2)


def test_builtins_are_registered() -> None:
    assert BUILTINS <= set(attack_names())
    for name in BUILTINS:
        attack = get_attack(name)
        assert attack.name == name
        assert attack.paper, f"{name} cites no paper"
        assert attack.paper.split(",")[0] in (type(attack).__doc__ or "")


def test_unknown_attack_lists_registered_names() -> None:
    with pytest.raises(AttackError, match=r"unknown attack 'nope'; registered: adaptive, clip, finetune"):
        get_attack("nope")


def test_unknown_param_lists_known_ones() -> None:
    with pytest.raises(AttackError) as err:
        get_attack("finetune").check_params({"lrr": 0.1})
    assert str(err.value) == "unknown param 'lrr' for attack 'finetune'; known: layers, lr, optimizer, patience"


@pytest.mark.parametrize(
    ("attack", "params", "message"),
    [
        ("finetune", {"lr": 5.0}, "param 'lr' = 5.0 is outside [0.0001, 0.1]"),
        ("adaptive", {"k": 0}, "param 'k' = 0 is outside [1, 4096]"),
        ("clip", {"z": "abc"}, "param 'z' = 'abc' is not a valid float"),
        ("prune", {"global_pruning": "maybe"}, "param 'global_pruning' = 'maybe' is not a valid bool"),
        ("quantize", {"bits": 3}, "param 'bits' = 3 is not one of 8, 4"),
        ("key_inversion", {"step": 2.5}, "param 'step' = 2.5 is not a valid int"),
        ("finetune", {"lr": float("nan")}, "param 'lr' = nan is not a valid float"),
    ],
)
def test_bad_values_name_the_param_and_range(attack: str, params: dict, message: str) -> None:
    with pytest.raises(AttackError) as err:
        get_attack(attack).check_params(params)
    assert str(err.value) == message
    assert "\n" not in str(err.value)


def test_check_params_fills_defaults_and_coerces_command_line_strings() -> None:
    checked = get_attack("prune").check_params({"ratio": "0.5", "global_pruning": "true", "finetune_after": "no"})
    assert checked == {"ratio": 0.5, "global_pruning": True, "finetune_after": False, "lr": 0.003,
                       "optimizer": "adam", "patience": 5}
    assert get_attack("quantize").check_params({"bits": "4"})["bits"] == 4


def test_epochs_bound_param_follows_the_budget() -> None:
    bound = _variant("bound", params=(Param("rounds", "int", 4, low=0, epochs_bound=True),))()
    assert bound.check_params({}, AttackerBudget(0.5, epochs=0))["rounds"] == 0
    assert bound.check_params({"rounds": 3}, AttackerBudget(0.5, epochs=3))["rounds"] == 3
    with pytest.raises(AttackError, match=r"param 'rounds' = 3 is outside \[0, 2\]"):
        bound.check_params({"rounds": 3}, AttackerBudget(0.5, epochs=2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data_fraction": 0.0}, "budget data_fraction = 0.0 is outside (0, 1]"),
        ({"data_fraction": 1.5}, "budget data_fraction = 1.5 is outside (0, 1]"),
        ({"data_fraction": True}, "budget data_fraction = True is outside (0, 1]"),
        ({"data_fraction": 0.5, "trials": 0}, "budget trials = 0 must be an integer >= 1"),
        ({"data_fraction": 0.5, "epochs": -1}, "budget epochs = -1 must be an integer >= 0"),
        ({"data_fraction": 0.5, "epochs": 1.5}, "budget epochs = 1.5 must be an integer >= 0"),
    ],
)
def test_bad_budget(kwargs: dict, message: str) -> None:
    with pytest.raises(AttackError) as err:
        AttackerBudget(**kwargs)
    assert str(err.value) == message


def test_bad_attacker_data() -> None:
    with pytest.raises(AttackError, match="attacker val data is empty"):
        AttackerData(tiny_data(), TensorDataset(torch.empty(0, 4), torch.empty(0, dtype=torch.long)), 2)
    with pytest.raises(AttackError, match="num_classes = 1 must be an integer >= 2"):
        AttackerData(tiny_data(), tiny_data(), 1)
    with pytest.raises(AttackError, match="attacker train data must be a TensorDataset"):
        AttackerData([1, 2], tiny_data(), 2)  # type: ignore[arg-type]


def tiny_task() -> tuple[nn.Module, AttackerData, AttackerBudget]:
    """A model with conv-free weight layers and batch-norm statistics, data for it, a one-epoch budget."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    return model, AttackerData(tiny_data(16), tiny_data(8), 2), AttackerBudget(0.5, trials=1, epochs=1)


def refused(call, message: str) -> None:
    """``call()`` raises an AttackError whose message is one line containing ``message``."""
    with pytest.raises(AttackError) as err:
        call()
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", attack_names())
def test_run_never_modifies_the_callers_model(name: str) -> None:
    model, data, budget = tiny_task()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = get_attack(name).run(model, data, {}, budget, seed=0)
    assert result.model is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), f"{name} modified its input"


@pytest.mark.parametrize("name", attack_names())
def test_run_refuses_bad_params_in_one_line(name: str) -> None:
    attack = get_attack(name)
    model, data, budget = tiny_task()
    refused(lambda: attack.run(model, data, {"no_such_param": 1}, budget), f"unknown param 'no_such_param' for attack {name!r}")
    refused(lambda: attack.run(model, data, None, budget), f"attack {name!r}: params must be a mapping")  # type: ignore[arg-type]
    for p in attack.params:
        refused(lambda: attack.run(model, data, {p.name: "not-a-value"}, budget), f"param {p.name!r} = 'not-a-value'")


@pytest.mark.parametrize("name", attack_names())
@pytest.mark.parametrize(
    ("argument", "wrong", "message"),
    [
        ("model", "model.safetensors", "model must be a torch nn.Module, not str"),
        ("data", tiny_data(), "data must be an AttackerData, not TensorDataset"),
        ("budget", 0.5, "budget must be an AttackerBudget, not float"),
    ],
)
def test_run_refuses_wrong_types(name: str, argument: str, wrong: object, message: str) -> None:
    model, data, budget = tiny_task()
    inputs = {"model": model, "data": data, "budget": budget, argument: wrong}
    attack = get_attack(name)
    refused(lambda: attack.run(inputs["model"], inputs["data"], {}, inputs["budget"]), f"attack {name!r}: {message}")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "str", "default": "a"}, "kind 'str' is not one of int, float, bool, choice"),
        ({"kind": "choice", "default": "a"}, "a choice needs a non-empty 'choices' tuple"),
        ({"kind": "float", "default": 1.0, "low": 2.0, "high": 1.0}, "low 2.0 is above high 1.0"),
        (
            {"kind": "float", "default": 1.0, "low": 0.0, "high": 1.0, "log": True},
            "a log range needs low > 0",
        ),
        ({"kind": "float", "default": 1.0, "low": 0.0}, "a tunable number needs 'high'"),
        ({"kind": "int", "default": 5, "low": 0, "high": 3}, r"param 'x' = 5 is outside \[0, 3\]"),
    ],
)
def test_bad_param_declarations(kwargs: dict, message: str) -> None:
    with pytest.raises(ParamError, match=message):
        Param("x", **kwargs)


class _Identity(Attack):
    """Returns its copy of the model unchanged; subclassed by the registry's refusal cases."""

    name = "identity"
    params = (Param("x", "int", 1, low=0, high=3),)

    def attack(self, model, data, params, budget, *, seed, report, meter) -> AttackResult:  # type: ignore[override]
        return AttackResult(model)


def _variant(name: str, **body: object) -> type:
    return type("Variant", (_Identity,), {"name": name, **body})


class _NoStep(Attack):
    name = "nostep"
    params = ()


@pytest.mark.parametrize(
    ("name", "cls", "message"),
    [
        ("finetune", _variant("finetune"), "attack name 'finetune' is already registered"),
        ("twice", _variant("twice", params=_Identity.params * 2), "attack 'twice' declares a param name twice"),
        ("listed", _variant("listed", params=list(_Identity.params)), "attack 'listed': 'params' must be a tuple of Param"),
        ("linear", nn.Linear, "is not a subclass of attacks.Attack"),
        ("other", _variant("mine"), "attack class Variant is named 'mine', not 'other'"),
        ("nostep", _NoStep, "attack 'nostep' does not implement attack"),
        ("ownrun", _variant("ownrun", run=lambda self, *a, **k: None), r"attack 'ownrun' overrides run\(\)"),
        ("listrec", _variant("listrec", recipes=[{"x": 2}]), "attack 'listrec': 'recipes' must be a tuple"),
        ("badrec", _variant("badrec", recipes=({"x": 9},)), r"attack 'badrec' recipe \{'x': 9\}: param 'x' = 9 is outside"),
        ("a:b", _variant("a:b"), "attack name 'a:b' must be a non-empty string without ':'"),
    ],
)
def test_registry_refuses_a_bad_attack_class(name: str, cls: type, message: str) -> None:
    names = attack_names()
    with pytest.raises(AttackError, match=message):
        ATTACKS.add(name, cls)
    assert attack_names() == names
    assert all(registered is not cls for _, registered in ATTACKS.items())


def test_register_attack_uses_the_class_name() -> None:
    with pytest.raises(AttackError, match="attack name '' must be a non-empty string"):
        register_attack(Attack)  # the base class has no name
    try:
        assert register_attack(_Identity) is _Identity
        assert type(get_attack("identity")) is _Identity
        assert get_attack("identity") is not get_attack("identity")  # a fresh instance each time
    finally:
        ATTACKS.remove("identity")
    assert "identity" not in attack_names()


def test_search_space_suggests_tunables_only(tmp_path: Path) -> None:
    import optuna

    attack = get_attack("prune")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    params = attack.search_space(trial, AttackerBudget(0.5, epochs=2), {"ratio": 0.25})
    assert params["ratio"] == 0.25
    assert set(trial.params) == {"global_pruning", "finetune_after", "lr", "optimizer"}  # patience is not tuned
    assert params["patience"] == 5
    assert 1e-4 <= params["lr"] <= 0.1


def _fake_distribution(root: Path, entries: dict[str, str]) -> None:
    """A minimal installed distribution whose only content is ``advparams.attacks`` entry points."""
    info = root / "broken_attack_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-attack-plugin\nVersion: 0.1\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}\n")
    (root / "broken_attack_module.py").write_text(
        textwrap.dedent(
            """
            raise RuntimeError("this plugin is broken on purpose")
            """
        )
    )


def test_broken_plugins_warn_and_builtins_still_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_distribution(
        tmp_path,
        {
            "crashes": "broken_attack_module:Attack",
            "missing": "no_such_module_for_advparams:Attack",
            "notattack": "json:dumps",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    names = {e.name for e in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert {"crashes", "missing", "notattack"} <= names
    try:
        with pytest.warns(RuntimeWarning) as caught:
            reload_plugins()
        messages = [str(w.message) for w in caught]
        assert any("'crashes'" in m and "broken on purpose" in m for m in messages), messages
        assert any("'missing'" in m and "no_such_module_for_advparams" in m for m in messages), messages
        assert any("'notattack'" in m and "not a subclass of attacks.Attack" in m for m in messages), messages
        assert BUILTINS <= set(attack_names())
        assert not {"crashes", "missing", "notattack"} & set(attack_names())
    finally:
        monkeypatch.undo()
        reload_plugins()


def test_package_never_imports_protect_or_bench() -> None:
    """The attacker must not see the defender's code (and so the key format) nor the harness."""
    code = (
        "import sys, attacks; attacks.attack_names(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('protect', 'bench')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_scratch_refuses_a_parameter_it_cannot_reset() -> None:
    """A bare nn.Parameter (a ViT's class token, say) would keep its stolen value in the reference."""
    from attacks.builtin.scratch import reinitialise

    class WithToken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.token = nn.Parameter(torch.ones(3))
            self.head = nn.Linear(3, 2)

    with pytest.raises(AttackError, match="cannot re-initialise parameter 'token'"):
        reinitialise(WithToken(), seed=0)
    plain = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    before = [p.detach().clone() for p in plain.parameters()]
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(5.0)
    reinitialise(plain, seed=0)
    assert all(not torch.equal(a + 5.0, b) for a, b in zip(before, plain.parameters()))
