"""AdvParams: active DNN IP protection by adversarial perturbation of a few parameters.

A model owner perturbs a handful of weights so accuracy collapses (``encrypt``); the positions and
original values form a ``SecretKey``; an authorised user restores the exact model (``decrypt``).
This package is the defender only: it depends on torch and cryptography, and knows nothing of data
sets or experiment tooling. Methods are plugins, registered in ``METHODS``: one module each in
``protect.methods``, or an outside package's ``advparams.methods`` entry point.
"""

from protect.budget import Budget
from protect.encryption import decrypt, encrypt
from protect.errors import ProtectError
from protect.fingerprint import state_fingerprint
from protect.key import SecretKey
from protect.registry import (
    METHODS,
    EncryptionRun,
    Method,
    check_options,
    register_method,
)

__all__ = [
    "METHODS",
    "Budget",
    "EncryptionRun",
    "Method",
    "ProtectError",
    "SecretKey",
    "check_options",
    "decrypt",
    "encrypt",
    "register_method",
    "state_fingerprint",
]
