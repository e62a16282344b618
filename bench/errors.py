"""The harness's user-facing error: the command prints its message on one line and exits with 2."""

from common.errors import UserError


class BenchError(UserError):
    """Bad input to the harness (unknown data set or model, missing file, bad config value)."""
