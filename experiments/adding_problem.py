"""The adding problem: why gated cells exist.

    python -m experiments.adding_problem [--quick] [--T 100 200] [--steps 10000] [--settle 1000]
    (full size, the defaults: T = 100 and 200, 10000 steps at most, settle 1000)
    python -m experiments.adding_problem --merge a/adding_problem.json b/adding_problem.json

Hochreiter & Schmidhuber (1997), in the setup of Arjovsky, Shah & Bengio (2016): each input
step is a pair (value, marker) with value ~ U[0, 1]; exactly two markers are 1, one at a random
position in the first half of the sequence and one in the second half; the target is the sum of
the two marked values. Predicting the mean, 1, gives MSE Var(u₁ + u₂) = 1/6 ≈ 0.167; solving
it means carrying a value across ~T/2 steps.

Model `serial(cell(hidden, return_sequences=False), Dense(1))`, MSE loss, gradients from the
hand-written BPTT, `optax.rmsprop(1e-3)` after `optax.clip_by_global_norm(1.0)`, LSTM forget-gate
bias 1, a fresh batch of 50 every step. `--quick` (for `make demo`): T = 50, hidden 32, lr 3e-3,
1500 steps. `--chunk` steps run inside one compiled `lax.scan`; the curve
is the mean training MSE of each chunk (every batch is new data, so it is a test error too), and
the final MSE is measured on 2000 fresh sequences. `--settle N` ends a run once its MSE has stayed
below 0.01 for N steps. Runs split over processes (one per core, `--T`/`--cells`/`--out` each)
are joined by `--merge`. Every 10 chunks a run saves a checkpoint under
`<out>/checkpoints/<run>/`; the same command started again (after a kill) resumes from it. Writes
adding_problem.json and adding_problem.png.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxbp
from experiments import common
from jaxbp import checkpoint, loop, losses

THRESHOLD = 0.01
BASELINE = 1 / 6
CELLS = {
    "LSTM": lambda h: jaxbp.LSTM(h, return_sequences=False, forget_bias=1.0),
    "GRU": lambda h: jaxbp.GRU(h, return_sequences=False),
    "RNN(tanh)": lambda h: jaxbp.RNN(h, activation=jaxbp.Tanh, return_sequences=False),
}


def adding_batch(key, batch: int, T: int, dtype=jnp.float32):
    """x (batch, T, 2) = (value, marker), y (batch, 1) = sum of the two marked values."""
    k_val, k_first, k_second = jax.random.split(key, 3)
    values = jax.random.uniform(k_val, (batch, T), dtype)
    half = T // 2
    first = jax.random.randint(k_first, (batch,), 0, half)
    second = jax.random.randint(k_second, (batch,), half, T)
    steps = jnp.arange(T)
    markers = (steps == first[:, None]) | (steps == second[:, None])
    x = jnp.stack([values, markers.astype(dtype)], axis=-1)
    y = jnp.sum(values * markers, axis=1, keepdims=True)
    return x, y


def build(cell: str, hidden: int):
    return jaxbp.serial(CELLS[cell](hidden), jaxbp.Dense(1))


def train(cell, T, hidden, steps, batch, lr, clip, chunk, seed, settle=None, ckpt_dir=None):
    """Train one model; returns the curve (step, chunk-mean MSE), final MSE and run time.

    With `settle`, training stops once the chunk MSE has stayed below the threshold for
    `settle` further steps (the ungated RNN never gets there and runs all `steps`). With
    `ckpt_dir`, the parameters, optimizer state and curve are saved every 10 chunks, and a run
    started again with the same arguments continues from the last save (data chunk i is
    `fold_in(key, i)` either way, so the resumed run sees the same batches)."""
    model, loss = build(cell, hidden), losses.mse()
    k_init, k_data, k_test = jax.random.split(jax.random.key(seed), 3)
    _, params, state = model.init(k_init, (T, 2))
    optimizer = optax.chain(optax.clip_by_global_norm(clip), optax.rmsprop(lr))
    opt_state = optimizer.init(params)
    grad = jaxbp.models.grad.loss_and_grad(model, loss, jit=False)

    @jax.jit
    def run_chunk(params, opt_state, key):
        def step(carry, k):
            params, opt_state = carry
            x, y = adding_batch(k, batch, T)
            value, grads, _ = grad(params, state, x, y)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        (params, opt_state), values = jax.lax.scan(
            step, (params, opt_state), jax.random.split(key, chunk)
        )
        return params, opt_state, values.mean()

    @jax.jit
    def test_mse(params):
        x, y = adding_batch(k_test, 2000, T)
        return jnp.mean((model.forward(params, state, x)[0] - y) ** 2)

    curve, first, crossed = [], None, None  # first chunk below 0.01; start of the last stay
    start, seconds_before = 0, 0.0
    if ckpt_dir is not None and checkpoint.latest(ckpt_dir) is not None:
        (params, opt_state), meta = checkpoint.load(
            checkpoint.latest(ckpt_dir), like=(params, opt_state)
        )
        start, curve, seconds_before = meta["step"] // chunk, meta["curve"], meta["seconds"]
        first, crossed = meta["first"], meta["crossed"]
        print(f"    {cell} T={T}: resumed at step {meta['step']}", flush=True)
    t0 = time.perf_counter() - seconds_before
    done = [start * chunk]

    def record(tick):  # after each compiled chunk of `chunk` steps
        nonlocal first, crossed
        (params, opt_state), mse, step = tick.state, float(tick.out), tick.step
        done[0] = step
        curve.append((step, mse))
        if crossed is None and mse < THRESHOLD:
            crossed = step
            first = first or step
        elif crossed is not None and mse >= THRESHOLD:
            crossed = None  # it rose again: the crossing did not hold
        if step % (10 * chunk) == 0:
            print(f"    {cell} T={T} step {step}: MSE {mse:.4f}", flush=True)
            if ckpt_dir is not None:
                meta = {"curve": curve, "first": first, "crossed": crossed,
                        "seconds": time.perf_counter() - t0}  # fmt: skip
                checkpoint.save(ckpt_dir, step, (params, opt_state), metadata=meta, keep=2)
        if settle is not None and crossed is not None and step - crossed >= settle:
            raise loop.Stop

    def chunk_step(carry, key):
        params, opt_state, mse = run_chunk(*carry, key)
        return (params, opt_state), mse

    params, opt_state = loop.loop(
        chunk_step,
        (params, opt_state),
        lambda step, count: jax.random.fold_in(k_data, step // chunk),  # the chunk's key
        steps=steps // chunk * chunk,
        start=start * chunk,
        steps_per_call=chunk,
        callbacks=[record],
    )
    step = done[0]
    final = float(test_mse(params))
    seconds = time.perf_counter() - t0
    print(
        f"  {cell:<10} T={T:<4} final MSE {final:.4f}  crossed {THRESHOLD} at "
        f"{crossed if crossed is not None else '-'}  ({seconds:.0f} s)",
        flush=True,
    )
    return {
        "cell": cell,
        "T": T,
        "final_mse": final,
        "step_below_0.01": crossed,
        "first_step_below_0.01": first,
        "steps_run": step,
        "curve": curve,
        "seconds": seconds,
    }


def plot(runs, path):
    Ts = sorted({r["T"] for r in runs})
    fig, axes = common.new_figure(1, len(Ts), figsize=(5.5 * len(Ts), 4), squeeze=False)
    for ax, T in zip(axes[0], Ts, strict=True):
        for r in (r for r in runs if r["T"] == T):
            steps, mse = np.array(r["curve"]).T
            ax.plot(steps, mse, label=r["cell"])
        ax.axhline(BASELINE, color="gray", ls="--", lw=1, label="predict 1 (0.167)")
        ax.axhline(THRESHOLD, color="gray", ls=":", lw=1, label="0.01")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("MSE")
        ax.set_title(f"adding problem, T = {T}")
        ax.legend(fontsize=8)
    return common.save_figure(fig, path)


def run_name(cell, T, hidden, args) -> str:
    """The folder name of one run's checkpoints: every setting that changes the run."""
    name = "".join(c for c in cell if c.isalnum())
    return f"{name}_T{T}_h{hidden}_b{args.batch}_lr{args.lr:g}_clip{args.clip:g}_seed{args.seed}"


