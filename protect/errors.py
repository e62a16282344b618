"""The defender's user-facing error.

Every refusal (bad budget, wrong key, damaged key file) is raised as ``ProtectError`` with a one-line
message naming the offending thing, so the CLI can print it as ``advparams: error: <message>``.
"""

from __future__ import annotations

from common.errors import UserError


class ProtectError(UserError):
    """Bad input to ``protect``: the operation was refused and nothing was changed."""
