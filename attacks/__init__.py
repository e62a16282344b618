"""The attacker's side of the AdvParams benchmark: attack plugins, their registry and tuning.

An attack sees the encrypted model, its own data and its budget, never the key, so this package
imports nothing from ``protect`` or ``bench``. The built-in attacks live in ``attacks.builtin``, one
module per attack; the registry ``ATTACKS`` finds them, and plugins, on its first lookup.
"""

from attacks.base import (
    Attack,
    AttackerBudget,
    AttackerData,
    AttackError,
    AttackResult,
    ComputeMeter,
    Param,
    Report,
)
from attacks.registry import (
    ATTACKS,
    ENTRY_POINT_GROUP,
    attack_names,
    get_attack,
    register_attack,
    reload_plugins,
)
from attacks.tuning import TrialRecord, TuningResult, tune

__all__ = [
    "ATTACKS",
    "ENTRY_POINT_GROUP",
    "Attack",
    "AttackError",
    "AttackResult",
    "AttackerBudget",
    "AttackerData",
    "ComputeMeter",
    "Param",
    "Report",
    "TrialRecord",
    "TuningResult",
    "attack_names",
    "get_attack",
    "register_attack",
    "reload_plugins",
    "tune",
]
