"""Attacks by name: the built-ins in ``attacks.builtin`` register with a decorator, outside packages by entry point.

A plugin package declares ``[project.entry-points."advparams.attacks"] <name> = "pkg:AttackClass"``, the name
equal to the class's ``name``. The registry (:class:`common.registry.Registry`) loads both lazily, on the first
lookup; a broken plugin is reported with a warning naming it, and the built-ins still load.
"""

from __future__ import annotations

from attacks.base import Attack, AttackError
from common.params import ParamError, check_declared
from common.registry import Registry

ENTRY_POINT_GROUP = "advparams.attacks"


def check_attack_class(name: str, cls: object) -> type[Attack]:
    """``cls`` if it is a concrete Attack subclass called ``name`` with properly declared params."""
    if not isinstance(cls, type) or not issubclass(cls, Attack):
        raise AttackError(f"{cls!r} is not a subclass of attacks.Attack")
    own = getattr(cls, "name", None)
    if own != name:
        raise AttackError(f"attack class {cls.__name__} is named {own!r}, not {name!r}")
    if cls.run is not Attack.run:
        raise AttackError(f"attack {name!r} overrides run(); implement attack() instead")
    if cls.__abstractmethods__:
        raise AttackError(f"attack {name!r} does not implement {', '.join(sorted(cls.__abstractmethods__))}")
    try:
        check_declared(getattr(cls, "params", None), f"attack {name!r}")
    except ParamError as err:
        raise AttackError(str(err)) from None
    recipes = getattr(cls, "recipes", ())
    if not isinstance(recipes, tuple):
        raise AttackError(f"attack {name!r}: 'recipes' must be a tuple of param mappings")
    for recipe in recipes:
        try:
            cls().check_params(recipe)
        except AttackError as err:
            raise AttackError(f"attack {name!r} recipe {recipe!r}: {err}") from None
    return cls


ATTACKS: Registry[type[Attack]] = Registry(
    "attack", builtins="attacks.builtin", group=ENTRY_POINT_GROUP, error=AttackError, check=check_attack_class
)


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator that makes a built-in attack available by its ``name``."""
    ATTACKS.add(getattr(cls, "name", ""), cls)
    return cls


def attack_names() -> list[str]:
    """Names of all registered attacks, built-ins and plugins, sorted."""
    return ATTACKS.names()


def get_attack(name: str) -> Attack:
    """A fresh instance of the attack called ``name``."""
    return ATTACKS.get(name)()


def reload_plugins() -> None:
    """Re-read the ``advparams.attacks`` entry points (e.g. after installing a plugin)."""
    ATTACKS.reload_plugins()
