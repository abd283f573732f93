"""What the training loop costs: the step time of `fit` against the bare jitted step, and what
running K steps per compiled call (`lax.scan`) gains, on the digits MLP.

    python -m experiments.train_overhead [--quick]

Every number is a median over repeats of the wall time per training step, measured in one
process after compilation (the compiled functions are reused, so no compile time is counted).
Writes train_overhead.json and train_overhead.png.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp
from experiments import common
from jaxbp import data, losses, optim, train


def _median(xs):
    return float(np.median(xs))


def time_bare_steps(step, state, batches, repeat):
    """Seconds per step of `step` called once per batch (batches already on the device)."""
    times = []
    for _ in range(repeat + 1):  # the first pass warms up (compiles)
        t0 = time.perf_counter()
        for xb, yb in batches:
            state, value = step(state, xb, yb)
        jax.block_until_ready((state, value))
        times.append((time.perf_counter() - t0) / len(batches))
    return _median(times[1:]), state


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="steps per timed run")
    p.add_argument("--repeat", type=int, default=None)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # for the tests
    args = p.parse_args(argv)
    steps = args.steps or (100 if args.tiny else 500 if args.quick else 4000)
    repeat = args.repeat or (1 if args.tiny else 3 if args.quick else 7)
    ks = [1, 10, 100] if not args.tiny else [1, 10]
    steps = max(steps // max(ks) * max(ks), max(ks))
    out = common.out_dir(args)

    d = data.digits(seed=args.seed)
    x, y = d["x_train"], d["y_train"]
    model = jaxbp.MLP([args.hidden, 10])
    loss = losses.softmax_cross_entropy()
    opt = optim.adam(1e-3)
    key = jax.random.key(args.seed)
    B = args.batch
    rng = np.random.default_rng(args.seed)
    idx = rng.integers(0, len(x), size=(steps, B))
    xs, ys = jnp.asarray(x[idx]), jnp.asarray(y[idx])
    results = {}

    # 1. the bare jitted step, batches pre-staged on the device (the floor for one step/call)
    fresh = lambda: train.init_train_state(model, opt, key, (x.shape[1],), dtype=np.float32)
    for donate in (True,) if args.tiny else (True, False):
        step = train.make_train_step(model, loss, opt, donate=donate)
        batches = [(xs[i], ys[i]) for i in range(steps)]
        t, _ = time_bare_steps(step, fresh(), batches, repeat)
        results[f"bare step (donate={donate})"] = t

    # 2. K steps per compiled call
    for k in ks:
        if k == 1:
            continue
        step = train.make_train_step(model, loss, opt, steps_per_call=k)
        xk, yk = xs.reshape(steps // k, k, B, -1), ys.reshape(steps // k, k, B)
        batches = [(xk[i], yk[i]) for i in range(steps // k)]
        t, _ = time_bare_steps(step, fresh(), batches, repeat)
        results[f"bare, K={k} steps/call"] = t / k

    # 3. fit: minibatch indices from the PRNG key, gather on the device, logging, progress bar
    def time_fit(**kw):
        times = []
        for _ in range(repeat + 1):
            with contextlib.redirect_stderr(io.StringIO()):  # keep the bars out of the log
                t0 = time.perf_counter()
                train.fit(
                    model,
                    loss,
                    opt,
                    (x, y),
                    key=key,
                    steps=steps,
                    batch_size=B,
                    precision=train.Precision(dtype=np.float32),
                    **kw,
                )
                times.append((time.perf_counter() - t0) / steps)
        return _median(times[1:])  # the first run compiles (later runs reuse it)

    for k in ks:
        each_k = train.Schedule(steps_per_call=k)
        results[f"fit, K={k}, no bar"] = time_fit(schedule=each_k, progress=False)
        results[f"fit, K={k}, tqdm bar"] = time_fit(schedule=each_k, progress=True)
    if not args.tiny:
        results["fit, K=1, tqdm bar, eval every 100"] = time_fit(
            progress=True,
            eval_data=(d["x_test"], d["y_test"]),
            schedule=train.Schedule(eval_every=100),
        )

    base = results["bare step (donate=True)"]
    table = {
        name: {"us_per_step": t * 1e6, "vs_bare_step": t / base} for name, t in results.items()
    }
    print(
        f"\nper-step wall time, digits MLP 64-{args.hidden}-10, batch {B}, {steps} steps/run, "
        f"median of {repeat}:"
    )
    for name, row in table.items():
        print(f"  {name:40s} {row['us_per_step']:9.1f} µs   {row['vs_bare_step']:6.2f}× bare step")
    result = {
        "config": {
            "model": f"MLP([{args.hidden}], 10) on digits, float32, Adam",
            "batch_size": B,
            "steps_per_run": steps,
            "repeat": repeat,
            "note": "medians of wall time per step after compilation; the machine may be shared",
        },
        "per_step": table,
        "machine": common.machine(),
    }
    result["report"] = _report(table, ks, args)
    common.save_json(out / "train_overhead.json", result)
    plot(table, out / "train_overhead.png")
    return result


def plot(table, path):
    fig, ax = common.new_figure(figsize=(9, 0.45 * len(table) + 1.2))
    names = list(table)
    values = [table[n]["us_per_step"] for n in names]
    ax.barh(range(len(names)), values, color="tab:blue")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("µs per training step (median, log scale)")
    ax.set_title("training step time: bare jitted step, K steps per call, fit")
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.0f}", va="center", fontsize=8)
    common.save_figure(fig, path)


def _report(table, ks, args):
    rows = [
        common.headline(
            "fit (K = 1, tqdm bar) / bare jitted step",
            table["fit, K=1, tqdm bar"]["vs_bare_step"],
            "1.3–1.5× (README)",
        )
    ]
    if 10 in ks:
        one, ten = table["fit, K=1, no bar"], table["fit, K=10, no bar"]
        rows.append(
            common.headline(
                "fit: speed-up of 10 steps per compiled call over one",
                one["us_per_step"] / ten["us_per_step"],
                "5.8× (README)",
            )
        )
    return common.report(
        "Training-loop overhead",
        "python -m experiments.train_overhead",
        rows,
        ["train_overhead.png"],
        notes=common.size_note(args, "4000 steps, median of 7")
        + "; wall-time medians, noisy on a shared machine.",
    )


if __name__ == "__main__":
    main()
