"""The attack contract: declared parameters, the attacker's budget and data, and the result.

Modelled on ART's ``attack_params``/``_check_params``: every attack declares its parameters as
typed :class:`Param` records, so one method (:meth:`Attack.check_params`) validates input from any
source (command line strings, configs, Optuna) and one method derives the tuning search space.
An attack sees the encrypted model, its own data and its budget; never the key.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn
from torch.utils.data import TensorDataset

if TYPE_CHECKING:
    import optuna

Report = Callable[[int, float], None]
"""``report(step, val_accuracy)``: lets a tuner see progress and stop a hopeless trial early."""

_KINDS = ("int", "float", "bool", "choice")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class AttackError(ValueError):
    """Bad input to an attack; the message is one line naming the offending parameter or value."""


def _fmt(value: float | None, kind: str) -> str:
    """A range bound as a user reads it: ``4096`` for an int, ``1e-05`` or ``1.0`` for a float."""
    if value is None:
        return "inf"
    return str(int(value)) if kind == "int" else repr(float(value))


@dataclass(frozen=True)
class Param:
    """One declared, typed, tunable attack parameter.

    ``low``/``high`` bound ``int`` and ``float`` values (inclusive); ``log`` samples them on a log
    scale when tuning. ``epochs_bound`` marks an int whose upper bound is the budget's epochs (its
    ``high`` is then unused and its default is clipped to the budget). ``tune=False`` keeps the
    default unless the user fixes a value.
    """

    name: str
    kind: Literal["int", "float", "bool", "choice"]
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    tune: bool = True
    help: str = ""
    epochs_bound: bool = False

    def __post_init__(self) -> None:
        where = f"param {self.name!r}"
        if self.kind not in _KINDS:
            raise AttackError(f"{where}: kind {self.kind!r} is not one of {', '.join(_KINDS)}")
        if self.kind == "choice" and not self.choices:
            raise AttackError(f"{where}: a choice needs a non-empty 'choices' tuple")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise AttackError(f"{where}: low {self.low} is above high {self.high}")
        if self.log and (self.low is None or self.low <= 0):
            raise AttackError(f"{where}: a log range needs low > 0")
        if self.epochs_bound and self.kind != "int":
            raise AttackError(f"{where}: only an int can be bound by the budget's epochs")
        if self.tune and self.kind in ("int", "float") and self.low is None:
            raise AttackError(f"{where}: a tunable number needs 'low'")
        if self.tune and self.kind in ("int", "float") and self.high is None and not self.epochs_bound:
            raise AttackError(f"{where}: a tunable number needs 'high'")
        self.check(self.default, None)  # a default must pass its own validation

    def bounds(self, budget: AttackerBudget | None) -> tuple[float | None, float | None]:
        """The inclusive range a value must lie in, with the budget's epochs as the cap if bound."""
        if self.epochs_bound and budget is not None:
            return self.low, budget.epochs
        return self.low, self.high

    def default_for(self, budget: AttackerBudget | None) -> Any:
        """The default, clipped to the budget's epochs for an epochs-bound param."""
        if self.epochs_bound and budget is not None:
            return min(self.default, budget.epochs)
        return self.default

    def coerce(self, value: Any) -> Any:
        """``value`` converted to this param's type (strings from a command line included)."""
        bad = AttackError(f"param {self.name!r} = {value!r} is not a valid {self.kind}")
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                return value.strip().lower() in _TRUE
            raise bad
        if self.kind == "choice":
            assert self.choices is not None
            for choice in self.choices:
                if value == choice and type(value) is type(choice):
                    return choice
            for choice in self.choices:  # "8" from a command line selects the choice 8
                if isinstance(value, str) and value.strip() == str(choice):
                    return choice
            options = ", ".join(repr(c) for c in self.choices)
            raise AttackError(f"param {self.name!r} = {value!r} is not one of {options}")
        if isinstance(value, bool):
            raise bad
        try:
            number = float(value) if isinstance(value, str) else value
            if self.kind == "int":
                if not isinstance(number, (int, float)) or not float(number).is_integer():
                    raise bad
                return int(number)
            if not isinstance(number, (int, float)) or not math.isfinite(number):
                raise bad
            return float(number)
        except (TypeError, ValueError, OverflowError):
            raise bad from None

    def check(self, value: Any, budget: AttackerBudget | None) -> Any:
        """``value`` coerced and range-checked."""
        value = self.coerce(value)
        if self.kind in ("int", "float"):
            low, high = self.bounds(budget)
            if (low is not None and value < low) or (high is not None and value > high):
                raise AttackError(
                    f"param {self.name!r} = {value!r} is outside "
                    f"[{_fmt(low, self.kind)}, {_fmt(high, self.kind)}]"
                )
        return value


def _check_count(name: str, value: Any, *, low: int) -> None:
    """Refuse a budget count that is not an int (a bool is not) of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise AttackError(f"budget {name} = {value!r} must be an integer >= {low}")


@dataclass(frozen=True)
class AttackerBudget:
    """What the attacker may spend: its share of the training set, tuning trials, epochs per trial."""

    data_fraction: float
    trials: int = 3
    epochs: int = 1

    def __post_init__(self) -> None:
        fraction = self.data_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise AttackError(f"budget data_fraction = {fraction!r} is outside (0, 1]")
        _check_count("trials", self.trials, low=1)
        _check_count("epochs", self.epochs, low=0)


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
    """The attacked model, the weight positions an attack changed (if it tracks them) and figures."""

    model: nn.Module
    changed: dict[str, torch.Tensor] | None = None
    info: dict[str, float | int | str] = field(default_factory=dict)


class Attack(ABC):
    """An attack on an AdvParams-encrypted model, declared by its parameters and run by ``run``.

    Subclasses set ``name``, ``params`` and ``paper`` and implement ``run``; ``run`` must leave the
    model it receives untouched (work on :meth:`copy_model`) and seed all randomness from ``seed``.
    ``uses_weights = False`` marks an attack that ignores the stolen weights (only the architecture),
    so a harness can run it once per clean model instead of once per encrypted copy.
    """

    name: ClassVar[str]
    params: ClassVar[tuple[Param, ...]]
    paper: ClassVar[str] = ""
    uses_weights: ClassVar[bool] = True

    def check_params(self, params: Mapping[str, Any], budget: AttackerBudget | None = None) -> dict[str, Any]:
        """All params, defaults filled in, values coerced and range-checked: the one validation.

        With a ``budget``, epochs-bound params are checked against (and default to at most) its epochs.
        """
        known = [p.name for p in self.params]
        for name in params:
            if name not in known:
                listed = ", ".join(known) or "(none)"
                raise AttackError(f"unknown param {name!r} for attack {self.name!r}; known: {listed}")
        return {
            p.name: p.check(params[p.name], budget) if p.name in params else p.default_for(budget)
            for p in self.params
        }

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
            low, high = p.bounds(budget)
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

    @staticmethod
    def copy_model(model: nn.Module) -> nn.Module:
        """A deep copy to attack, so the caller's (encrypted) model is never modified."""
        return copy.deepcopy(model)

    @abstractmethod
    def run(
        self,
        model: nn.Module,
        data: AttackerData,
        params: dict[str, Any],
        budget: AttackerBudget,
        *,
        seed: int = 0,
        report: Report | None = None,
    ) -> AttackResult:
        """Attack a copy of ``model`` with ``params`` within ``budget``; ``report`` sees val accuracy."""
