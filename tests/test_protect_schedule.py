"""AdvParams' step schedules: ``adaptive`` (several scalars per pass, fewer as the target nears) and
``fixed`` (the reference loop, ``params_per_step`` scalars per pass), and the gradient over a subsample of the
owner's samples, held to the guarantees every key gives: the key file format, bit-exact decryption, the budget
never exceeded, the stop at the target accuracy, the same key from the same inputs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from protect_helpers import batches, bn_cnn, changed_scalars, digits, states_equal

from protect import Budget, SecretKey, decrypt, encrypt
from protect.methods.advparams import FIRST_SHARE, FOCUS_FROM, SMALLEST_SHARE, best_unit, step_size
from protect.owner_data import owner_pass

SCHEDULES = ("adaptive", "fixed")
#: (schedule, gradient samples): the fast selection, its gradient over every owner sample, the reference loop (default).
SELECTIONS = [("adaptive", 256), ("adaptive", 0), ("fixed", 0)]


@pytest.mark.parametrize(
    ("changed", "accuracy", "last", "expected"),
    [
        (0, 0.9, None, 64 // FIRST_SHARE),  # the first step: a share of the budget
        (16, 0.3, (16, 0.9), 11),  # 0.6 lost over 16 scalars, 0.2 to go to the 0.1 target: twice 5.3, rounded up
        (16, 0.12, (16, 0.9), 64 // SMALLEST_SHARE),  # near the target: the fewest a step moves
        (16, 0.8, (16, 0.9), 32),  # little lost: at most twice the step before
        (16, 0.95, (16, 0.9), 16),  # a step that lost nothing: the same size again
        (60, 0.9, (16, 0.95), 4),  # never more than the budget leaves
    ],
)
def test_adaptive_steps_follow_the_accuracy_lost_per_scalar(
    changed: int, accuracy: float, last: tuple[int, float] | None, expected: int
) -> None:
    assert step_size("adaptive", Budget(max_params=64), changed, 0.1, accuracy, last) == expected


def test_a_budget_within_adaptive_s_bound_on_passes_is_spent_one_scalar_a_pass() -> None:
    """At most SMALLEST_SHARE scalars: adaptive is the reference loop (as many passes as its bound allows)."""
    small, large = Budget(max_params=SMALLEST_SHARE), Budget(max_params=SMALLEST_SHARE + 1)
    assert [step_size("adaptive", small, c, 0.1, 0.9, None if c == 0 else (1, 0.95)) for c in range(SMALLEST_SHARE)] \
        == [1] * SMALLEST_SHARE
    assert step_size("adaptive", large, 0, 0.1, 0.9, None) == -(-(SMALLEST_SHARE + 1) // FIRST_SHARE) > 1


def test_fixed_steps_are_params_per_step_within_the_budget() -> None:
    budget = Budget(max_params=10, params_per_step=4)
    assert [step_size("fixed", budget, c, 0.1, 0.9, (4, 0.95)) for c in (0, 4, 8)] == [4, 4, 2]


def test_best_unit_keeps_the_scores_of_the_input_unit_that_scores_highest_together() -> None:
    scores = torch.tensor([[3.0, 0.0, 2.0], [0.0, 0.0, 2.0]])  # one top scalar, or the best input unit (column)
    assert best_unit(scores.reshape(-1), torch.Size([2, 3])).tolist() == [0.0, 0.0, 2.0, 0.0, 0.0, 2.0]
    conv = torch.zeros(2, 3, 2, 2)  # (out, in, kh, kw): an input unit is a channel, all its kernels' taps
    conv[0, 1] = 1.0
    conv[1, 2, 0, 0] = 3.0
    assert best_unit(conv.reshape(-1), conv.shape).equal(torch.where(conv == 1.0, conv, 0.0).reshape(-1))
    assert best_unit(scores.reshape(-1), torch.Size([6])).equal(scores.reshape(-1))  # a bias has no units


def test_every_large_adaptive_step_moves_one_input_unit_of_each_weight_tensor() -> None:
    """Each step's moves, read off the model between steps: with max_params / SMALLEST_SHARE = FOCUS_FROM every
    adaptive step is a large one, and each changes one input unit (at most) of every weight tensor."""
    model = bn_cnn()
    weights = {n: p for n, p in model.named_parameters() if p.dim() > 1}
    last = {n: p.detach().clone() for n, p in weights.items()}
    units: list[int] = []  # per step: the most input units it changed in one weight tensor

    def moved(done: int, total: int) -> None:
        units.append(max(len(set((p.detach() != last[n]).nonzero()[:, 1].tolist())) for n, p in weights.items()))
        for n, p in weights.items():
            last[n].copy_(p.detach())

    budget = Budget(max_params=SMALLEST_SHARE * FOCUS_FROM, target_accuracy=0.0, options={"schedule": "adaptive"})
    key = encrypt(model, batches("bn_cnn"), budget, progress=moved)
    assert key.num_changed == budget.max_params and 1 < len(units) <= SMALLEST_SHARE
    assert units == [1] * len(units)


def test_the_gradient_over_a_head_of_the_samples_is_that_head_s_gradient_and_accuracy_counts_all() -> None:
    data = batches("bn_cnn", n=96, batch_size=32)
    model = bn_cnn().eval()
    params = [model[0].weight, model[8].weight]
    full = owner_pass(model, data, params)
    head = owner_pass(model, data, params, gradient_samples=40)  # one batch and 8 samples of the next
    alone = owner_pass(model, [data[0], (data[1][0][:8], data[1][1][:8])], params)
    assert head.accuracy == full.accuracy and head.batches == 2 and full.batches == 3
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(head.grads, alone.grads, strict=True))
    assert not torch.allclose(head.grads[1], full.grads[1])


@pytest.mark.parametrize("max_params", [1, 2, 7, 24, 100])
@pytest.mark.parametrize(("schedule", "gradient_samples"), SELECTIONS)
def test_the_budget_is_spent_never_exceeded_and_decryption_is_bit_exact(
    schedule: str, gradient_samples: int, max_params: int
) -> None:
    data = batches("bn_cnn")
    model = bn_cnn()
    before = copy.deepcopy(model.state_dict())
    seen: list[int] = []
    options = {"schedule": schedule, "gradient_samples": gradient_samples}
    budget = Budget(max_params=max_params, params_per_step=3, target_accuracy=0.0, options=options)
    key = encrypt(model, data, budget, progress=lambda done, _: seen.append(done))
    assert key.num_changed == max_params and key.stats["stop_reason"] == "max_params"
    assert changed_scalars(before, model) == set(key.positions)
    assert seen == sorted(seen) and seen[-1] == max_params
    assert key.stats["steps"] == len(seen) and key.budget["options"] == {"rank": "gain", "loss": "ce", **options}
    decrypt(model, key)
    assert states_equal(model.state_dict(), before)


@pytest.mark.parametrize(("schedule", "gradient_samples"), SELECTIONS)
def test_the_key_file_round_trips_and_decrypts_bit_for_bit(
    schedule: str, gradient_samples: int, tmp_path: Path
) -> None:
    d = digits()
    model = d.model()
    before = copy.deepcopy(model.state_dict())
    options = {"schedule": schedule, "gradient_samples": gradient_samples}
    key = encrypt(model, d.owner, Budget(max_params=32, options=options))
    key.save(tmp_path / "k.key")
    loaded = SecretKey.load(tmp_path / "k.key")
    assert loaded == key and loaded.fingerprint == key.fingerprint and loaded.budget == key.budget
    decrypt(model, loaded)
    assert states_equal(model.state_dict(), before)


@pytest.mark.parametrize(("schedule", "gradient_samples"), SELECTIONS)
def test_the_same_inputs_give_the_same_key(schedule: str, gradient_samples: int) -> None:
    options = {"schedule": schedule, "gradient_samples": gradient_samples}
    budget = Budget(max_params=24, target_accuracy=0.0, seed=3, options=options)
    first, second = bn_cnn(), bn_cnn()
    key_a = encrypt(first, batches("bn_cnn"), budget)
    key_b = encrypt(second, batches("bn_cnn"), budget)
    assert key_a == key_b and key_a.positions == key_b.positions and states_equal(first, second)


@pytest.mark.parametrize(("schedule", "gradient_samples"), SELECTIONS)
def test_encryption_stops_at_the_first_pass_that_finds_the_target(schedule: str, gradient_samples: int) -> None:
    """On the trained digits CNN every selection stops at chance on all the owner's samples, the pass that finds
    it moving nothing; the adaptive schedule in a few passes, the reference loop in one per scalar."""
    d = digits()
    model = d.model()
    moves: list[int] = []
    options = {"schedule": schedule, "gradient_samples": gradient_samples}
    key = encrypt(model, d.owner, Budget(max_params=64, options=options), progress=lambda done, _: moves.append(done))
    stats = key.stats
    assert stats["stop_reason"] == "target_reached" and key.num_changed < 64
    assert stats["owner_accuracy_after"] <= stats["target_accuracy"] == pytest.approx(0.1)
    assert stats["steps"] == len(moves) + 1 and moves[-1] == key.num_changed
    assert stats["steps"] <= 6 if schedule == "adaptive" else stats["steps"] == key.num_changed + 1
