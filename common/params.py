"""Declared, typed, bounded parameters: what an attack or a protection method accepts, with help text.

Modelled on ART's ``attack_params``: a thing declares its parameters as :class:`Param` records, so one
function (:func:`check_values`) validates input from any source (command-line strings, configs, Optuna),
one method derives a tuning search space, and ``advparams list`` shows them all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from common.errors import UserError

_KINDS = ("int", "float", "bool", "choice")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class ParamError(UserError):
    """A declared parameter or a value for it is wrong; the message names the parameter."""


def _fmt(value: float | None, kind: str) -> str:
    """A range bound as a user reads it: ``4096`` for an int, ``1e-05`` or ``1.0`` for a float."""
    if value is None:
        return "inf"
    return str(int(value)) if kind == "int" else repr(float(value))


@dataclass(frozen=True)
class Param:
    """One declared, typed, tunable parameter of an attack or a protection method.

    ``low``/``high`` bound ``int`` and ``float`` values (inclusive); ``log`` samples them on a log
    scale when tuning. ``epochs_bound`` marks an int whose upper bound is an epoch cap (its
    ``high`` is then unused and its default is clipped to the cap). ``tune=False`` keeps the
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
            raise ParamError(f"{where}: kind {self.kind!r} is not one of {', '.join(_KINDS)}")
        if self.kind == "choice" and not self.choices:
            raise ParamError(f"{where}: a choice needs a non-empty 'choices' tuple")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ParamError(f"{where}: low {self.low} is above high {self.high}")
        if self.log and (self.low is None or self.low <= 0):
            raise ParamError(f"{where}: a log range needs low > 0")
        if self.epochs_bound and self.kind != "int":
            raise ParamError(f"{where}: only an int can be bound by an epoch cap")
        if self.tune and self.kind in ("int", "float") and self.low is None:
            raise ParamError(f"{where}: a tunable number needs 'low'")
        if self.tune and self.kind in ("int", "float") and self.high is None and not self.epochs_bound:
            raise ParamError(f"{where}: a tunable number needs 'high'")
        self.check(self.default)  # a default must pass its own validation

    def bounds(self, epochs: int | None = None) -> tuple[float | None, float | None]:
        """The inclusive range a value must lie in, with an epoch cap as the cap if bound."""
        if self.epochs_bound and epochs is not None:
            return self.low, epochs
        return self.low, self.high

    def default_for(self, epochs: int | None = None) -> Any:
        """The default, clipped to an epoch cap for an epochs-bound param."""
        if self.epochs_bound and epochs is not None:
            return min(self.default, epochs)
        return self.default

    def coerce(self, value: Any) -> Any:
        """``value`` converted to this param's type (strings from a command line included)."""
        bad = ParamError(f"param {self.name!r} = {value!r} is not a valid {self.kind}")
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
            raise ParamError(f"param {self.name!r} = {value!r} is not one of {options}")
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

    def check(self, value: Any, epochs: int | None = None) -> Any:
        """``value`` coerced and range-checked."""
        value = self.coerce(value)
        if self.kind in ("int", "float"):
            low, high = self.bounds(epochs)
            if (low is not None and value < low) or (high is not None and value > high):
                raise ParamError(
                    f"param {self.name!r} = {value!r} is outside "
                    f"[{_fmt(low, self.kind)}, {_fmt(high, self.kind)}]"
                )
        return value


def check_values(
    params: Iterable[Param], values: Mapping[str, Any], owner: str, *, epochs: int | None = None
) -> dict[str, Any]:
    """Every declared param of ``owner`` (e.g. "attack 'finetune'"), defaults filled in, ``values`` coerced and
    range-checked: the one validation. An unknown name is refused, listing the known ones."""
    params = tuple(params)
    known = [p.name for p in params]
    for name in values:
        if name not in known:
            raise ParamError(f"unknown param {name!r} for {owner}; known: {', '.join(known) or '(none)'}")
    return {p.name: p.check(values[p.name], epochs) if p.name in values else p.default_for(epochs) for p in params}


def check_declared(params: object, owner: str) -> tuple[Param, ...]:
    """``params`` if it is a tuple of Param with distinct names, else a ParamError naming ``owner``."""
    if not isinstance(params, tuple) or not all(isinstance(p, Param) for p in params):
        raise ParamError(f"{owner}: 'params' must be a tuple of Param")
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise ParamError(f"{owner} declares a param name twice: {', '.join(names)}")
    return params


def describe(param: Param) -> dict[str, Any]:
    """A param as plain data (``advparams list --json``)."""
    out: dict[str, Any] = {"name": param.name, "kind": param.kind, "default": param.default, "help": param.help}
    if param.kind in ("int", "float"):
        out["range"] = [param.low, "epochs" if param.epochs_bound else param.high]
        out["log"] = param.log
    if param.choices is not None:
        out["choices"] = list(param.choices)
    out["tuned"] = param.tune
    return out
