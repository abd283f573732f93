"""Run every experiment at the size given (`--quick` for `make demo`), then build the report.

Each experiment's outcome (ok, or failed with its exception) is recorded in
`<results>/run_all.json` as it finishes, so a crash shows on the page (results/index.html,
written at the end by `experiments.report`) instead of stopping the others. The exit status
is 1 when any experiment failed.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from pathlib import Path

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
    "experiments.scaling",
    "experiments.autoencoder",
    "experiments.vae",
    "experiments.gan",
    "experiments.mixed_precision",
    "experiments.memory",
    "experiments.bench_attention",
    "experiments.char_lm",
    "experiments.graphs",
    "experiments.tree_arithmetic",
    "experiments.multitask",
    "experiments.detection_floor",
]


def _results_dir(argv) -> Path:
    from experiments import common

    args, _ = common.parser("").parse_known_args(argv)
    return common.out_dir(args)


def run_one(name: str, argv: list[str]) -> dict:
    """Run one experiment's main(argv); its outcome, never an exception (Ctrl-C aside)."""
    print(f"\n=== {name} {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    outcome = {"experiment": name, "argv": argv, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        importlib.import_module(name).main(argv)
        outcome["status"] = "ok"
    except (Exception, SystemExit) as e:  # noqa: BLE001 - recorded and shown, not hidden
        outcome.update(status="failed", error=f"{type(e).__name__}: {e}",
                       traceback=traceback.format_exc(limit=-6))  # fmt: skip
        traceback.print_exc()
    outcome["seconds"] = time.perf_counter() - t0
    print(f"=== {name} {outcome['status']} in {outcome['seconds']:.1f} s", flush=True)
    return outcome


def main(argv=None, experiments=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    experiments = EXPERIMENTS if experiments is None else experiments
    results = _results_dir(argv)
    record = {"argv": argv, "experiments": []}
    for name in experiments:
        record["experiments"].append(run_one(name, argv))
        (results / "run_all.json").write_text(json.dumps(record, indent=2) + "\n")
    failed = [o["experiment"] for o in record["experiments"] if o["status"] != "ok"]
    from experiments import report

    report.build(results, experiments)
    if failed:
        print(f"\n{len(failed)} experiment(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"\nall {len(experiments)} experiments ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
