"""Attacks by name: built-ins register with a decorator, third parties through entry points.

A plugin package declares ``[project.entry-points."advparams.attacks"] <name> = "pkg:AttackClass"``.
Plugins are read once, lazily, on the first lookup; a broken plugin is reported with a warning
naming it so one bad package cannot take the built-in attacks down with it.
"""

from __future__ import annotations

import importlib.metadata
import warnings

from attacks.base import Attack, AttackError, Param

ENTRY_POINT_GROUP = "advparams.attacks"

_builtins: dict[str, type[Attack]] = {}
_plugins: dict[str, type[Attack]] | None = None


def _validate(cls: object) -> type[Attack]:
    """``cls`` if it is a concrete Attack subclass with a name and distinct param names."""
    if not isinstance(cls, type) or not issubclass(cls, Attack):
        raise AttackError(f"{cls!r} is not a subclass of attacks.Attack")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise AttackError(f"attack class {cls.__name__} has no 'name'")
    if getattr(cls, "__abstractmethods__", None):
        raise AttackError(f"attack {name!r} does not implement {', '.join(sorted(cls.__abstractmethods__))}")
    params = getattr(cls, "params", None)
    if not isinstance(params, tuple) or not all(isinstance(p, Param) for p in params):
        raise AttackError(f"attack {name!r}: 'params' must be a tuple of attacks.Param")
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise AttackError(f"attack {name!r} declares a param name twice: {', '.join(names)}")
    return cls


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator that makes a built-in attack available by its ``name``."""
    _validate(cls)
    if cls.name in _builtins:
        raise AttackError(f"attack name {cls.name!r} is already registered")
    _builtins[cls.name] = cls
    return cls


def reload_plugins() -> None:
    """Re-read the ``advparams.attacks`` entry points (e.g. after installing a plugin)."""
    global _plugins
    _plugins = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = _validate(entry.load())
            if cls.name != entry.name:
                raise AttackError(f"its entry point is named {entry.name!r} but the attack {cls.name!r}")
            if cls.name in _builtins or cls.name in _plugins:
                raise AttackError(f"attack name {cls.name!r} is already registered")
        except Exception as exc:  # a plugin may fail in any way; report it and go on
            warnings.warn(
                f"attack plugin {entry.name!r} ({entry.value}) was not loaded: {type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        _plugins[cls.name] = cls


def _registry() -> dict[str, type[Attack]]:
    if _plugins is None:
        reload_plugins()
    assert _plugins is not None
    return {**_builtins, **_plugins}


def attack_names() -> list[str]:
    """Names of all registered attacks, built-ins and plugins, sorted."""
    return sorted(_registry())


def get_attack(name: str) -> Attack:
    """A fresh instance of the attack called ``name``."""
    registry = _registry()
    if name not in registry:
        raise AttackError(f"unknown attack {name!r}; registered: {', '.join(sorted(registry))}")
    return registry[name]()
