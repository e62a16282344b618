"""One registry per concept (protection methods, attacks, data sets, models): the single source of names.

Built-ins register themselves with the registry's decorator in their own module; the registry finds them
by importing every module of its built-in package on first use, so there is no import list to maintain.
Outside packages declare an entry point in the registry's group (``NAME = "module:object"``); loading it
imports the module, whose decorator may already have registered the object, which is then kept. A broken
plugin is reported with a warning naming it, so one bad package cannot take the built-ins down with it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import pkgutil
import warnings
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from common.errors import UserError, first_line

T = TypeVar("T")


def summary(thing: object) -> str:
    """The first line of a thing's docstring: what ``advparams list`` shows of it."""
    doc = (inspect.getdoc(thing) or "").strip()
    return doc.splitlines()[0] if doc else ""


class Registry(Generic[T]):
    """Names of one kind of thing (``kind``, e.g. "attack") mapped to the things.

    ``builtins`` is the package whose modules hold the built-ins; ``group`` the entry-point group of outside
    packages; ``check(name, thing)`` validates what is registered and returns it; ``error`` is raised, with a
    one-line message, for a name taken twice or unknown.
    """

    def __init__(
        self,
        kind: str,
        *,
        builtins: str,
        group: str,
        error: type[UserError] = UserError,
        check: Callable[[str, T], T] | None = None,
    ) -> None:
        self.kind, self.builtins, self.group, self.error = kind, builtins, group, error
        self._check = check
        self._things: dict[str, T] = {}
        self._loading = False
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding a thing under ``name``; a name may be taken once."""

        def add(thing: T) -> T:
            self.add(name, thing)
            return thing

        return add

    def add(self, name: str, thing: T) -> None:
        """Register ``thing`` as ``name`` (validated); registering the same object again is a no-op."""
        if not isinstance(name, str) or not name or ":" in name:
            raise self.error(f"{self.kind} name {name!r} must be a non-empty string without ':'")
        if self._check is not None:
            thing = self._check(name, thing)
        if name in self._things:
            if self._things[name] is thing:
                return
            raise self.error(f"{self.kind} name {name!r} is already registered")
        self._things[name] = thing

    def remove(self, name: str) -> None:
        """Forget ``name`` (tests register temporary things)."""
        self._things.pop(name, None)

    def _load(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            package = importlib.import_module(self.builtins)
            for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
                importlib.import_module(f"{self.builtins}.{info.name}")
            self._load_plugins()
            self._loaded = True
        finally:
            self._loading = False

    def _load_plugins(self) -> None:
        for entry in importlib.metadata.entry_points(group=self.group):
            try:
                self.add(entry.name, entry.load())
            except Exception as exc:  # a plugin may fail in any way; report it and go on
                warnings.warn(
                    f"{self.kind} plugin {entry.name!r} ({entry.value}) was not loaded: "
                    f"{type(exc).__name__}: {first_line(exc)}",
                    RuntimeWarning,
                    stacklevel=3,
                )

    def reload_plugins(self) -> None:
        """Read the entry points again (after installing a plugin); an uninstalled plugin stays registered."""
        if self._loaded:
            self._load_plugins()
        else:
            self._load()

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._load()
        return sorted(self._things)

    def get(self, name: str) -> T:
        """The thing registered as ``name``, or a one-line error listing the registered names."""
        self._load()
        if name not in self._things:
            raise self.error(f"unknown {self.kind} {name!r}; registered: {', '.join(sorted(self._things))}")
        return self._things[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._things

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        """(name, thing) pairs in name order."""
        return [(name, self._things[name]) for name in self.names()]
