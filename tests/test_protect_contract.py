"""The method contract, for every registered protection method: a new method is tested by being registered.

Each check is a function of the method's name; the tests run it for every name in ``METHODS`` (built-ins and
installed plugins) and, in the last test, for a method registered for the test alone.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from protect_helpers import (
    ARCHITECTURES,
    assert_one_line_and_untouched,
    batches,
    bn_cnn,
    changed_scalars,
    registered,
    states_equal,
    with_bn_stats,
)

from protect import (
    METHODS,
    Budget,
    ProtectError,
    SecretKey,
    decrypt,
    encrypt,
    state_fingerprint,
)

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# target 0: run to max_params, so the round trip covers a full budget even on untrained models.
BUDGET = Budget(max_params=24, eps=0.5, params_per_step=3, target_accuracy=0.0)


def check_round_trip(method: str, arch: str, dtype: torch.dtype) -> None:
    """Exactly the key's scalars change, never more than max_params (every candidate for a method that
    replaces them all), and decrypt restores every bit."""
    data = batches(arch)
    model = with_bn_stats(ARCHITECTURES[arch]().to(dtype), data)
    before = copy.deepcopy(model.state_dict())
    key = encrypt(model, data, BUDGET, method=method)
    changed = changed_scalars(before, model)
    assert 0 < len(changed) == key.num_changed
    if METHODS.get(method).changes_all:
        assert key.num_changed == key.stats["candidate_params"]
    else:
        assert key.num_changed <= BUDGET.max_params
    assert changed == set(key.positions)
    assert key.method == method and key.stats["stop_reason"]
    assert key.encrypted_fingerprint == state_fingerprint(model) != key.original_fingerprint
    decrypt(model, key)
    assert states_equal(model.state_dict(), before)


def check_key_file(method: str, tmp_path: Path) -> None:
    """The key survives its file, plain and locked, and a wrong passphrase, a damaged file or another model
    is refused in one line with the model untouched."""
    data = batches("bn_cnn")
    model = bn_cnn()
    before = copy.deepcopy(model.state_dict())
    key = encrypt(model, data, BUDGET, method=method)
    plain, locked = tmp_path / f"{method}.key", tmp_path / f"{method}-locked.key"
    key.save(plain)
    key.save(locked, passphrase="s3cret")
    damaged = tmp_path / f"{method}-damaged.key"
    damaged.write_bytes(plain.read_bytes()[:-20])
    other = bn_cnn(seed=5)
    for action, target in [
        (lambda: SecretKey.load(locked, passphrase="wrong"), model),
        (lambda: SecretKey.load(damaged), model),
        (lambda: decrypt(other, SecretKey.load(plain)), other),
    ]:
        fingerprint = state_fingerprint(target)
        with pytest.raises(ProtectError) as excinfo:
            action()
        assert_one_line_and_untouched(excinfo, target, fingerprint)
    for path, passphrase in ((plain, None), (locked, "s3cret")):
        loaded = SecretKey.load(path, passphrase=passphrase)
        assert loaded == key and loaded.budget == key.budget and loaded.method == method
    decrypt(model, SecretKey.load(locked, passphrase="s3cret"))
    assert states_equal(model.state_dict(), before)


def check_deterministic(method: str) -> None:
    """The same model, data and budget give the same key and the same encrypted model."""
    data = batches("bn_cnn")
    first, second = bn_cnn(), bn_cnn()
    key_a, key_b = encrypt(first, data, BUDGET, method=method), encrypt(second, data, BUDGET, method=method)
    assert key_a == key_b and key_a.positions == key_b.positions
    assert torch.equal(key_a.original, key_b.original) and torch.equal(key_a.encrypted, key_b.encrypted)
    assert states_equal(first, second)


def check_options(method: str) -> None:
    """The key records the method's options with defaults filled in; an unknown option is refused in one
    line naming the method and its known options, before anything changes."""
    record = METHODS.get(method)
    key = encrypt(bn_cnn(), batches("bn_cnn"), BUDGET, method=method)
    assert key.budget["options"] == {p.name: p.default for p in record.options}
    model = bn_cnn()
    fingerprint = state_fingerprint(model)
    budget = Budget(max_params=4, options={"no_such_option": 1})
    with pytest.raises(ProtectError) as excinfo:
        encrypt(model, batches("bn_cnn"), budget, method=method)
    known = ", ".join(p.name for p in record.options) or "(none)"
    assert str(excinfo.value) == (
        f"unknown param 'no_such_option' for protection method {method!r}; known: {known}"
    )
    assert_one_line_and_untouched(excinfo, model, fingerprint)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("method", METHODS.names())
def test_round_trip_is_bit_exact(method: str, arch: str, dtype: torch.dtype) -> None:
    check_round_trip(method, arch, dtype)


@pytest.mark.parametrize("method", METHODS.names())
def test_key_file_round_trip_and_refusals(method: str, tmp_path: Path) -> None:
    check_key_file(method, tmp_path)


@pytest.mark.parametrize("method", METHODS.names())
def test_identical_inputs_give_identical_keys(method: str) -> None:
    check_deterministic(method)


@pytest.mark.parametrize("method", METHODS.names())
def test_options_are_recorded_and_unknown_ones_refused(method: str) -> None:
    check_options(method)


def test_a_method_registered_for_a_test_is_held_to_the_same_contract(tmp_path: Path) -> None:
    with registered("test_first_scalars") as method:
        assert method in METHODS.names()
        for arch in sorted(ARCHITECTURES):
            for dtype in DTYPES:
                check_round_trip(method, arch, dtype)
        check_key_file(method, tmp_path)
        check_deterministic(method)
        check_options(method)
        down = encrypt(bn_cnn(), batches("bn_cnn"), Budget(max_params=4, options={"sign": "-1"}), method=method)
        assert down.budget["options"] == {"sign": -1} and (down.perturbations < 0).all()
    assert method not in METHODS.names()
