"""`python -m jaxbp.cases`: check every built-in layer, loss and model; print one table.

Each case is checked at `--draws` random draws (shapes, hyperparameters, batch size, values),
draw i at seed S + i, in float64 (against jax.vjp and finite differences), float64 and float32
under jit, and bfloat16 and float16 under jit (against the float64 truth). A failure prints
its seed, the shapes it was drawn at and the command that replays it alone:

    python -m jaxbp.cases --case NAME --seed S --draws 1
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import jax.numpy as jnp

from jaxbp import check
from jaxbp.cases import CASES
from jaxbp.cases.base import draw_batch, run_case

MODES = (
    ("f64", jnp.float64, False),
    ("f64jit", jnp.float64, True),
    ("f32", jnp.float32, True),
    ("bf16", jnp.bfloat16, True),
    ("f16", jnp.float16, True),
)


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m jaxbp.cases", description=__doc__)
    parser.add_argument("-k", default="", help="only cases whose name contains this")
    parser.add_argument("--case", default=None, help="only the case of exactly this name")
    parser.add_argument("--seed", type=int, default=0, help="the first draw's seed")
    parser.add_argument("--draws", type=int, default=1, help="draws per case (seeds S, S+1, …)")
    return parser.parse_args(argv)


def check_draw(case, seed: int) -> tuple[dict, str]:
    """Every mode of one case at one draw: ({mode: Report}, "ok" | what failed)."""
    rows = {}
    for label, dtype, jit in MODES:
        try:
            report = run_case(
                case, seed=seed, dtype=dtype, jit=jit, finite_diff=not jit, raise_on_fail=False
            )
        except Exception as e:  # noqa: BLE001 - a crash is a failure to report, not to hide
            return rows, f"ERROR {label}: {type(e).__name__}: {e}"
        rows[label] = report
        if not report.ok:
            return rows, f"FAIL ({label})\n{report}"
    return rows, "ok"


def main(argv=None) -> int:
    args = _parse(argv)
    cases = [
        c
        for c in CASES
        if (args.case is None or c.name == args.case) and args.k.lower() in c.name.lower()
    ]
    w = max(len(c.name) for c in cases) if cases else 4
    header = (
        f"{'case':<{w}} {'kind':<6} {'vjp rel err':>11} {'fd rel err':>10} "
        f"{'f32 jit rel':>11} {'bf16 manual/vjp':>17} {'f16 manual/vjp':>17} {'time s':>7}  result"
    )
    print(header)
    print("-" * len(header))
    failures = 0
    for case in cases:
        t0 = time.perf_counter()
        worst, status = {}, "ok"
        for seed in range(args.seed, args.seed + args.draws):
            rows, status = check_draw(case, seed)
            _keep_worst(worst, rows)
            if status != "ok":
                shapes = next((r.inputs for r in rows.values()), "") or "(crashed before a report)"
                replay = f"python -m jaxbp.cases --case '{case.name}' --seed {seed} --draws 1"
                status += (
                    f"\n  draw: seed {seed}, batch {draw_batch(seed)}, at {shapes}"
                    f"\n  replay: {replay}"
                )
                break
        print(f"{_row(case, w, worst)} {time.perf_counter() - t0:7.2f}  {status}", flush=True)
        failures += status != "ok"
    print("-" * len(header))
    print(
        f"tolerances: vjp {check.VJP_RTOL:.0e} (f64), finite diff {check.FD_RTOL:.0e}, "
        f"f32 {check.F32_RTOL:.0e}; {args.draws} draw(s) per case from seed {args.seed}"
    )
    print(
        "bf16/f16: manual and jax.vjp rel err vs the float64 truth; pass: manual ≤ 2 × vjp + "
        f"{check.HALF_ULPS} ulps"
    )
    print(f"{len(cases) - failures} passed, {failures} failed")
    return 1 if failures else 0


def _keep_worst(worst: dict, rows: dict) -> None:
    """Per mode, the report with the largest error over the draws so far."""
    for label, report in rows.items():
        old = worst.get(label)
        if old is None or max(report.max_rel_err.values(), default=0) > max(
            old.max_rel_err.values(), default=0
        ):
            worst[label] = report


def _row(case, w, reports) -> str:
    errs = {k: r.max_rel_err for k, r in reports.items()}
    vjp = max(
        (e.get("jax.vjp", math.nan) for k, e in errs.items() if k.startswith("f64")),
        default=math.nan,
    )
    fd = errs.get("f64", {}).get("finite diff", math.nan)
    f32 = errs.get("f32", {}).get("jax.vjp", math.nan)
    half = [_half_errors(reports.get(label)) for label in ("bf16", "f16")]
    return (
        f"{case.name:<{w}} {case.kind:<6} {vjp:11.2e} {fd:10.2e} {f32:11.2e} "
        f"{half[0]:>17} {half[1]:>17}"
    )


def _half_errors(report) -> str:
    """'manual/vjp' largest relative errors vs the float64 truth, for the table."""
    if report is None or not report.results:
        return "-"
    manual = max(r.rel_err for r in report.results)
    vjp = max(r.autodiff_err or 0.0 for r in report.results)
    return f"{manual:.1e}/{vjp:.1e}"


if __name__ == "__main__":
    sys.exit(main())
