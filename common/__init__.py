"""The ground floor every package stands on: shared torch loops, acceleration, registries, declared
parameters, atomic files and one-line errors. It imports nothing from ``protect``, ``attacks`` or ``bench``."""
