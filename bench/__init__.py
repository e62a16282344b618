"""The harness: data sets, models, the sweep's plan, jobs, Ray driver, MLflow tracking, reports, benchmarks.

The only package that imports both `protect` (the defender) and `attacks` (the attacker), and the only
place where an attack is scored against the true key.
"""