# the README's final MSE at the quick size (T = 50) and the full-size outcome
README_QUICK = {"GRU": 0.0126, "LSTM": 0.035, "RNN(tanh)": 0.178}


def report(result, quick):
    """The "report" key: each run's final MSE against the 0.01 target (gated cells) or the
    0.167 baseline (the tanh RNN, which the task defeats)."""
    rows = []
    for r in result["runs"]:
        gated = r["cell"] != "RNN(tanh)"
        ref = (f"< {THRESHOLD} (target)" if gated else f"baseline {BASELINE:.3f}: not expected "
               "to learn")  # fmt: skip
        if quick and r["cell"] in README_QUICK:
            ref += f"; README quick size {README_QUICK[r['cell']]}"
        rows.append(common.headline(
            f"{r['cell']}, T = {r['T']}: final MSE (below {THRESHOLD} from step "
            f"{r['step_below_0.01']})", r["final_mse"], ref,
            ok=(r["final_mse"] < THRESHOLD) if gated and not quick else None,
        ))  # fmt: skip
    setup = result["setup"]
    return common.report(
        "Adding problem (Hochreiter & Schmidhuber 1997)",
        "python -m experiments.adding_problem",
        rows,
        ["adding_problem.png"],
        notes=(f"quick size (--quick): T = {setup['T']}, hidden {setup['hidden']}, "
               f"{setup['steps']} steps; the full run (T = 100, 200, hidden 128) reaches < 0.01 "
               "with GRU and LSTM" if quick else
               f"T = {setup['T']}, hidden {setup['hidden']}, up to {setup['steps']} steps"),
    )  # fmt: skip


