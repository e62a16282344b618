"""The built-in attacks, one module per attack.

Each module defines one :class:`attacks.Attack` subclass decorated with ``@register_attack``. The registry
imports every module of this package on its first lookup, so a new built-in attack is one new file here.
"""
