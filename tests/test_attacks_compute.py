"""One attacker budget counted in compute: the meter, every attack's accounting, early stopping, failed baselines.

Compute is checked against what really happened: a backward hook on the model's classifier counts the
samples that pass through a backward pass, in every copy an attack makes of the model.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from attacks import (
    AttackerBudget,
    AttackerData,
    AttackError,
    ComputeMeter,
    attack_names,
    get_attack,
    tune,
)
from attacks.base import CHANCE_MARGIN
from common.training import accuracy, train


def blobs(n: int, seed: int, classes: int = 2, spread: float = 1.0) -> TensorDataset:
    """``n`` points around ``classes`` centres on a circle of radius 3, ``spread`` their noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    angles = 2 * torch.pi * labels / classes
    centres = 3 * torch.stack([angles.cos(), angles.sin(), torch.zeros(n), torch.zeros(n)], dim=1)
    return TensorDataset(centres + spread * torch.randn(n, 4, generator=gen), labels)


def mlp(classes: int = 2) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, classes))


class BackwardCount:
    """Counts the samples passing backward through ``model``'s last layer, in the model and every deepcopy of it."""

    def __init__(self, model: nn.Module) -> None:
        counts = self.counts = [0]  # a plain function's closure: deepcopy shares it (a bound method it would copy)

        def count(_module: nn.Module, _grad_input: object, grad_output: tuple[torch.Tensor, ...]) -> None:
            counts[0] += grad_output[0].shape[0]

        [m for m in model.modules() if isinstance(m, nn.Linear)][-1].register_full_backward_hook(count)

    @property
    def samples(self) -> int:
        return self.counts[0]


DATA = AttackerData(blobs(64, 0), blobs(32, 1), 2)


def test_meter_charges_up_to_its_cap_and_notes_forward_passes() -> None:
    meter = AttackerBudget(0.5, trials=4, epochs=10).meter(train_size=20, parts=4)  # 2.5 epochs of 20 samples
    assert (meter.cap, meter.remaining) == (50, 50)
    meter.charge(40)
    meter.see(30)
    assert (meter.remaining, meter.used_epochs, meter.forward_epochs) == (10, 2.0, 1.5)
    with pytest.raises(AttackError, match="asked for 11 sample-gradients with 10 left of its cap") as err:
        meter.charge(11)
    assert "\n" not in str(err.value)
    assert meter.used == 40


def test_run_refuses_a_meter_of_the_wrong_type() -> None:
    with pytest.raises(AttackError, match="attack 'finetune': meter must be a ComputeMeter, not float"):
        get_attack("finetune").run(mlp(), DATA, {}, AttackerBudget(0.5), meter=2.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", attack_names())
def test_one_run_is_charged_every_backward_pass_and_stays_within_the_cap(name: str) -> None:
    model = mlp()
    counted = BackwardCount(model)
    result = get_attack(name).run(model, DATA, {}, AttackerBudget(0.5, epochs=3), seed=0)
    used = result.info["compute_epochs"]
    assert counted.samples == pytest.approx(used * len(DATA.train))
    assert 0 <= used <= 3
    assert result.info["forward_epochs"] >= len(DATA.val) / len(DATA.train)  # the final val pass at least
    assert result.info["val_accuracy"] == accuracy(result.model, DATA.val)


@pytest.mark.parametrize("name", attack_names())
def test_tuning_counts_every_trial_and_gives_each_an_equal_share(name: str) -> None:
    model = mlp()
    counted = BackwardCount(model)
    budget = AttackerBudget(0.5, trials=3, epochs=3)
    tuned = tune(get_attack(name), model, DATA, budget, seed=0)
    share = budget.epochs / len(tuned.trials)
    assert all(t.compute_epochs <= share for t in tuned.trials)
    assert tuned.compute_epochs == pytest.approx(sum(t.compute_epochs for t in tuned.trials))
    assert tuned.compute_epochs <= budget.epochs
    assert counted.samples == pytest.approx(tuned.compute_epochs * len(DATA.train))  # the best model is not re-run
    best = next(t for t in tuned.trials if t.value == tuned.best_value)
    assert tuned.result.info["compute_epochs"] == pytest.approx(best.compute_epochs)


@pytest.mark.parametrize("name", ["finetune", "scratch", "prune", "magnitude_prune", "adaptive", "key_inversion"])
def test_training_attacks_use_the_compute_they_are_given(name: str) -> None:
    """A patience longer than the cap: early stopping cannot end training, so the cap does, to the last batch."""
    params = {"patience": 100, **({"finetune_after": True} if name == "key_inversion" else {})}
    result = get_attack(name).run(mlp(), DATA, params, AttackerBudget(0.5, epochs=4), seed=0)
    assert result.info["compute_epochs"] == pytest.approx(4.0)


def test_early_stopping_stops_after_patience_and_restores_the_best_state() -> None:
    """A model already perfect on val can only tie: every epoch is stale, so training ends after ``patience``
    epochs and the starting weights come back, although training moved them."""
    easy = AttackerData(blobs(64, 0, spread=0.1), blobs(32, 1, spread=0.1), 2)
    model = train(mlp(), easy.train, epochs=20, lr=0.05, seed=0)
    assert accuracy(model, easy.val) == 1.0
    reported: list[tuple[int, float]] = []
    params = {"lr": 0.1, "optimizer": "sgd", "patience": 3}
    result = get_attack("finetune").run(model, easy, params, AttackerBudget(0.5, epochs=50), seed=0,
                                        report=lambda step, value: reported.append((step, value)))
    assert [step for step, _ in reported] == [0, 1, 2]
    assert result.info["compute_epochs"] == pytest.approx(3.0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), result.model.state_dict().values()))


def test_early_stopping_keeps_the_best_epoch() -> None:
    reported: list[float] = []
    result = get_attack("scratch").run(mlp(), DATA, {"patience": 2}, AttackerBudget(0.5, epochs=30), seed=0,
                                       report=lambda _step, value: reported.append(value))
    assert result.info["val_accuracy"] == max(reported) > 0.9
    assert result.info["compute_epochs"] < 30  # stopped before the cap


def test_a_baseline_at_chance_is_flagged_as_failed() -> None:
    """Zero inputs cannot be learnt: every sample gets the same prediction, so val accuracy is exactly 1/4."""
    zeros = TensorDataset(torch.zeros(64, 4), torch.arange(64) % 4)
    blank = AttackerData(zeros, TensorDataset(torch.zeros(32, 4), torch.arange(32) % 4), 4)
    failed = get_attack("scratch").run(mlp(4), blank, {}, AttackerBudget(0.5, epochs=2), seed=0)
    assert failed.info["val_accuracy"] == 0.25 <= 0.25 + CHANCE_MARGIN
    assert failed.info["failed_baseline"].startswith("val accuracy 0.250 is at chance (1/4")
    learnt = get_attack("scratch").run(mlp(), DATA, {"optimizer": "sgd", "lr": 0.05}, AttackerBudget(0.5, epochs=5))
    assert "failed_baseline" not in learnt.info
    stolen = get_attack("finetune").run(mlp(4), blank, {}, AttackerBudget(0.5, epochs=2), seed=0)
    assert "failed_baseline" not in stolen.info  # a stolen model that stays at chance is a result, not a failure


def test_meter_is_a_budget_share() -> None:
    assert isinstance(AttackerBudget(0.5, epochs=3).meter(10), ComputeMeter)
    assert AttackerBudget(0.5, epochs=3).meter(10).cap == 30
    assert AttackerBudget(0.5, epochs=3).meter(10, parts=4).cap == 7  # a fraction of a sample cannot be spent
