"""The attack contract: declared parameters, the attacker's budget and data, and the result.

Modelled on ART's ``attack_params``/``_check_params``: every attack declares its parameters as
typed :class:`Param` records, so one method (:meth:`Attack.check_params`) validates input from any
source (command line strings, configs, Optuna) and one method derives the tuning search space.
As ART's ``generate``, :meth:`Attack.run` does what every attack does (check the inputs, copy the
model, account for the compute) and calls the attack's own step, :meth:`Attack.attack`, in between.
An attack sees the encrypted model, its own data and its budget; never the key.

Every attack pays in one currency, epoch-equivalents: the samples it passes through a backward pass
(sample-gradient evaluations) divided by the size of the attacker's training split, so 1.0 is one pass
over its data whether the attack trains, estimates gradients or descends on a few scalars. Forward-only
passes (validation) are counted apart and reported, never charged: any attack may check its progress.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, final

import torch
from torch import nn
from torch.utils.data import TensorDataset

from common.errors import UserError
from common.params import Param, ParamError, check_values
from common.training import accuracy

if TYPE_CHECKING:
    import optuna

Report = Callable[[int, float], None]
"""``report(step, val_accuracy)``: lets a tuner see progress and stop a hopeless trial early."""

CHANCE_MARGIN = 0.05
"""A baseline whose val accuracy is at most ``1 / classes`` plus this did not learn: its training failed."""


class AttackError(UserError):
    """Bad input to an attack; the message is one line naming the offending parameter or value."""


def _check_count(name: str, value: Any, *, low: int) -> None:
    """Refuse a budget count that is not an int (a bool is not) of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise AttackError(f"budget {name} = {value!r} must be an integer >= {low}")


