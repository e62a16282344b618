"""The repository's benchmark programs (not part of the installed package): ``python -m benchmarks.paper``
and ``python -m benchmarks.speed`` from the repository root write the sections of BENCHMARKS.md."""
