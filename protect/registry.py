"""The registry of protection methods: a method is one function, registered by name, in one file.

A method receives an ``EncryptionRun`` (model in eval mode, owner batches, budget, its validated options,
candidates and the ledger through which every change must go) and returns its own non-secret stats,
including a ``stop_reason``. Everything common to all methods (validation, fingerprints, owner accuracy
before and after, building the key, undoing a failed run) is done once by ``protect.encryption``.

A built-in is a module in ``protect.methods`` with ``@register_method("name", options=(Param(...), ...))``
over its function; an outside package declares ``[project.entry-points."advparams.methods"] name =
"module:function"`` (the function decorated or not). Options that only one method understands are
declared by it as ``common.params.Param`` records and checked once, by :func:`check_options`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from common.params import Param, ParamError, check_declared, check_values
from common.registry import Registry, summary
from protect.budget import Budget
from protect.candidates import Candidates
from protect.errors import ProtectError
from protect.ledger import Ledger
from protect.owner_data import Batch

Progress = Callable[[int, int], None]


@dataclass
class EncryptionRun:
    """What a method works on. ``target_accuracy`` is resolved (chance level when the budget says None);
    ``options`` are the method's declared options, validated, defaults filled in."""

    model: nn.Module
    batches: list[Batch]
    budget: Budget
    options: dict[str, Any]
    candidates: Candidates
    ledger: Ledger
    target_accuracy: float
    progress: Progress | None = None

    def report_progress(self) -> None:
        """Tell the caller how many scalars have changed so far, out of ``budget.max_params``."""
        if self.progress is not None:
            self.progress(self.ledger.count, self.budget.max_params)


MethodFunction = Callable[[EncryptionRun], dict[str, Any]]


@dataclass(frozen=True)
class Method:
    """A registered protection method: its function and the options it declares."""

    function: MethodFunction
    options: tuple[Param, ...] = ()
    changes_all: bool = False  # replaces every candidate weight: max_params and eps do not apply (reinit)

    @property
    def summary(self) -> str:
        """The first line of the function's docstring (``advparams list``)."""
        return summary(self.function)


_RECORDS: dict[MethodFunction, Method] = {}  # one record per function, so loading it again is no duplicate


def _as_method(name: str, thing: object) -> Method:
    """The registry's check: ``thing`` (a Method, or a method function) as a validated Method record."""
    if isinstance(thing, Method):
        method = thing
    elif callable(thing):
        method = _RECORDS.get(thing) or Method(thing)
    else:
        raise ProtectError(f"protection method {name!r} must be a function of an EncryptionRun, got {thing!r}")
    if not callable(method.function):
        raise ProtectError(f"protection method {name!r} has no function to call")
    try:
        check_declared(method.options, f"protection method {name!r}")
    except ParamError as err:
        raise ProtectError(str(err)) from None
    _RECORDS.setdefault(method.function, method)
    return method


METHODS: Registry[Method] = Registry(
    "protection method", builtins="protect.methods", group="advparams.methods", error=ProtectError, check=_as_method
)


def register_method(
    name: str, options: tuple[Param, ...] = (), *, changes_all: bool = False
) -> Callable[[MethodFunction], MethodFunction]:
    """Decorator registering a method function as ``name``, with the ``options`` it declares; ``changes_all``
    marks a method that replaces every candidate weight, so the budget's ``max_params`` does not bound it."""

    def add(function: MethodFunction) -> MethodFunction:
        METHODS.add(name, Method(function, options, changes_all))
        return function

    return add


def check_options(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` checked against the options method ``name`` declares, defaults filled in; a one-line
    ProtectError naming the method for an unknown method, an unknown option or a bad value."""
    owner = f"protection method {name!r}"
    try:
        return check_values(METHODS.get(name).options, values, owner)
    except ParamError as err:
        message = str(err)
        raise ProtectError(message if owner in message else f"{owner}: {message}") from None
