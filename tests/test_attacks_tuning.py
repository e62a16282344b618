"""The Optuna tuner: determinism, resuming from a journal file, fixed params, pruning, progress.

A three-class blob problem and an untrained MLP are enough: the tuner's behaviour, not an attack's
strength, is under test.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from attacks import AttackerBudget, AttackerData, AttackError, get_attack, tune
from attacks.tuning import journal, trial_seed


def blobs(n: int, seed: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    return TensorDataset(centres[labels] + torch.randn(n, 2, generator=gen), labels)


def killed_after(trials: int):
    """A progress callback that kills the tuning process once ``trials`` trials have finished."""

    def progress(done: int, _total: int) -> None:
        if done == trials:
            raise KeyboardInterrupt

    return progress


@pytest.fixture()
def task() -> tuple[nn.Module, AttackerData]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
    return model, AttackerData(blobs(96, 0), blobs(60, 1), 3)


def test_same_seed_same_best(task: tuple[nn.Module, AttackerData]) -> None:
    model, data = task
    budget = AttackerBudget(0.5, trials=4, epochs=2)
    first, second = (tune(get_attack("finetune"), model, data, budget, seed=5) for _ in range(2))
    assert first.best_params == second.best_params
    assert first.best_value == second.best_value
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    other = tune(get_attack("finetune"), model, data, budget, seed=6)
    assert [t.params for t in other.trials][:3] == [t.params for t in first.trials][:3]  # defaults and recipes
    assert [t.params for t in other.trials][3:] != [t.params for t in first.trials][3:]


def test_first_trials_run_the_defaults_then_the_recipes_and_trials_are_data(task: tuple[nn.Module, AttackerData]) -> None:
    model, data = task
    attack = get_attack("finetune")
    budget = AttackerBudget(0.5, trials=3, epochs=3)
    ticks: list[tuple[int, int]] = []
    tuned = tune(attack, model, data, budget, progress=lambda done, total: ticks.append((done, total)))
    assert tuned.trials[0].params == attack.check_params({}, budget)
    assert [t.params for t in tuned.trials[1:]] == [attack.check_params(r, budget) for r in attack.recipes]
    assert attack.recipes == ({"optimizer": "sgd", "lr": 0.05}, {"optimizer": "adam", "lr": 0.001})
    assert [t.number for t in tuned.trials] == [0, 1, 2]
    assert all(t.state in ("COMPLETE", "PRUNED") and t.seconds >= 0 for t in tuned.trials)
    assert ticks == [(1, 3), (2, 3), (3, 3)]
    assert tuned.best_value >= tuned.trials[0].value


def test_one_trial_or_nothing_to_tune_runs_the_defaults_once(task: tuple[nn.Module, AttackerData]) -> None:
    model, data = task
    one = tune(get_attack("scratch"), model, data, AttackerBudget(0.5, trials=1, epochs=1))
    assert [t.params for t in one.trials] == [{"lr": 0.003, "optimizer": "adam", "patience": 5}]
    assert one.compute_epochs == pytest.approx(1.0)  # one trial: the whole cap
    everything_fixed = tune(
        get_attack("clip"), model, data, AttackerBudget(0.5, trials=5), fixed={"z": "2.5", "mode": "median"}
    )
    assert len(everything_fixed.trials) == 1
    assert everything_fixed.best_params == {"z": 2.5, "mode": "median"}


def test_fixed_params_are_validated_and_held(task: tuple[nn.Module, AttackerData]) -> None:
    model, data = task
    budget = AttackerBudget(0.5, trials=3, epochs=1)
    tuned = tune(get_attack("finetune"), model, data, budget, fixed={"optimizer": "adam"})
    assert all(t.params["optimizer"] == "adam" for t in tuned.trials)
    assert [t.params["lr"] for t in tuned.trials] == [0.003, 0.05, 0.001]  # the recipes, their optimizer held fixed
    with pytest.raises(AttackError, match=r"param 'lr' = 9.0 is outside \[0.0001, 0.1\]"):
        tune(get_attack("finetune"), model, data, budget, fixed={"lr": "9"})
    with pytest.raises(AttackError, match="unknown param 'depth' for attack 'finetune'"):
        tune(get_attack("finetune"), model, data, budget, fixed={"depth": 3})


def test_journal_study_resumes_with_only_the_missing_trials(
    task: tuple[nn.Module, AttackerData], tmp_path: Path
) -> None:
    model, data = task
    journal = tmp_path / "study.journal"
    attack = get_attack("finetune")
    budget = AttackerBudget(0.5, trials=3, epochs=3)
    with pytest.raises(KeyboardInterrupt):
        tune(attack, model, data, budget, storage=journal, seed=3, progress=killed_after(2))
    ran: list[tuple[int, int]] = []
    resumed = tune(attack, model, data, budget, storage=journal, seed=3, progress=lambda d, t: ran.append((d, t)))
    assert ran == [(3, 3)]  # one new trial only
    whole = tune(attack, model, data, budget, seed=3)
    assert [t.params for t in resumed.trials[:2]] == [t.params for t in whole.trials[:2]]
    assert resumed.result.info["val_accuracy"] == resumed.best_value  # a trial of the killed process is replayed
    assert len(resumed.trials) == 3 and resumed.compute_epochs <= budget.epochs
    with pytest.raises(AttackError, match="was made by attack 'finetune', not 'scratch'"):
        tune(
            get_attack("scratch"),
            model,
            data,
            AttackerBudget(0.5),
            storage=journal,
            study_name="finetune-seed3",
        )


def test_a_study_kept_for_inspection_is_written_once_with_the_trials_a_durable_one_holds(
    task: tuple[nn.Module, AttackerData], tmp_path: Path
) -> None:
    """``durable=False`` (a sweep job's study): nothing on disk while the trials run, then the same study the
    journal would hold; a study stopped by an error is written too."""
    model, data = task
    attack, budget = get_attack("finetune"), AttackerBudget(0.5, trials=2, epochs=2)
    durable, late = tmp_path / "durable.journal", tmp_path / "late.journal"
    seen: list[bool] = []
    tune(attack, model, data, budget, storage=durable, seed=3, study_name="job")
    tune(attack, model, data, budget, storage=late, seed=3, study_name="job", durable=False,
         progress=lambda _d, _t: seen.append(late.is_file() and late.stat().st_size > 0))
    assert seen == [False, False]

    def trials(path: Path) -> list[tuple[Any, ...]]:
        study = optuna.load_study(study_name="job", storage=journal(path))
        return [(t.params, t.value, t.state, t.user_attrs.get("compute_epochs")) for t in study.trials]

    assert trials(late) == trials(durable) and len(trials(late)) == 2
    stopped = tmp_path / "stopped.journal"
    with pytest.raises(KeyboardInterrupt):
        tune(attack, model, data, budget, storage=stopped, seed=3, study_name="job", durable=False,
             progress=killed_after(1))
    assert [t[2] for t in trials(stopped)] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING]


def test_a_study_is_not_resumed_with_another_number_of_trials(task: tuple[nn.Module, AttackerData], tmp_path: Path) -> None:
    """The number of trials sets each trial's share of the compute: more trials ask another question."""
    model, data = task
    journal = tmp_path / "study.journal"
    tune(get_attack("finetune"), model, data, AttackerBudget(0.5, trials=2, epochs=2), storage=journal, seed=3)
    with pytest.raises(AttackError, match="was made for another model, data, budget"):
        tune(get_attack("finetune"), model, data, AttackerBudget(0.5, trials=3, epochs=2), storage=journal, seed=3)


def test_median_pruner_stops_a_trial_that_reports_badly(task: tuple[nn.Module, AttackerData]) -> None:
    """After two full trials, a trial whose first report is below their median is pruned."""
    model, data = task
    budget = AttackerBudget(0.5, trials=8, epochs=32)  # 4 epochs, so 4 reports, per trial
    tuned = tune(get_attack("finetune"), model, data, budget, seed=0)
    states = [t.state for t in tuned.trials]
    assert states[:2] == ["COMPLETE", "COMPLETE"]
    assert "PRUNED" in states
    assert all(t.value is None for t in tuned.trials if t.state == "PRUNED")


def test_trial_seeds_are_stable_and_distinct() -> None:
    assert trial_seed(0, 1) == trial_seed(0, 1)
    assert len({trial_seed(s, n) for s in range(5) for n in range(5)}) == 25
    assert all(0 <= trial_seed(s, 9) < 2**31 for s in range(5))


def test_optuna_logging_is_quiet(task: tuple[nn.Module, AttackerData]) -> None:
    model, data = task
    tune(get_attack("quantize"), model, data, AttackerBudget(0.5, trials=1))
    assert optuna.logging.get_verbosity() == optuna.logging.WARNING


def test_a_study_file_is_not_resumed_for_another_question(task: tuple[nn.Module, AttackerData], tmp_path: Path) -> None:
    model, data = task
    journal = tmp_path / "study.journal"
    attack = get_attack("clip")
    tune(attack, model, data, AttackerBudget(0.5, trials=1, epochs=1), storage=journal, seed=3)
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    with pytest.raises(AttackError, match="was made for another model"):
        tune(attack, other, data, AttackerBudget(0.5, trials=2, epochs=1), storage=journal, seed=3)


def test_a_resumed_study_leaves_no_running_trial_and_does_not_repeat_the_sampler(
    task: tuple[nn.Module, AttackerData], tmp_path: Path
) -> None:
    import optuna

    model, data = task
    journal = tmp_path / "study.journal"
    attack = get_attack("finetune")
    budget = AttackerBudget(0.5, trials=6, epochs=6)
    with pytest.raises(KeyboardInterrupt):  # after the defaults, the two recipes and one sampled trial
        tune(attack, model, data, budget, storage=journal, seed=3, progress=killed_after(4))
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    optuna.load_study(study_name="finetune-seed3", storage=storage).ask()  # a worker killed mid-trial
    resumed = tune(attack, model, data, budget, storage=journal, seed=3)
    assert "RUNNING" not in {t.state for t in resumed.trials}
    tuned = [t.params for t in resumed.trials if t.state in ("COMPLETE", "PRUNED")]
    assert len(tuned) == 6 and tuned[4] != tuned[3] and tuned[5] != tuned[4]
