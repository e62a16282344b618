"""The model and data zoo: data sets and models by name, self-describing model files, baseline training,
and the file-level owner and attacker operations the command line and the sweep's jobs share."""
