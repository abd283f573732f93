"""Experiment scripts: each has `main(argv=None)`, a `--quick` size, and writes JSON and PNG
results under `results/`."""
