"""What the methods do: AdvParams collapses accuracy with few scalars; random is the seeded control."""

from __future__ import annotations

import copy

import pytest
import torch
from protect_helpers import (
    ARCHITECTURES,
    assert_one_line_and_untouched,
    batches,
    changed_scalars,
    digits,
    states_equal,
)

from common.training import accuracy
from protect import METHODS, Budget, ProtectError, decrypt, encrypt, state_fingerprint


def test_both_methods_are_registered_with_their_options() -> None:
    assert {"advparams", "random"} <= set(METHODS.names())
    advparams = METHODS.get("advparams")
    assert {p.name: (p.default, p.choices) for p in advparams.options} == {
        "rank": ("gain", ("gain", "gradient")),
        "loss": ("ce", ("ce", "margin")),
        "schedule": ("fixed", ("adaptive", "fixed")),
        "gradient_samples": (0, None),
    }
    assert all(p.help for p in advparams.options) and METHODS.get("random").options == ()
    assert all(method.summary for _, method in METHODS.items())


@pytest.mark.parametrize("rank", ["gain", "gradient"])
def test_advparams_collapses_a_trained_digits_cnn(rank: str) -> None:
    d = digits()
    model = d.model()
    clean_test = accuracy(model, d.test)
    assert clean_test > 0.9  # the fixture really is a trained model
    before = copy.deepcopy(model.state_dict())
    budget = Budget(max_params=64, eps=1.0, options={"rank": rank})
    key = encrypt(model, d.owner, budget)

    stats = key.stats
    assert stats["owner_accuracy_before"] > 0.9
    assert stats["owner_accuracy_after"] <= stats["target_accuracy"] == pytest.approx(0.1)
    assert stats["stop_reason"] == "target_reached"
    changed = changed_scalars(before, model)
    assert len(changed) == key.num_changed == stats["num_changed"] <= budget.max_params
    assert changed == set(key.positions)
    assert stats["forward_backward_passes"] == stats["steps"] * len(d.owner)
    # measured: 97.8% -> about 10% on the held-out digits with 7 (gain) or 11 (gradient) scalars
    assert clean_test - accuracy(model, d.test) >= 0.4
    for name, value in model.state_dict().items():  # stay_in_range: no tensor's range moves
        assert torch.equal(value.min(), before[name].min()) and torch.equal(value.max(), before[name].max())
    decrypt(model, key)
    assert accuracy(model, d.test) == clean_test


def test_advparams_beats_random_on_the_same_budget() -> None:
    d = digits()
    adv, rnd = d.model(), d.model()
    key = encrypt(adv, d.owner, Budget(max_params=16, target_accuracy=0.0))
    encrypt(rnd, d.owner, Budget(max_params=key.num_changed), method="random")
    assert accuracy(rnd, d.test) - accuracy(adv, d.test) >= 0.4


def test_advparams_respects_params_per_step_layers_and_reports_progress() -> None:
    data = batches("bn_cnn")
    model = ARCHITECTURES["bn_cnn"]()
    seen: list[tuple[int, int]] = []
    budget = Budget(
        max_params=10, params_per_step=4, target_accuracy=0.0, layers=["4.*", "8.weight"], options={"schedule": "fixed"}
    )
    key = encrypt(model, data, budget, progress=lambda done, total: seen.append((done, total)))
    assert key.num_changed == 10 and key.stats["steps"] == 3  # 4 + 4 + 2
    assert {name for name, _ in key.positions} <= {"4.weight", "8.weight"}
    assert seen == [(4, 10), (8, 10), (10, 10)]
    assert key.stats["candidate_params"] == model[4].weight.numel() + model[8].weight.numel()


def test_without_stay_in_range_moves_are_exactly_eps() -> None:
    data = batches("mlp")
    model = ARCHITECTURES["mlp"]()
    key = encrypt(model, data, Budget(max_params=12, eps=0.25, stay_in_range=False, target_accuracy=0.0))
    assert torch.allclose(
        key.perturbations.abs(), torch.full((key.num_changed,), 0.25, dtype=torch.float64), atol=1e-6
    )


