"""Every registered attack on a small CNN for sklearn's digits, "encrypted" AdvParams-style here.

The encryption is the test's own crude stand-in for AdvParams: a few rounds move the conv/linear
weight scalars with the largest loss gradient to their tensor's max or min (the sign of the gradient),
so accuracy collapses while every value stays inside its tensor's range. The moved positions are the
key that the adaptive attacks are scored against.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from attacks import AttackerBudget, AttackerData, attack_names, get_attack, tune
from attacks.weights import weight_params
from common.training import accuracy, count_params, train

KEY_SIZE = 20
KEY_ROUNDS = 4  # the gradient is recomputed between rounds, as the moved weights change it


@dataclass(frozen=True)
class Digits:
    clean: nn.Module
    encrypted: nn.Module
    key: dict[str, set[int]]
    data: AttackerData
    test: TensorDataset


def digits_cnn(widths: tuple[int, int, int] = (8, 16, 32)) -> nn.Sequential:
    c1, c2, hidden = widths
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1),
        nn.BatchNorm2d(c1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 4 * 4, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )


def encrypt(model: nn.Module, data: TensorDataset) -> tuple[nn.Module, dict[str, set[int]]]:
    """Move the KEY_SIZE highest-|grad| weights to their tensor's max/min, in KEY_ROUNDS rounds."""
    encrypted = copy.deepcopy(model).eval()
    weights = weight_params(encrypted)
    key: dict[str, set[int]] = {name: set() for name in weights}
    x, y = data.tensors
    for _ in range(KEY_ROUNDS):
        encrypted.zero_grad()
        nn.functional.cross_entropy(encrypted(x), y).backward()
        candidates = sorted(
            (
                (abs(float(g)), name, int(i), float(g))
                for name, w in weights.items()
                for i, g in enumerate(w.grad.flatten())
                if int(i) not in key[name]
            ),
            reverse=True,
        )[: KEY_SIZE // KEY_ROUNDS]
        with torch.no_grad():
            for _, name, i, g in candidates:
                w = weights[name]
                w.view(-1)[i] = w.max() if g > 0 else w.min()
                key[name].add(i)
    encrypted.zero_grad(set_to_none=True)
    return encrypted, key


@pytest.fixture(scope="session")
def digits() -> Digits:
    """A CNN trained on 1000 digits, its encrypted copy, and a 300/200 attacker split."""
    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.tensor(bunch.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    owner = TensorDataset(x[:1000], y[:1000])
    torch.manual_seed(0)
    clean = train(digits_cnn(), owner, epochs=15, lr=0.05, seed=0)
    encrypted, key = encrypt(clean, owner)
    data = AttackerData(
        TensorDataset(x[1000:1300], y[1000:1300]), TensorDataset(x[1300:1500], y[1300:1500]), 10
    )
    return Digits(clean, encrypted, key, data, TensorDataset(x[1500:], y[1500:]))


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def recall_precision(changed: dict[str, torch.Tensor], key: dict[str, set[int]]) -> tuple[float, float]:
    found = {(name, int(i)) for name, idx in changed.items() for i in idx}
    secret = {(name, i) for name, positions in key.items() for i in positions}
    hits = len(found & secret)
    return hits / len(secret), hits / max(len(found), 1)


def test_encryption_collapses_accuracy(digits: Digits) -> None:
    assert accuracy(digits.clean, digits.test) > 0.9
    assert accuracy(digits.encrypted, digits.test) < 0.3
    assert sum(map(len, digits.key.values())) == KEY_SIZE


@pytest.mark.parametrize("name", attack_names())
def test_attack_returns_a_changed_model_of_the_same_interface(name: str, digits: Digits) -> None:
    """The input is never modified (tests/test_attacks_contract.py checks that for every attack)."""
    attack = get_attack(name)
    budget = AttackerBudget(0.3, trials=2, epochs=1)
    before = state(digits.encrypted)
    result = attack.run(digits.encrypted, digits.data, {}, budget, seed=0)

    x = digits.data.val.tensors[0]
    with torch.no_grad():
        assert result.model.eval()(x).shape == (len(x), 10)
    assert not same_state(state(result.model), before), f"{name} left the weights as they were"
    if result.changed is not None:
        weights = weight_params(result.model)
        for param, idx in result.changed.items():
            assert idx.dtype == torch.long and idx.numel() > 0
            assert int(idx.max()) < weights[param].numel()


@pytest.mark.parametrize("name", attack_names())
def test_defaults_pass_check_params(name: str) -> None:
    attack = get_attack(name)
    defaults = {p.name: p.default for p in attack.params}
    assert attack.check_params(defaults) == defaults
    assert attack.check_params({}) == defaults


@pytest.mark.parametrize("name", attack_names())
def test_tuning_two_trials(name: str, digits: Digits) -> None:
    budget = AttackerBudget(0.3, trials=2, epochs=1)
    tuned = tune(get_attack(name), digits.encrypted, digits.data, budget, seed=1)
    expected = 2 if get_attack(name).tunable() else 1
    assert len(tuned.trials) == expected
    assert tuned.val_accuracy_before == accuracy(digits.encrypted, digits.data.val)
    assert tuned.best_value == max(t.value for t in tuned.trials if t.value is not None)
    # the best params re-run with their trial's seed give the model the trial scored
    assert tuned.result.info["val_accuracy"] == pytest.approx(tuned.best_value)


def test_same_seed_same_model(digits: Digits) -> None:
    budget = AttackerBudget(0.3, epochs=2)
    for name in ("finetune", "scratch", "prune", "magnitude_prune", "adaptive", "key_inversion"):
        attack = get_attack(name)
        runs = [attack.run(digits.encrypted, digits.data, {}, budget, seed=7).model for _ in range(2)]
        assert same_state(state(runs[0]), state(runs[1])), name


@pytest.mark.parametrize("global_pruning", [False, True])
def test_prune_removes_the_asked_share_of_channels(global_pruning: bool, digits: Digits) -> None:
    budget = AttackerBudget(0.3, epochs=0)
    params = {"ratio": 0.5, "global_pruning": global_pruning}
    result = get_attack("prune").run(digits.encrypted, digits.data, params, budget)
    info = result.info
    assert info["channels_before"] == 8 + 16 + 32
    assert info["channels_after"] == (8 + 16 + 32) // 2
    if not global_pruning:  # per layer, every layer loses half of its channels
        convs = [m for m in result.model.modules() if isinstance(m, nn.Conv2d)]
        assert [c.out_channels for c in convs] == [4, 8]
        halved = count_params(digits_cnn((4, 8, 16)))
        assert info["params_after"] == halved == count_params(result.model)
    assert info["params_before"] == count_params(digits.encrypted)
    assert info["params_after"] < info["params_before"]
    assert result.model[-1].out_features == 10  # the classifier is never pruned


def test_adaptive_finds_key_positions(digits: Digits) -> None:
    """Scored against the test's own key. Measured with the defaults (product rank, k=64, median
    reset) and 3 epochs of compute: recall 0.55, precision 0.17, val accuracy 0.865 from 0.10. Guessing
    64 of the ~9.8k weights would find 0.13 of 20 key positions on average, so a 0.4 recall floor is far
    from luck.
    """
    budget = AttackerBudget(0.3, epochs=3)
    result = get_attack("adaptive").run(digits.encrypted, digits.data, {}, budget, seed=0)
    assert result.changed is not None
    recall, precision = recall_precision(result.changed, digits.key)
    assert recall >= 0.4
    assert precision >= 0.1
    assert accuracy(result.model, digits.data.val) > 0.8


def test_adaptive_changes_only_its_suspects(digits: Digits) -> None:
    result = get_attack("adaptive").run(digits.encrypted, digits.data, {"k": 10}, AttackerBudget(0.3, epochs=3))
    assert result.changed is not None
    assert sum(i.numel() for i in result.changed.values()) <= 10
    before, after = weight_params(digits.encrypted), weight_params(result.model)
    for name, w in after.items():
        moved = torch.nonzero((w != before[name]).flatten()).flatten()
        assert torch.equal(moved, result.changed.get(name, moved[:0]))


def test_key_inversion_recovers_the_key_and_the_accuracy(digits: Digits) -> None:
    """Scored against the test's own key (20 scalars moved to their tensor's extremes). Measured with the
    defaults and 3 epochs of compute: recall 0.65, precision 0.5, val accuracy 0.945 from 0.10 after 26
    resets. Guessing 26 of the ~9.8k weights would find 0.05 of the key on average."""
    result = get_attack("key_inversion").run(digits.encrypted, digits.data, {}, AttackerBudget(0.3, epochs=3), seed=0)
    assert result.changed is not None
    recall, precision = recall_precision(result.changed, digits.key)
    assert recall >= 0.5
    assert precision >= 0.35
    assert result.info["val_accuracy"] > 0.85
    assert result.info["resets"] == sum(i.numel() for i in result.changed.values())
    before, after = weight_params(digits.encrypted), weight_params(result.model)
    for name, w in after.items():  # alone, it changes only the scalars it reset
        moved = torch.nonzero((w != before[name]).flatten()).flatten()
        assert torch.equal(moved, result.changed.get(name, moved[:0]))


def test_key_inversion_then_fine_tuning_keeps_its_guess_of_the_key(digits: Digits) -> None:
    budget = AttackerBudget(0.3, epochs=6)
    alone = get_attack("key_inversion").run(digits.encrypted, digits.data, {"max_resets": 12}, budget, seed=0)
    tuned = get_attack("key_inversion").run(digits.encrypted, digits.data, {"max_resets": 12, "finetune_after": True,
                                                                           "lr": 0.05, "optimizer": "sgd"}, budget, seed=0)
    assert alone.changed is not None and tuned.changed is not None
    assert {n: i.tolist() for n, i in tuned.changed.items()} == {n: i.tolist() for n, i in alone.changed.items()}
    assert alone.info["compute_epochs"] < tuned.info["compute_epochs"] <= 6
    assert tuned.info["val_accuracy"] >= alone.info["val_accuracy"]


def test_clip_reports_and_only_alters_outliers(digits: Digits) -> None:
    result = get_attack("clip").run(
        digits.encrypted, digits.data, {"z": 3.0, "mode": "median"}, AttackerBudget(0.3)
    )
    assert result.changed
    recall, _ = recall_precision(result.changed, digits.key)
    assert recall > 0
    before, after = weight_params(digits.encrypted), weight_params(result.model)
    for name, w in after.items():
        moved = torch.nonzero((w != before[name]).flatten()).flatten()
        assert torch.equal(moved, result.changed.get(name, moved[:0]))


def test_finetune_recovers_accuracy(digits: Digits) -> None:
    budget = AttackerBudget(0.3, epochs=5)
    reported: list[tuple[int, float]] = []
    result = get_attack("finetune").run(
        digits.encrypted,
        digits.data,
        {"lr": 0.05, "optimizer": "sgd"},
        budget,
        seed=0,
        report=lambda s, v: reported.append((s, v)),
    )
    before = accuracy(digits.encrypted, digits.data.val)
    after = accuracy(result.model, digits.data.val)
    assert after > before + 0.3
    assert [s for s, _ in reported] == list(range(5))
    assert after == max(v for _, v in reported)  # the best epoch's state is the one returned


def test_finetune_last_layer_trains_the_classifier_only(digits: Digits) -> None:
    result = get_attack("finetune").run(
        digits.encrypted, digits.data, {"layers": "last", "lr": 0.05, "optimizer": "sgd"},
        AttackerBudget(0.3, epochs=5),
    )
    assert result.info["val_accuracy"] > accuracy(digits.encrypted, digits.data.val)  # it trained, not restored
    before, after = weight_params(digits.encrypted), weight_params(result.model)
    moved = [name for name in after if not torch.equal(after[name], before[name])]
    assert moved == ["9.weight"]


def test_magnitude_prune_keeps_pruned_weights_at_zero(digits: Digits) -> None:
    budget = AttackerBudget(0.3, epochs=2)
    result = get_attack("magnitude_prune").run(digits.encrypted, digits.data, {"ratio": 0.6}, budget)
    assert result.info["compute_epochs"] > 0  # it fine-tuned
    weights = weight_params(result.model)
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    total = sum(w.numel() for w in weights.values())
    assert zeros / total == pytest.approx(0.6, abs=0.01)
    assert result.info["sparsity"] == pytest.approx(0.6, abs=0.01)


@pytest.mark.parametrize(("bits", "levels"), [(8, 255), (4, 15)])
def test_quantize_puts_each_tensor_on_a_symmetric_grid(bits: int, levels: int, digits: Digits) -> None:
    result = get_attack("quantize").run(digits.encrypted, digits.data, {"bits": bits}, AttackerBudget(0.3))
    for w in weight_params(result.model).values():
        assert len(torch.unique(w)) <= levels


def test_scratch_ignores_the_stolen_weights(digits: Digits) -> None:
    assert [n for n in attack_names() if not get_attack(n).uses_weights] == ["scratch"]
    budget = AttackerBudget(0.3, epochs=0)
    from_encrypted = get_attack("scratch").run(digits.encrypted, digits.data, {}, budget, seed=3).model
    from_clean = get_attack("scratch").run(digits.clean, digits.data, {}, budget, seed=3).model
    assert same_state(state(from_encrypted), state(from_clean))
