"""Run every experiment at the size given (`--quick` for `make demo`), then build the report.

`--jobs 2` runs the experiments in two worker processes (the slowest first, so that the two
finish together); the outcomes are recorded in the order of EXPERIMENTS whatever the order they
finish in. Each experiment's outcome (ok, or failed with its exception) is recorded in
`<results>/run_all.json` as it finishes, so a crash shows on the page (results/index.html,
written at the end by `experiments.report`) instead of stopping the others. The exit status
is 1 when any experiment failed.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from experiments import common, report
from experiments.catalog import EXPERIMENTS

# The slowest at --quick first (make demo, 2-core machine), so that two workers end together.
SLOWEST_FIRST = [
    "experiments.bench_attention",
    "experiments.backprop_cost",
    "experiments.mixed_precision",
    "experiments.memory",
    "experiments.detection_floor",
    "experiments.mnist1d",
    "experiments.graphs",
]


def _results_dir(argv) -> Path:
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


def _jobs(argv: list[str]) -> tuple[int, list[str]]:
    """`--jobs N` (run_all's own option) and the argv that every experiment gets."""
    if "--jobs" not in argv:
        return 1, argv
    i = argv.index("--jobs")
    return int(argv[i + 1]), argv[:i] + argv[i + 2 :]


def _outcomes(experiments: list[str], argv: list[str], jobs: int):
    """Yield each experiment's outcome as it finishes: in order in this process for one job,
    the slowest first in `jobs` fresh worker processes otherwise."""
    if jobs <= 1:
        yield from (run_one(name, argv) for name in experiments)
        return
    order = sorted(experiments, key=lambda n: SLOWEST_FIRST.index(n) if n in SLOWEST_FIRST else 99)
    context = multiprocessing.get_context("spawn")  # a fresh JAX in each worker, no fork
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        yield from (f.result() for f in as_completed(pool.submit(run_one, n, argv) for n in order))


def main(argv=None, experiments=None) -> int:
    jobs, argv = _jobs(list(sys.argv[1:] if argv is None else argv))
    experiments = EXPERIMENTS if experiments is None else experiments
    results = _results_dir(argv)
    record = {"argv": argv, "jobs": jobs, "experiments": []}
    for outcome in _outcomes(experiments, argv, jobs):
        record["experiments"].append(outcome)
        record["experiments"].sort(key=lambda o: experiments.index(o["experiment"]))
        (results / "run_all.json").write_text(json.dumps(record, indent=2) + "\n")
    failed = [o["experiment"] for o in record["experiments"] if o["status"] != "ok"]
    report.build(results, experiments)
    if failed:
        print(f"\n{len(failed)} experiment(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"\nall {len(experiments)} experiments ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
