"""statistical_reset on a small trained MLP for sklearn's digits, with weights planted at their tensor's clamp bounds.

The planted pattern is what a clamping defence (NNSplitter, AdvParams with its range kept) leaves: a few
scalars per tensor moved to exactly the tensor's min or max (or next to it), so the bounds hold a pile of
values where a trained tensor holds one. The planted positions are the key the attack is scored against.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from attacks import AttackerBudget, AttackerData, get_attack, tune
from attacks.builtin.statistical_reset import extreme_piles
from attacks.weights import robust_scale, weight_params
from common.training import accuracy, train

PLANTED_PER_TENSOR = 8
ONLY_RESET = {"finetune_after": False}


@dataclass(frozen=True)
class Digits:
    clean: nn.Module
    data: AttackerData


@pytest.fixture(scope="module")
def digits() -> Digits:
    """An MLP trained on 1000 digits, and a 300/200 attacker split."""
    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.tensor(bunch.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    clean = train(model, TensorDataset(x[:1000], y[:1000]), epochs=20, lr=0.05, seed=0)
    data = AttackerData(TensorDataset(x[1000:1300], y[1000:1300]), TensorDataset(x[1300:1500], y[1300:1500]), 10)
    return Digits(clean, data)


def plant(model: nn.Module, where: str = "bounds", seed: int = 0) -> tuple[nn.Module, set, set]:
    """A copy of ``model`` with PLANTED_PER_TENSOR random scalars per tensor moved: half to the tensor's max and
    half to its min (``bounds``); all to 0.4 % to 0.75 % of its range below its max (``near``: a wider band
    takes them, and the side must be one where the bulk is thin, as the max side is here: near the min of the
    first layer the Laplace fit expects about 3 values in a 1 % band, so 5 are no pile); or half up, half down
    to distinct values 20 robust sigmas and more from the median (``far``). Returns the copy, the planted
    positions, and the original extremes the planted values share a band with (never planted over)."""
    planted = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    key: set[tuple[str, int]] = set()
    extremes: set[tuple[str, int]] = set()
    with torch.no_grad():
        for name, w in weight_params(planted).items():
            flat = w.view(-1)
            low, high = flat.min().clone(), flat.max().clone()
            bound_positions = {True: int(flat.argmax()), False: int(flat.argmin())}
            median, sigma = robust_scale(flat)
            order = [i for i in torch.randperm(flat.numel(), generator=gen).tolist()
                     if i not in bound_positions.values()]
            for k, i in enumerate(order[:PLANTED_PER_TENSOR]):
                up = k % 2 == 0 or where == "near"
                if where == "far":
                    flat[i] = median + (1 if up else -1) * (20 + k) * sigma
                else:
                    inside = (0.004 + 0.0005 * k) * (high - low) if where == "near" else 0.0
                    flat[i] = high - inside if up else low + inside
                    extremes.add((name, bound_positions[up]))
                key.add((name, i))
    return planted, key, extremes


def same_state(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def positions(changed: dict[str, torch.Tensor] | None) -> set[tuple[str, int]]:
    assert changed is not None
    return {(name, int(i)) for name, idx in changed.items() for i in idx}


@pytest.mark.parametrize(("where", "params"), [
    ("bounds", {}),  # values clamped to the bounds, the defaults' band
    ("bounds", {"flags": "both"}),
    ("bounds", {"reset": "zero"}),
    ("near", {"band": 0.01}),  # values next to the bounds, a band wide enough for them
    ("far", {"flags": "outliers"}),  # no clamping: distinct values far beyond the bulk
])
def test_resets_exactly_the_planted_weights(digits: Digits, where: str, params: dict) -> None:
    """Recall 1; the only other positions reset are the tensors' own extremes, which the planted values now share
    a band with (a pile cannot tell its first member from the others): precision at least 8/10 per tensor."""
    planted, key, extremes = plant(digits.clean, where)
    result = get_attack("statistical_reset").run(planted, digits.data, {**params, **ONLY_RESET},
                                                 AttackerBudget(0.3, epochs=1), seed=0)
    found = positions(result.changed)
    assert key <= found
    assert found - key <= extremes
    assert len(found & key) / len(found) >= PLANTED_PER_TENSOR / (PLANTED_PER_TENSOR + 2)
    assert result.info["resets"] == len(found)
    before, after = weight_params(planted), weight_params(result.model)
    for name, w in after.items():  # the reset positions, and only those, took the reset value
        moved = {(name, int(i)) for i in torch.nonzero((w != before[name]).flatten()).flatten()}
        assert moved <= {p for p in found if p[0] == name}
        target = 0.0 if params.get("reset") == "zero" else float(robust_scale(before[name])[0])
        assert all(float(w.detach().view(-1)[i]) == pytest.approx(target) for n, i in found if n == name)
    assert result.info["compute_epochs"] == 0


def test_too_narrow_a_band_misses_values_next_to_the_bounds(digits: Digits) -> None:
    planted, _, _ = plant(digits.clean, "near")
    result = get_attack("statistical_reset").run(planted, digits.data, ONLY_RESET, AttackerBudget(0.3), seed=0)
    assert result.changed == {}


def test_leaves_a_clean_model_untouched_at_the_defaults(digits: Digits) -> None:
    result = get_attack("statistical_reset").run(digits.clean, digits.data, ONLY_RESET, AttackerBudget(0.3), seed=0)
    assert result.changed == {}
    assert same_state(digits.clean, result.model)


def test_a_pile_is_counted_against_what_the_bulk_predicts() -> None:
    """A wide band at a normal tensor's max holds a few values, as the bulk predicts: no pile. Ten values at the
    max itself are one, and exactly those (with the max) are flagged, even in the narrowest band."""
    w = torch.randn(20_000, generator=torch.Generator().manual_seed(0))
    near_max = int((w >= w.max() - 0.05 * (w.max() - w.min())).sum())
    assert near_max >= 2  # enough values to pass min_pile
    assert not extreme_piles(w, 0.05, min_pile=2, significance=1e-3).any()
    piled = w.clone()
    piled[:10] = w.max()
    flagged = extreme_piles(piled, 1e-6, min_pile=2, significance=1e-3)
    assert torch.equal(flagged.nonzero().flatten(), torch.cat([torch.arange(10), w.argmax().view(1)]))


def test_fine_tuning_stays_within_the_cap_and_recovers_accuracy(digits: Digits) -> None:
    planted, _, _ = plant(digits.clean)
    params = {"patience": 100, "optimizer": "sgd", "lr": 0.05}
    result = get_attack("statistical_reset").run(planted, digits.data, params, AttackerBudget(0.3, epochs=3), seed=0)
    assert result.info["compute_epochs"] == pytest.approx(3.0)  # the reset is free: fine-tuning gets the whole cap
    assert result.info["val_accuracy"] >= result.info["val_reset"] >= accuracy(planted, digits.data.val)
    tuned = tune(get_attack("statistical_reset"), planted, digits.data, AttackerBudget(0.3, trials=3, epochs=3), seed=0)
    assert tuned.compute_epochs <= 3


def test_same_seed_same_result(digits: Digits) -> None:
    planted, _, _ = plant(digits.clean)
    attack, budget = get_attack("statistical_reset"), AttackerBudget(0.3, epochs=2)
    first, second, other = (attack.run(planted, digits.data, {}, budget, seed=s) for s in (7, 7, 8))
    assert positions(first.changed) == positions(second.changed) == positions(other.changed)
    assert same_state(first.model, second.model)
    assert not same_state(first.model, other.model)  # the seed drives fine-tuning
