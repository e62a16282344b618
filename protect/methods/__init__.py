"""Encryption methods, one per file; importing this package registers them all in ``METHODS``."""

from protect.methods import advparams, random

__all__ = ["advparams", "random"]
