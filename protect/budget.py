"""The encryption budget: how many scalars may change, by how much, and when to stop.

A frozen, validated dataclass so a budget read from a config or a key file is checked once, at the
door, with a one-line message naming the field and its allowed range. The fields are the ones every
method shares; ``options`` holds what only the chosen method understands, checked against the options
that method declares when it runs (``protect.registry.check_options``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from protect.errors import ProtectError

#: Fields of budgets written before methods owned their options (AdvParams' two), read into ``options``.
LEGACY_OPTIONS = ("rank", "loss")


@dataclass(frozen=True)
class Budget:
    """Limits for one encryption, and the chosen method's options.

    ``max_params``: most scalars changed. ``eps``: size of each move. ``params_per_step``: scalars
    changed per gradient step. ``target_accuracy``: stop once owner accuracy is at or below it
    (``None``: chance level, 1 / number of classes). ``layers``: fnmatch patterns over parameter
    names narrowing the candidates (``None``: every Conv/Linear weight). ``stay_in_range``: clamp
    moves into each tensor's original [min, max] and never move the scalars holding that min and
    max, so every tensor keeps its range and the encrypted weights show no outliers. ``seed``: seeds
    the methods that draw at random. ``options``: the method's own options by name (e.g. AdvParams'
    ``loss``); unnamed ones take the method's defaults.
    """

    max_params: int = 64
    eps: float = 1.0
    params_per_step: int = 1
    target_accuracy: float | None = None
    layers: Sequence[str] | None = None
    stay_in_range: bool = True
    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _require_int("max_params", self.max_params, minimum=1)
        _require_int("params_per_step", self.params_per_step, minimum=1)
        _require_int("seed", self.seed, minimum=None)
        if not _is_real(self.eps) or not math.isfinite(self.eps) or self.eps <= 0:
            raise ProtectError(f"budget eps must be a finite number > 0, got {self.eps!r}")
        object.__setattr__(self, "eps", float(self.eps))
        if self.target_accuracy is not None:
            if not _is_real(self.target_accuracy) or not 0.0 <= self.target_accuracy <= 1.0:
                raise ProtectError(
                    f"budget target_accuracy must be None or a number in [0, 1], got {self.target_accuracy!r}"
                )
            object.__setattr__(self, "target_accuracy", float(self.target_accuracy))
        if self.layers is not None:
            object.__setattr__(self, "layers", _patterns(self.layers))
        if not isinstance(self.stay_in_range, bool):
            raise ProtectError(f"budget stay_in_range must be true or false, got {self.stay_in_range!r}")
        if not isinstance(self.options, Mapping) or not all(isinstance(k, str) and k for k in self.options):
            raise ProtectError(f"budget options must be a mapping of option names to values, got {self.options!r}")
        object.__setattr__(self, "options", dict(self.options))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (``layers`` as a list), for key files and configs."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["layers"] = list(self.layers) if self.layers is not None else None
        out["options"] = dict(self.options)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Budget:
        """A validated budget from a mapping; missing fields take their defaults, unknown ones are refused.

        The form written before methods owned their options (``rank`` and ``loss`` beside the common
        fields, as in older key files) is read with those two moved into ``options``.
        """
        if not isinstance(values, Mapping):
            raise ProtectError(
                f"budget must be a mapping of field names to values, got {type(values).__name__}"
            )
        legacy = {name: values[name] for name in LEGACY_OPTIONS if name in values}
        options = values.get("options", {})
        if legacy and isinstance(options, Mapping):
            twice = sorted(set(options) & set(legacy))
            if twice:
                raise ProtectError(f"budget names {', '.join(twice)} twice: as a field and as an option")
            values = {**{k: v for k, v in values.items() if k not in legacy}, "options": {**legacy, **options}}
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ProtectError(
                f"unknown budget field(s) {', '.join(map(str, unknown))}; known: {', '.join(known)}"
            )
        return cls(**values)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require_int(name: str, value: object, *, minimum: int | None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtectError(f"budget {name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ProtectError(f"budget {name} must be an integer >= {minimum}, got {value!r}")


def _patterns(layers: object) -> tuple[str, ...]:
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        raise ProtectError(f"budget layers must be None or a list of name patterns, got {layers!r}")
    if not layers or not all(isinstance(p, str) and p for p in layers):
        raise ProtectError(
            f"budget layers must be a non-empty list of non-empty name patterns, got {list(layers)!r}"
        )
    return tuple(layers)