def merge(paths, out):
    """One result from several partial ones: their runs, ordered by T and cell."""
    parts = [json.loads(Path(path).read_text()) for path in paths]
    order = {cell: k for k, cell in enumerate(CELLS)}
    runs = sorted(
        (r for part in parts for r in part["runs"]), key=lambda r: (r["T"], order[r["cell"]])
    )
    setup = dict(parts[0]["setup"], T=sorted({r["T"] for r in runs}))
    result = {"setup": setup, "runs": runs, "merged_from": [str(p) for p in paths],
              "machine": parts[0]["machine"]}  # fmt: skip
    result["report"] = report(result, quick=False)
    for r in runs:
        print(f"  {r['cell']:<10} T={r['T']:<4} final MSE {r['final_mse']:.4f}  below "
              f"{THRESHOLD} from step {r['step_below_0.01']}  ({r['seconds']:.0f} s)")  # fmt: skip
    common.save_json(out / "adding_problem.json", result)
    plot(runs, out / "adding_problem.png")
    return result


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--T", type=int, nargs="+", default=None, help="sequence lengths")
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--lr", type=float, default=None, help="1e-3 (3e-3 with --quick)")
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument(
        "--settle",
        type=int,
        default=None,
        help="stop a run once its MSE has stayed below 0.01 for this many steps",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="combine the runs of several adding_problem.json files (e.g. runs split over "
        "cores) into one JSON and figure in --out, without training",
    )
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, common.out_dir(args))
    if args.quick:
        # small enough for `make demo`; a larger step size so the split shows in 1500 steps
        Ts, hidden, steps, chunk = args.T or [50], args.hidden or 32, args.steps or 1500, 50
        args.lr = args.lr or 3e-3
    else:
        Ts, hidden, steps, chunk = (
            args.T or [100, 200],
            args.hidden or 128,
            args.steps or 10000,
            100,
        )
        args.settle = args.settle or 1000
    chunk = args.chunk or chunk
    args.lr = args.lr or 1e-3
    out = common.out_dir(args)
    print(f"adding problem: T={Ts}, hidden {hidden}, {steps} steps of batch {args.batch}")
    result = {
        "setup": {
            "T": Ts,
            "hidden": hidden,
            "steps": steps,
            "batch": args.batch,
            "optimizer": f"clip_by_global_norm({args.clip}) + rmsprop({args.lr})",
            "forget_bias": 1.0,
            "chunk": chunk,
            "threshold": THRESHOLD,
            "settle": args.settle,
            "baseline_mse": BASELINE,
        },
        "runs": [],
        "machine": common.machine(),
    }
    for T in Ts:
        for cell in args.cells:
            run = train(
                cell,
                T,
                hidden,
                steps,
                args.batch,
                args.lr,
                args.clip,
                chunk,
                args.seed,
                args.settle,
                out / "checkpoints" / run_name(cell, T, hidden, args),
            )
            result["runs"].append(run)
            common.save_json(out / "adding_problem.json", result)  # partial results survive
    runs = result["runs"]
    result["report"] = report(result, quick=args.quick)
    common.save_json(out / "adding_problem.json", result)
    plot(runs, out / "adding_problem.png")
    return result


if __name__ == "__main__":
    main()
