"""Tune an attack's params with Optuna against the attacker's own validation split, within one compute cap.

The attacker never sees the test split: one study maximises validation accuracy over the budget's
trials, and the best trial's model is handed to the harness for a single test evaluation. The budget's
compute cap covers the whole study: each of the ``trials`` trials gets an equal share, ``epochs / trials``
epoch-equivalents, and what a trial leaves (early stopping, pruning) is not passed on, so every trial
(and its recipe) is judged on the same compute and a trial's model does not depend on the trials before
it. The first trials are the attack's defaults and its known-good ``recipes``; the sampler explores after
them. Trials come back as data; logging them anywhere is the caller's business.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

from attacks.base import Attack, AttackerBudget, AttackerData, AttackError, AttackResult
from common.errors import first_line
from common.training import accuracy

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
PRUNER_STARTUP_TRIALS = 2  # trials that always run to the end before the median pruner may stop one


@dataclass(frozen=True)
class TrialRecord:
    """One Optuna trial as plain data: the full params it ran, its val accuracy, state, time and compute.

    ``compute_epochs`` is what it charged (epoch-equivalents), ``forward_epochs`` its validation passes.
    """

    number: int
    params: dict[str, Any]
    value: float | None
    state: str
    seconds: float
    compute_epochs: float = 0.0
    forward_epochs: float = 0.0


@dataclass
class TuningResult:
    """The best params, their val accuracy, every trial, the best trial's result, and the study's compute.

    ``compute_epochs`` is the compute of every trial together: never more than the budget's cap.
    """

    best_params: dict[str, Any]
    best_value: float
    trials: list[TrialRecord]
    result: AttackResult
    val_accuracy_before: float
    compute_epochs: float = 0.0


def trial_seed(seed: int, number: int) -> int:
    """A 31-bit seed for trial ``number`` of a study seeded with ``seed``, stable across runs."""
    digest = hashlib.sha256(f"{seed}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def study_signature(attack: Attack, model: nn.Module, data: AttackerData, budget: AttackerBudget, seed: int,
                    fixed: Mapping[str, Any], trials: int) -> str:
    """What a study's trials depend on, hashed: a study file is only resumed for the same question.

    The number of trials is part of it: it sets each trial's share of the compute cap.
    """
    what = [attack.name, seed, budget.data_fraction, budget.epochs, trials, sorted(fixed.items())]
    digest = hashlib.sha256(json.dumps(what, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    for split in (data.train, data.val):
        for tensor in split.tensors:
            digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
            digest.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def journal(path: str | Path | None) -> optuna.storages.BaseStorage | None:
    """A journal file storage (resumable, safe for several processes) or None for in-memory; a file that is
    not a journal is refused untouched."""
    if path is None:
        return None
    path = Path(path)
    if path.is_file() and path.stat().st_size:
        _check_journal(path)  # Optuna would append to a foreign file before failing on it
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def _check_journal(path: Path) -> None:
    """Refuse, untouched, a file that is not an Optuna journal (one JSON operation per line)."""
    try:
        with path.open("rb") as fh:
            for line in fh:
                if line.strip() and "op_code" not in json.loads(line):
                    raise ValueError("a line is not a journal operation")
    except (OSError, ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise AttackError(f"study file {path} cannot be used as an Optuna journal: {first_line(e)}") from None


def _record(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    seconds = trial.duration.total_seconds() if trial.duration is not None else 0.0
    return TrialRecord(
        number=trial.number,
        params=dict(trial.user_attrs.get("params", trial.params)),
        value=trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None,
        state=trial.state.name,
        seconds=seconds,
        compute_epochs=float(trial.user_attrs.get("compute_epochs", 0.0)),
        forward_epochs=float(trial.user_attrs.get("forward_epochs", 0.0)),
    )


def first_trials(attack: Attack, budget: AttackerBudget, fixed: Mapping[str, Any], count: int) -> list[dict[str, Any]]:
    """The tunable params of the defaults, then of each recipe (fixed params held), distinct, at most ``count``."""
    names = [p.name for p in attack.tunable(fixed)]
    queued: list[dict[str, Any]] = []
    for recipe in ({}, *attack.recipes):
        checked = attack.check_params({**recipe, **fixed}, budget)
        values = {name: checked[name] for name in names}
        if values not in queued:
            queued.append(values)
    return queued[:count]


def tune(
    attack: Attack,
    model: nn.Module,
    data: AttackerData,
    budget: AttackerBudget,
    *,
    seed: int = 0,
    storage: str | Path | None = None,
    study_name: str | None = None,
    fixed: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    durable: bool = True,
) -> TuningResult:
    """Search ``attack``'s params for the best val accuracy within ``budget.trials`` trials and its compute cap.

    ``fixed`` params are validated and held constant. The first trial of a fresh study runs the
    defaults, so tuning never does worse on validation than not tuning, and the next ones the attack's
    recipes; an attack with nothing left to tune runs one trial only, with the whole cap. Each trial
    spends at most ``budget.epochs / trials`` epoch-equivalents. With a ``storage`` file an interrupted
    study resumes, running only the trials still missing; the best model is then rebuilt by re-running
    its trial with the same seed and share (a replay of compute already counted, so not counted again).
    ``durable=False`` runs a fresh study in memory and writes the ``storage`` file once, when the trials end
    (failed or not): for a caller that starts its study clean and keeps the file for inspection only, it
    saves the fsync Optuna's journal makes on every report (about 8 % of a digits attack job).
    """
    checked = attack.check_params(fixed or {}, budget)
    fixed = {name: checked[name] for name in fixed or {}}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = study_name or f"{attack.name}-seed{seed}"
    try:
        target = journal(storage)
        backing = target if durable else optuna.storages.InMemoryStorage()
        study = optuna.create_study(
            storage=backing,
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS),
            study_name=name,
            direction="maximize",
            load_if_exists=True,
        )
    except (OSError, ValueError) as e:  # an unreadable file, or one that is not a journal (JSONDecodeError)
        raise AttackError(f"study file {storage} cannot be used as an Optuna journal: {first_line(e)}") from None
    tunable = attack.tunable(fixed)
    total = budget.trials if tunable else 1
    owner = study.user_attrs.get("attack")
    signature = study_signature(attack, model, data, budget, seed, fixed, total)
    if owner is None:
        study.set_user_attr("attack", attack.name)
        study.set_user_attr("signature", signature)
    elif owner != attack.name:
        raise AttackError(f"study {name!r} in {storage} was made by attack {owner!r}, not {attack.name!r}")
    elif study.user_attrs.get("signature") != signature:
        raise AttackError(f"study {name!r} in {storage} was made for another model, data, budget, seed or fixed "
                          "parameters; use another study file")
    if study.trials:  # resuming: trials a killed process left RUNNING never finish, and the sampler's
        for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(stale.number, state=optuna.trial.TrialState.FAIL)
        study.sampler = optuna.samplers.TPESampler(seed=trial_seed(seed, len(study.trials)))  # stream goes on
    if tunable and not study.trials:
        for values in first_trials(attack, budget, fixed, total):
            study.enqueue_trial(values)
    kept: dict[int, AttackResult] = {}  # the best result this process ran, under its trial number (one entry)

    def objective(trial: optuna.Trial) -> float:
        params = attack.search_space(trial, budget, fixed)
        trial.set_user_attr("params", params)

        def report(step: int, value: float) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"val accuracy {value:.4f} at step {step}")

        meter = budget.meter(len(data.train), total)
        try:
            result = attack.run(model, data, params, budget, seed=trial_seed(seed, trial.number), report=report,
                                meter=meter)
        finally:  # a pruned trial's compute counts too
            trial.set_user_attr("compute_epochs", meter.used_epochs)
            trial.set_user_attr("forward_epochs", meter.forward_epochs)
        value = float(result.info["val_accuracy"])
        if all(value > kept_result.info["val_accuracy"] for kept_result in kept.values()):
            kept.clear()
            kept[trial.number] = result
        return value

    def finished() -> int:
        return len(study.get_trials(deepcopy=False, states=FINISHED))

    def on_trial(_study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        if progress is not None:
            progress(finished(), total)

    missing = total - finished()
    try:
        if missing > 0:
            study.optimize(objective, n_trials=missing, callbacks=[on_trial])
    finally:
        if not durable and target is not None:
            optuna.copy_study(from_study_name=name, from_storage=backing, to_storage=target)

    best = study.best_trial
    best_params = dict(best.user_attrs["params"])
    result = kept.get(best.number) or attack.run(
        model, data, best_params, budget, seed=trial_seed(seed, best.number), meter=budget.meter(len(data.train), total)
    )
    trials = [_record(t) for t in study.get_trials(deepcopy=False)]
    return TuningResult(
        best_params=best_params,
        best_value=float(best.value),
        trials=trials,
        result=result,
        val_accuracy_before=accuracy(model, data.val),
        compute_epochs=sum(t.compute_epochs for t in trials),
    )
