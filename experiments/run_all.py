"""Run every experiment at the size given (`--quick` for `make demo`)."""

from __future__ import annotations

import importlib
import sys
import time

EXPERIMENTS = [
    "experiments.linear_regression",
    "experiments.mlp_digits",
    "experiments.optimizers",
    "experiments.train_overhead",
    "experiments.vanishing_gradients",
    "experiments.backprop_cost",
    "experiments.mnist1d",
    "experiments.cnn_digits",
    "experiments.bench_cnn",
    "experiments.bench_rnn",
    "experiments.adding_problem",
    "experiments.exploding_gradients",
    "experiments.graphs",
    "experiments.tree_arithmetic",
    "experiments.multitask",
]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for name in EXPERIMENTS:
        print(f"\n=== {name} {' '.join(argv)}", flush=True)
        t0 = time.perf_counter()
        importlib.import_module(name).main(argv)
        print(f"=== {name} done in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
