"""The method registry: built-ins found without an import list, outside packages by entry point, options checked."""

from __future__ import annotations

import copy
import importlib.metadata
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from protect_helpers import (
    assert_one_line_and_untouched,
    batches,
    bn_cnn,
    mlp,
    registered,
    states_equal,
)

from common.params import Param
from protect import (
    METHODS,
    Budget,
    ProtectError,
    check_options,
    decrypt,
    encrypt,
    register_method,
    state_fingerprint,
)

PLUGIN = '''
import torch
from common.params import Param
from protect import register_method


def plain(run):
    """Plain: the first movable scalar of each candidate tensor, no decorator and no options."""
    for name in run.candidates.names:
        sign = torch.ones(run.candidates.params[name].numel())
        first = (run.ledger.propose(name, sign)[1] > 0).nonzero().reshape(-1)[:1].cpu()
        run.ledger.apply(name, first, sign[first])
    return {"stop_reason": "done"}


@register_method("plug_decorated", options=(Param("k", "int", 1, low=1, high=4, tune=False, help="scalars"),))
def decorated(run):
    """Decorated: the first k movable scalars of the first candidate tensor."""
    name = run.candidates.names[0]
    sign = torch.ones(run.candidates.params[name].numel())
    first = (run.ledger.propose(name, sign)[1] > 0).nonzero().reshape(-1)[: run.options["k"]].cpu()
    run.ledger.apply(name, first, sign[first])
    return {"stop_reason": "done"}
'''


def test_builtins_are_found_without_an_import_list() -> None:
    code = (
        "import sys, protect\n"
        "assert 'protect.methods.advparams' not in sys.modules\n"
        "print(protect.METHODS.names())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['advparams', 'keyed_lock', 'nnsplitter', 'random', 'reinit']"


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Three ``advparams.methods`` entry points of an outside module: plain, decorated, and one that is broken."""
    METHODS.names()  # the built-ins and real plugins loaded first: the fake entry points are then read once per reload
    (tmp_path / "plug_methods.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [
        importlib.metadata.EntryPoint(name, f"plug_methods:{target}", "advparams.methods")
        for name, target in [("plug_plain", "plain"), ("plug_decorated", "decorated"), ("plug_broken", "missing")]
    ]
    real = importlib.metadata.entry_points
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda group: points if group == "advparams.methods" else real(group=group)
    )
    yield
    for name in ("plug_plain", "plug_decorated"):
        METHODS.remove(name)
    sys.modules.pop("plug_methods", None)


def test_entry_points_register_plain_and_decorated_functions(plugin: None) -> None:
    for _ in range(2):  # reading the entry points again registers nothing twice
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            METHODS.reload_plugins()
        assert [str(w.message).split(" (")[0] for w in caught] == ["protection method plugin 'plug_broken'"]
    assert {"plug_plain", "plug_decorated", "advparams", "random"} <= set(METHODS.names())
    plain, decorated = METHODS.get("plug_plain"), METHODS.get("plug_decorated")
    assert plain.options == () and plain.summary.startswith("Plain: the first movable scalar")
    assert [p.name for p in decorated.options] == ["k"] and decorated.summary.startswith("Decorated:")
    for name, options, changed in [("plug_plain", {}, 3), ("plug_decorated", {"k": "3"}, 3)]:
        model = bn_cnn()
        before = copy.deepcopy(model.state_dict())
        key = encrypt(model, batches("bn_cnn"), Budget(max_params=8, options=options), method=name)
        assert key.num_changed == changed and key.method == name
        decrypt(model, key)
        assert states_equal(model.state_dict(), before)


def test_a_name_is_taken_once_and_a_registration_is_checked() -> None:
    random_scalars = METHODS.get("random").function
    METHODS.add("random", random_scalars)  # the same function again: no duplicate
    cases = [
        (lambda: register_method("random")(lambda run: {}), "protection method name 'random' is already registered"),
        (lambda: METHODS.add("test_not_callable", 3), "protection method 'test_not_callable' must be a function"),
        (lambda: register_method("test_bad_options", options=("k",))(random_scalars), "must be a tuple of Param"),
        (
            lambda: register_method("test_twice", options=(Param("k", "bool", True),) * 2)(random_scalars),
            "protection method 'test_twice' declares a param name twice",
        ),
        (lambda: register_method("a:b")(random_scalars), "must be a non-empty string without ':'"),
    ]
    for action, message in cases:
        with pytest.raises(ProtectError, match=message) as excinfo:
            action()
        assert "\n" not in str(excinfo.value)
    assert not {"test_not_callable", "test_bad_options", "test_twice", "a:b"} & set(METHODS.names())


@pytest.mark.parametrize(
    ("method", "values", "expected"),
    [
        ("advparams", {}, {"rank": "gain", "loss": "ce", "schedule": "fixed", "gradient_samples": 0}),
        (
            "advparams",
            {"loss": "margin", "rank": "gradient", "schedule": "fixed", "gradient_samples": 0},
            {"rank": "gradient", "loss": "margin", "schedule": "fixed", "gradient_samples": 0},
        ),
        ("random", {}, {}),
    ],
)
def test_check_options_fills_defaults(method: str, values: dict, expected: dict) -> None:
    assert check_options(method, values) == expected


def test_check_options_refuses_an_unknown_method() -> None:
    with pytest.raises(ProtectError, match=r"^unknown protection method 'fgsm'; registered: advparams, keyed_lock, nnsplitter, random"):
        check_options("fgsm", {})


def too_many(run):
    """A faulty method: twice the budget's scalars."""
    name = run.candidates.names[0]
    index = torch.arange(2 * run.budget.max_params)
    run.ledger.apply(name, index, torch.ones(len(index), dtype=torch.int8))
    return {"stop_reason": "max_params"}


def test_a_method_past_max_params_is_refused_and_undone() -> None:
    """The budget is a guarantee of `encrypt`, not of each method: a method that breaks it leaves no trace."""
    model = mlp()
    fingerprint = state_fingerprint(model)
    with registered("too_many", too_many, options=()) as name:
        with pytest.raises(ProtectError, match="changed 8 scalars, more than max_params 4") as err:
            encrypt(model, batches("mlp"), Budget(max_params=4, target_accuracy=0.0), method=name)
    assert_one_line_and_untouched(err, model, fingerprint)
