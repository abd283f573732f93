"""On a GPU or TPU: the gradient-check table in float32 and bfloat16, the attention and GPT-step
benchmarks and `backprop_cost --quick`, all on the default device, into one JSON that names it.

    python -m experiments.accelerator            # on the accelerator (results/accelerator.json)
    python -m experiments.accelerator --tiny     # seconds, on any machine (the test suite's)
    python -m experiments.accelerator --parts check      # one part: check, bench, backprop_cost
    make accelerator

**No GPU or TPU run has been committed yet: the GPU figures are pending.** The command runs
anywhere; on a CPU it measures the CPU, says so under "device", and its report is "partial".

What each part means:

* **check table, float32** — every registry case (`jaxbp.cases`), its manual backward under
  `jax.jit` on the device against `jax.vjp` of its forward on the device, passing at relative
  error ≤ `jaxbp.check.F32_RTOL` (1e-4). Matrix products run at
  `jax.default_matmul_precision("highest")` (`--matmul-precision` changes it): a GPU may
  otherwise round float32 products to TF32 (10 significant bits), which is a property of the
  hardware setting, not of a backward.
* **check table, bfloat16** — forward and backward in bfloat16 on the device, both the manual
  backward and `jax.vjp`, judged against the float64 truth (jax.vjp in float64 at the same
  upcast inputs; float64 runs on a GPU, not on a TPU): a leaf passes when
  manual error ≤ 2 × jax.vjp's error + `jaxbp.check.HALF_ULPS` ulps of bfloat16 (the rule of
  `jaxbp.check`'s module docstring). It shows the hand-written backward loses no more precision
  than autodiff does in the same dtype; finite differences are skipped (bfloat16 resolves no
  step small enough).
* **bench** — `experiments.bench`'s attention and gpt workloads (ratios manual / autodiff).
* **backprop_cost** — `python -m experiments.backprop_cost --quick` (its own JSON beside this
  one); its manual / autodiff ratio per workload is copied here.

The JSON: {"device": {backend, device_kind, devices}, "check_table": {dtype: {rows, passed,
failed}}, "bench": ..., "backprop_cost": ..., "machine", "report"}.
"""

from __future__ import annotations

import contextlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import backprop_cost, bench, common

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def device_info() -> dict:
    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "devices": [str(d) for d in devices],
        "count": len(devices),
        "accelerator": jax.default_backend() != "cpu",
    }


def registry_cases(tiny: bool):
    """The registry's cases; `tiny`: the first layer, loss and model only."""
    from jaxbp.cases import CASES  # the one place this command reads the registry

    if not tiny:
        return list(CASES)
    return [next(c for c in CASES if c.kind == kind) for kind in ("layer", "loss", "model")]


def check_case(case, dtype, *, seed=0):
    """One registry case under jit in `dtype`, as the check table's f32/bf16 columns run it
    (`python -m jaxbp.cases`, moving to `python -m jaxbp.cases`; no finite differences under
    jit): the one call to adapt if the registry's interface moves."""
    return case.run(
        np.random.default_rng(seed), batch=3, dtype=dtype, jit=True, finite_diff=False,
        raise_on_fail=False,
    )  # fmt: skip


def check_table(cases, dtype_name: str, *, matmul_precision: str | None, seed: int = 0) -> dict:
    dtype = DTYPES[dtype_name]
    precision = (
        jax.default_matmul_precision(matmul_precision)
        if matmul_precision and dtype_name == "float32"
        else contextlib.nullcontext()
    )
    rows = []
    with precision:
        for case in cases:
            t0 = time.perf_counter()
            try:
                report = check_case(case, dtype, seed=seed)
            except Exception as e:  # noqa: BLE001 - a crash is a failure to report
                rows.append({"case": case.name, "ok": False, "error": f"{type(e).__name__}: {e}"})
                continue
            results = report.results
            rows.append({
                "case": case.name,
                "ok": bool(report.ok),
                "manual_rel_err": max((r.rel_err for r in results), default=None),
                "autodiff_rel_err": max((r.autodiff_err or 0.0 for r in results), default=None)
                if dtype_name != "float32" else None,
                "problems": list(report.problems),
                "seconds": time.perf_counter() - t0,
            })  # fmt: skip
    passed = sum(r["ok"] for r in rows)
    used = matmul_precision if dtype_name == "float32" else "default"
    return {"rows": rows, "passed": passed, "failed": len(rows) - passed, "matmul_precision": used}