@dataclass(frozen=True)
class AttackerBudget:
    """What the attacker may spend: its share of the training set and a compute cap for the whole attack.

    ``epochs`` is the cap in epoch-equivalents, counted across all ``trials`` of tuning and every step of
    each: the same cap for every attack, training from scratch included.
    """

    data_fraction: float
    trials: int = 3
    epochs: int = 1

    def __post_init__(self) -> None:
        fraction = self.data_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise AttackError(f"budget data_fraction = {fraction!r} is outside (0, 1]")
        _check_count("trials", self.trials, low=1)
        _check_count("epochs", self.epochs, low=0)

    def meter(self, train_size: int, parts: int = 1) -> ComputeMeter:
        """A meter holding one of ``parts`` equal shares of the cap, over a training split of ``train_size``
        (rounded down to whole samples)."""
        return ComputeMeter(self.epochs * train_size // parts, train_size)


class ComputeMeter:
    """One run's share of the compute cap, ``cap`` sample-gradients over a training split of ``train_size``, and
    what the run has spent of it."""

    def __init__(self, cap: int, train_size: int) -> None:
        self.train_size = max(1, train_size)
        self.cap = cap
        self.used = 0
        self.forward = 0

    @property
    def remaining(self) -> int:
        """Samples that may still pass through a backward pass."""
        return self.cap - self.used

    def charge(self, samples: int) -> None:
        """Count ``samples`` sample-gradient evaluations; spending more than :attr:`remaining` is refused."""
        if samples > self.remaining:
            raise AttackError(f"an attack asked for {samples} sample-gradients with {self.remaining} left of its cap")
        self.used += samples

    def see(self, samples: int) -> None:
        """Count ``samples`` forward-only evaluations (validation): reported, not charged."""
        self.forward += samples

    @property
    def used_epochs(self) -> float:
        """What was charged, in epoch-equivalents."""
        return self.used / self.train_size

    @property
    def forward_epochs(self) -> float:
        """What was evaluated forward-only, in epoch-equivalents of the training split."""
        return self.forward / self.train_size


@dataclass(frozen=True)
class AttackerData:
    """The attacker's own labelled data: a training split and a validation split to tune on."""

    train: TensorDataset
    val: TensorDataset
    num_classes: int

    def __post_init__(self) -> None:
        for split in ("train", "val"):
            data = getattr(self, split)
            if not isinstance(data, TensorDataset) or len(data.tensors) < 2:
                raise AttackError(f"attacker {split} data must be a TensorDataset of (inputs, labels)")
            if len(data) == 0:
                raise AttackError(f"attacker {split} data is empty")
        if (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or self.num_classes < 2
        ):
            raise AttackError(f"attacker num_classes = {self.num_classes!r} must be an integer >= 2")

    @property
    def example_inputs(self) -> torch.Tensor:
        """One training input with its batch dimension, for tracing a model."""
        return self.train.tensors[0][:1]


@dataclass
class AttackResult:
    """The attacked model, the weight positions an attack changed (if it tracks them) and figures.

    :meth:`Attack.run` adds to ``info``: ``compute_epochs`` (charged), ``forward_epochs`` (validation,
    not charged), ``val_accuracy`` and, for a baseline that ended at chance, ``failed_baseline`` (why).
    """

    model: nn.Module
    changed: dict[str, torch.Tensor] | None = None
    info: dict[str, float | int | str] = field(default_factory=dict)


class Attack(ABC):
    """An attack on an AdvParams-encrypted model, declared by its parameters and run by :meth:`run`.

    Subclasses set ``name``, ``params`` and ``paper`` and implement :meth:`attack`, their own step; the
    shared prologue (validation, the copy that keeps the caller's model untouched) and epilogue (compute
    and val accuracy into ``info``) are :meth:`run`'s, once for every attack, as ART's ``generate`` owns
    what every attack does. All randomness is seeded from ``seed``. ``recipes`` are known-good params a
    tuner tries right after the defaults, before it explores. ``uses_weights = False`` marks an attack
    that ignores the stolen weights (only the architecture): a baseline, which a harness can run once per
    clean model instead of once per encrypted copy, and whose run at chance is a failed baseline.
    """

    name: ClassVar[str]
    params: ClassVar[tuple[Param, ...]]
    paper: ClassVar[str] = ""
    recipes: ClassVar[tuple[Mapping[str, Any], ...]] = ()
    uses_weights: ClassVar[bool] = True

    def check_params(self, params: Mapping[str, Any], budget: AttackerBudget | None = None) -> dict[str, Any]:
        """All params, defaults filled in, values coerced and range-checked: the one validation.

        With a ``budget``, epochs-bound params are checked against (and default to at most) its epochs.
        """
        owner = f"attack {self.name!r}"
        if not isinstance(params, Mapping):
            raise AttackError(f"{owner}: params must be a mapping of names to values, not {type(params).__name__}")
        try:
            return check_values(self.params, params, owner, epochs=budget.epochs if budget else None)
        except ParamError as err:
            raise AttackError(str(err)) from None

    def tunable(self, fixed: Mapping[str, Any] | None = None) -> list[Param]:
        """The params a tuner should search: those marked ``tune`` and not fixed by the user."""
        fixed = fixed or {}
        return [p for p in self.params if p.tune and p.name not in fixed]

    def search_space(
        self,
        trial: optuna.Trial,
        budget: AttackerBudget | None = None,
        fixed: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Params for one Optuna trial: suggested for tunable ones, fixed or default for the rest."""
        values: dict[str, Any] = dict(fixed or {})
        for p in self.tunable(fixed):
            low, high = p.bounds(budget.epochs if budget else None)
            if p.kind in ("int", "float") and high is None:
                continue  # an epochs-bound param without a budget keeps its default
            if p.kind == "int":
                values[p.name] = trial.suggest_int(p.name, int(low), int(high), log=p.log)
            elif p.kind == "float":
                values[p.name] = trial.suggest_float(p.name, float(low), float(high), log=p.log)
            elif p.kind == "bool":
                values[p.name] = trial.suggest_categorical(p.name, [False, True])
            else:
                values[p.name] = trial.suggest_categorical(p.name, list(p.choices or ()))
        return self.check_params(values, budget)

    @final
    def run(
        self,
        model: nn.Module,
        data: AttackerData,
        params: Mapping[str, Any],
        budget: AttackerBudget,
        *,
        seed: int = 0,
        report: Report | None = None,
        meter: ComputeMeter | None = None,
    ) -> AttackResult:
        """Attack ``model`` with ``params`` within ``budget``; ``report`` sees val accuracy.

        Checks every input (one line naming what is wrong), then hands :meth:`attack` the validated params,
        a copy of the model, so the caller's model is never modified, and ``meter``: the compute this run may
        spend (a tuner's share of the cap per trial; by default the whole cap). What it spent, and the val
        accuracy of the model it returns, go into the result's ``info``.
        """
        owner = f"attack {self.name!r}"
        for what, value, kind, expected in (
            ("model", model, nn.Module, "a torch nn.Module"),
            ("data", data, AttackerData, "an AttackerData"),
            ("budget", budget, AttackerBudget, "an AttackerBudget"),
        ):
            if not isinstance(value, kind):
                raise AttackError(f"{owner}: {what} must be {expected}, not {type(value).__name__}")
        if meter is not None and not isinstance(meter, ComputeMeter):
            raise AttackError(f"{owner}: meter must be a ComputeMeter, not {type(meter).__name__}")
        checked = self.check_params(params, budget)
        target = copy.deepcopy(model) if self.uses_weights else model
        meter = meter if meter is not None else budget.meter(len(data.train))
        result = self.attack(target, data, checked, budget, seed=seed, report=report, meter=meter)
        val = accuracy(result.model, data.val)
        meter.see(len(data.val))
        result.info.update(compute_epochs=meter.used_epochs, forward_epochs=meter.forward_epochs, val_accuracy=val)
        if not self.uses_weights and val <= 1 / data.num_classes + CHANCE_MARGIN:
            result.info["failed_baseline"] = (
                f"val accuracy {val:.3f} is at chance (1/{data.num_classes} + {CHANCE_MARGIN}): training did not converge"
            )
        return result

    @abstractmethod
    def attack(
        self,
        model: nn.Module,
        data: AttackerData,
        params: dict[str, Any],
        budget: AttackerBudget,
        *,
        seed: int,
        report: Report | None,
        meter: ComputeMeter,
    ) -> AttackResult:
        """The attack's own step, called by :meth:`run` with every declared param checked and filled in.

        ``model`` is the attack's own copy, free to modify; with ``uses_weights = False`` it is the caller's
        model, to be read as an architecture only (copy it before changing anything). Every backward pass is
        paid for with ``meter.charge(samples)``, within ``meter.remaining`` (what is left to this run; the
        budget's ``epochs`` is the cap of the whole attack, not of this run), every validation pass noted
        with ``meter.see(samples)``.
        """