def test_stay_in_range_clamps_large_moves_and_never_records_a_zero_move() -> None:
    data = batches("mlp")
    model = ARCHITECTURES["mlp"]()
    ranges = {n: (p.min().item(), p.max().item()) for n, p in model.named_parameters()}
    key = encrypt(model, data, Budget(max_params=40, eps=100.0, target_accuracy=0.0))
    assert (key.perturbations != 0).all()
    for (name, _), value in zip(key.positions, key.encrypted.tolist(), strict=True):
        low, high = ranges[name]
        assert value in (low, high)  # a move of 100 always clamps to a bound of the original range


def test_random_changes_exactly_its_key_and_is_seeded() -> None:
    data = batches("bn_cnn")
    models = [ARCHITECTURES["bn_cnn"]() for _ in range(3)]
    before = copy.deepcopy(models[0].state_dict())
    keys = [
        encrypt(m, data, Budget(max_params=50, seed=s), method="random")
        for m, s in zip(models, (7, 7, 8), strict=True)
    ]
    assert changed_scalars(before, models[0]) == set(keys[0].positions)
    assert keys[0].num_changed == 50 and keys[0].stats["stop_reason"] == "max_params"
    assert keys[0] == keys[1] and keys[0].fingerprint == keys[1].fingerprint
    assert states_equal(models[0], models[1])
    assert set(keys[0].positions) != set(keys[2].positions)


@pytest.mark.parametrize("method", ["advparams", "random"])
def test_a_budget_larger_than_the_model_stops_when_nothing_can_move(method: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(10, 4, bias=False)  # 40 candidate scalars
    before = copy.deepcopy(model.state_dict())
    budget = Budget(max_params=64, params_per_step=100, target_accuracy=0.0, stay_in_range=False)
    key = encrypt(model, batches("mlp"), budget, method=method)
    assert changed_scalars(before, model) == set(key.positions)
    assert key.num_changed <= 40
    if method == "random":  # every scalar can move without the range rule: all 40 are drawn
        assert key.num_changed == 40 and key.stats["stop_reason"] == "no_movable_scalar"
    else:
        assert key.stats["stop_reason"] in ("no_movable_scalar", "target_reached")


def test_margin_loss_drives_accuracy_below_chance() -> None:
    """Cross-entropy ascent stalls near one predicted class (about chance); the margin loss keeps
    flipping the samples still classified right, so accuracy falls well below chance. The reference loop
    only: the adaptive schedule ended at 0.11 here in one full-suite run (and at 0.03 alone), one of the
    shortfalls that keep it from being the default."""
    d = digits()
    model = d.model()
    budget = Budget(max_params=64, eps=1.0, options={"loss": "margin", "schedule": "fixed"}, target_accuracy=0.03)
    key = encrypt(model, d.owner, budget)
    assert key.stats["owner_accuracy_after"] <= 0.03  # the loop stops at the target
    assert accuracy(model, d.test) < 0.1  # below chance on held-out digits too
    assert key.budget["options"] == {"rank": "gain", "loss": "margin", "schedule": "fixed", "gradient_samples": 0}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"loss": "hinge"}, "protection method 'advparams': param 'loss' = 'hinge' is not one of 'ce', 'margin'"),
        ({"rank": 1}, "protection method 'advparams': param 'rank' = 1 is not one of 'gain', 'gradient'"),
        ({"rnk": "gain"}, "unknown param 'rnk' for protection method 'advparams'; known: rank, loss, schedule, gradient_samples"),
    ],
)
def test_a_bad_option_is_refused_naming_the_method(options: dict, message: str) -> None:
    model = ARCHITECTURES["mlp"]()
    fingerprint = state_fingerprint(model)
    with pytest.raises(ProtectError) as excinfo:
        encrypt(model, batches("mlp"), Budget(options=options))
    assert str(excinfo.value) == message
    assert_one_line_and_untouched(excinfo, model, fingerprint)