def run_backprop_cost(out, tiny: bool) -> dict:
    """`backprop_cost --quick` (tiny: one LSTM row, one round), its JSON in `out`."""
    argv = ["--tiny", "--only", "lstm", "--rounds", "1"] if tiny else ["--quick"]
    result = backprop_cost.main([*argv, "--out", str(out)])
    rows = {r["name"]: r["manual_over_autodiff"] for r in result["rows"]}
    return {"command": "python -m experiments.backprop_cost " + " ".join(argv),
            "json": str(out / "backprop_cost.json"), "manual_over_autodiff": rows}  # fmt: skip


PARTS = ("check", "bench", "backprop_cost")


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a few cases, tiny sizes: seconds")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                   help="only these parts (split a long run; give each its own --out)")  # fmt: skip
    p.add_argument("--matmul-precision", default="highest", help="for the float32 check table")
    args = p.parse_args(argv)
    out = common.out_dir(args)
    t0 = time.perf_counter()
    device = device_info()
    print(f"device: {device['backend']} {device['device_kind']} ({device['count']})", flush=True)
    result = {"device": device, "parts": args.parts}
    if "check" in args.parts:
        result["check_table"] = check_tables(registry_cases(args.tiny), args.matmul_precision)
    if "bench" in args.parts:
        size = "tiny" if args.tiny else "full"  # bench's full attention sweep and GPT step
        workloads = bench.run(["attention", "gpt"], size)
        result["bench"] = {"size": size, "workloads": workloads,
                           "ratios": bench.flat_ratios(workloads)}  # fmt: skip
    if "backprop_cost" in args.parts:
        sub = out / "accelerator_backprop_cost"
        sub.mkdir(parents=True, exist_ok=True)
        result["backprop_cost"] = run_backprop_cost(sub, args.tiny)
    result.update(machine=common.machine(), seconds=time.perf_counter() - t0)
    result["report"] = _report(result, args)
    common.save_json(out / "accelerator.json", result)
    return result


def check_tables(cases, matmul_precision) -> dict:
    tables = {}
    for name in DTYPES:
        tables[name] = t = check_table(cases, name, matmul_precision=matmul_precision)
        print(f"check table, {name}: {t['passed']} passed, {t['failed']} failed", flush=True)
        for row in t["rows"]:
            if not row["ok"]:
                print(f"  FAIL {row['case']}: {row.get('error') or row['problems']}")
    return tables


def _report(result, args):
    device = result["device"]
    lines = [
        common.headline(f"check table, {name}: cases passed", t["passed"],
                        f"all {len(t['rows'])}", ok=t["failed"] == 0)
        for name, t in result.get("check_table", {}).items()
    ]  # fmt: skip
    lines += [
        common.headline(key, value, "≤ 1.0", ok=value <= 1.0)
        for key, value in result.get("bench", {}).get("ratios", {}).items()
    ]
    where = f"{device['backend']} ({device['device_kind']})"
    notes = f"ran on {where}" + ("" if device["accelerator"] else ": no accelerator, so partial")
    if args.tiny:
        notes += "; tiny size (the test suite's): three check cases, tiny benchmarks"
    complete = device["accelerator"] and not args.tiny and len(args.parts) == len(PARTS)
    return common.report(
        "On the accelerator: check table (float32, bfloat16), attention, GPT step, backprop cost",
        "python -m experiments.accelerator",
        lines,
        status="ok" if complete and all(h["ok"] for h in lines) else "partial",
        notes=notes,
    )


if __name__ == "__main__":
    main()
