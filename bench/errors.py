"""The harness's user-facing error: the command prints its message on one line and exits with 2."""


class BenchError(ValueError):
    """Bad input to the harness (unknown data set or model, missing file, bad config value)."""
