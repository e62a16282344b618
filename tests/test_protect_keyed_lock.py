"""The keyed lock: each layer's most important weights re-drawn from the layer's own distribution, keyed by the seed."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from protect_helpers import batches, bn_cnn, digits, with_bn_stats
from scipy.stats import ks_2samp

from common.training import accuracy
from protect import Budget, ProtectError, decrypt, encrypt
from protect.candidates import Candidates

UNCAPPED = 10**9  # max_params far above any rho here: rho alone decides


def per_layer(key: object) -> dict[str, list[int]]:
    """The key's flat positions, by parameter."""
    out: dict[str, list[int]] = {}
    for name, index in key.positions:  # type: ignore[attr-defined]
        out.setdefault(name, []).append(index)
    return out


@pytest.mark.parametrize("rho", [0.0, 0.01, 0.1])
def test_rho_decides_each_layers_count_and_magnitude_picks_the_largest_weights(rho: float) -> None:
    model = bn_cnn()
    before = {n: p.detach().clone() for n, p in Candidates(model).params.items()}
    key = encrypt(model, batches("bn_cnn"), Budget(max_params=UNCAPPED, options={"rho": rho}), method="keyed_lock")
    positions = per_layer(key)
    assert set(positions) == set(before) and key.stats["stop_reason"] == "rho"
    for name, weights in before.items():
        wanted = max(1, math.ceil(rho * weights.numel()))
        assert len(positions[name]) == wanted  # every chosen weight changed
        top = weights.reshape(-1).abs().sort(descending=True).values
        assert weights.reshape(-1)[positions[name]].abs().min() == top[wanted - 1]


def test_the_budget_caps_rho_one_weight_per_layer_first_then_in_proportion() -> None:
    model = bn_cnn()
    sizes = {n: p.numel() for n, p in Candidates(model).params.items()}  # 72, 1152, 2560
    key = encrypt(model, batches("bn_cnn"), Budget(max_params=20, options={"rho": 0.1}), method="keyed_lock")
    assert key.num_changed == 20 and key.stats["stop_reason"] == "max_params"
    counts = {name: len(index) for name, index in per_layer(key).items()}
    assert set(counts) == set(sizes) and min(counts.values()) >= 1
    assert counts["0.weight"] < counts["4.weight"] < counts["8.weight"]  # in proportion to the layers' shares


def test_new_values_follow_the_layers_distribution_and_are_not_copies() -> None:
    d = digits()
    model = d.model()
    before = {n: p.detach().clone().reshape(-1) for n, p in Candidates(model).params.items()}
    key = encrypt(model, d.owner, Budget(max_params=UNCAPPED, options={"rho": 0.1}), method="keyed_lock")
    for name, index in per_layer(key).items():
        old = before[name]
        new = model.state_dict()[name].reshape(-1)[index]
        assert old.min() <= new.min() and new.max() <= old.max()
        assert not torch.isin(new, old).any()  # interpolated draws: no value repeats one of the layer's own
        if len(index) >= 100:  # 0.1 x 1152 and 0.1 x 2560 weights: enough for a two-sample test
            assert ks_2samp(new.numpy(), old.numpy()).pvalue > 0.01  # drawn from the layer's distribution
            assert ks_2samp(old[index].numpy(), old.numpy()).pvalue < 1e-6  # the replaced ones were not


def test_collapses_the_digits_cnn_and_decrypts_exactly() -> None:
    d = digits()
    model = d.model()
    clean = accuracy(model, d.test)
    key = encrypt(model, d.owner, Budget(max_params=UNCAPPED, options={"rho": 0.1}), method="keyed_lock")
    # measured: 97.8 % -> 43 % on the held-out digits with 10 % of each layer re-drawn (LeNet-5: 10.0 %)
    assert accuracy(model, d.test) <= 0.6
    decrypt(model, key)
    assert accuracy(model, d.test) == clean


def test_the_seed_keys_the_draws_not_the_positions() -> None:
    data = batches("bn_cnn")
    a, b, c = (encrypt(bn_cnn(), data, Budget(seed=s, options={"rho": 0.05}), method="keyed_lock") for s in (3, 3, 4))
    assert a == b and torch.equal(a.encrypted, b.encrypted)
    assert a.positions == c.positions and not torch.equal(a.encrypted, c.encrypted)
    assert (a.encrypted != c.encrypted).float().mean() > 0.9


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_every_chosen_weight_changes_in_low_precision(dtype: torch.dtype) -> None:
    """bfloat16 keeps 8 bits of mantissa: many draws round to the weight they replace and are drawn again."""
    data = batches("bn_cnn")
    model = with_bn_stats(bn_cnn().to(dtype), data)
    before = copy.deepcopy(model.state_dict())
    key = encrypt(model, data, Budget(max_params=UNCAPPED, options={"rho": 0.1}), method="keyed_lock")
    assert key.num_changed == sum(math.ceil(0.1 * p.numel()) for p in Candidates(model).params.values())
    assert (key.encrypted != key.original).all()
    decrypt(model, key)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_layer_of_equal_weights_is_left_alone_and_a_model_of_them_refused() -> None:
    model = bn_cnn()
    with torch.no_grad():
        model[4].weight.fill_(0.25)
    key = encrypt(model, batches("bn_cnn"), Budget(options={"rho": 0.0}), method="keyed_lock")
    assert set(per_layer(key)) == {"0.weight", "8.weight"}
    with torch.no_grad():
        for layer in (model[0], model[8]):
            layer.weight.fill_(0.25)
    with pytest.raises(ProtectError, match="no_layer_with_two_values"):
        encrypt(model, batches("bn_cnn"), Budget(), method="keyed_lock")
