"""AdvParams' step schedules: ``halving`` (the default: a few passes whatever the budget) and ``fixed`` (the
loop before it, ``params_per_step`` scalars per pass), held to the same guarantees as any encryption."""

from __future__ import annotations

import copy

import pytest
import torch
from protect_helpers import batches, bn_cnn, changed_scalars, digits, states_equal

from common.training import accuracy
from protect import Budget, decrypt, encrypt
from protect.methods.advparams import step_size

SCHEDULES = ("halving", "fixed")


@pytest.mark.parametrize(
    ("schedule", "max_params", "params_per_step", "steps"),
    [
        ("halving", 64, 1, [32, 16, 16]),
        ("halving", 256, 1, [128, 64, 64]),
        ("halving", 275, 1, [138, 69, 68]),
        ("halving", 10, 1, [5, 3, 2]),
        ("halving", 3, 1, [2, 1]),
        ("halving", 1, 1, [1]),
        ("halving", 64, 40, [40, 24]),  # params_per_step is the fewest a step moves
        ("fixed", 10, 4, [4, 4, 2]),
        ("fixed", 5, 1, [1, 1, 1, 1, 1]),
    ],
)
def test_step_sizes_add_up_to_the_budget(schedule: str, max_params: int, params_per_step: int, steps: list[int]) -> None:
    budget = Budget(max_params=max_params, params_per_step=params_per_step)
    taken: list[int] = []
    while sum(taken) < max_params:
        taken.append(step_size(schedule, budget, sum(taken)))
    assert taken == steps


@pytest.mark.parametrize("max_params", [1, 2, 7, 24, 100])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_the_budget_is_spent_never_exceeded_and_decryption_is_bit_exact(schedule: str, max_params: int) -> None:
    data = batches("bn_cnn")
    model = bn_cnn()
    before = copy.deepcopy(model.state_dict())
    seen: list[int] = []
    budget = Budget(max_params=max_params, params_per_step=3, target_accuracy=0.0, options={"schedule": schedule})
    key = encrypt(model, data, budget, progress=lambda done, _: seen.append(done))
    assert key.num_changed == max_params and key.stats["stop_reason"] == "max_params"
    assert changed_scalars(before, model) == set(key.positions)
    assert seen == sorted(seen) and seen[-1] == max_params and all(s <= max_params for s in seen)
    assert key.stats["steps"] == len(seen) and key.stats["forward_backward_passes"] == len(seen) * len(data)
    assert key.budget["options"]["schedule"] == schedule
    decrypt(model, key)
    assert states_equal(model.state_dict(), before)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_the_same_inputs_give_the_same_key(schedule: str) -> None:
    budget = Budget(max_params=24, target_accuracy=0.0, options={"schedule": schedule})
    first, second = bn_cnn(), bn_cnn()
    key_a = encrypt(first, batches("bn_cnn"), budget)
    key_b = encrypt(second, batches("bn_cnn"), budget)
    assert key_a == key_b and key_a.positions == key_b.positions and states_equal(first, second)


def test_halving_locks_as_well_as_the_fixed_loop_in_fewer_passes() -> None:
    """On the trained digits CNN both stop at the target (chance), the halving schedule in three passes or
    fewer, the one-scalar loop in one pass per scalar; held-out accuracy ends within a few points."""
    d = digits()
    ends = {}
    for schedule in SCHEDULES:
        model = d.model()
        key = encrypt(model, d.owner, Budget(max_params=64, options={"schedule": schedule}))
        stats = key.stats
        assert stats["stop_reason"] == "target_reached"
        assert stats["owner_accuracy_after"] <= stats["target_accuracy"] == pytest.approx(0.1)
        assert stats["forward_backward_passes"] == stats["steps"] * len(d.owner)
        ends[schedule] = (stats["steps"], key.num_changed, accuracy(model, d.test))
    (halving_steps, _, halving_acc), (fixed_steps, fixed_changed, fixed_acc) = ends["halving"], ends["fixed"]
    assert halving_steps <= 3 and fixed_steps == fixed_changed + 1  # the last pass only finds the target met
    # measured: 10.6 % (fixed, 9 scalars in 10 passes) and 12.1 % (halving, 32 scalars in 2 passes)
    assert halving_acc <= fixed_acc + 0.03
    assert torch.tensor([halving_acc, fixed_acc]).max() < 0.15
