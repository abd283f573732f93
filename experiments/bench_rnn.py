"""Speed and memory of the hand-written BPTT against `jax.value_and_grad` of the same model.

    python -m experiments.bench_rnn [--quick]

Model: `serial(cell(hidden), Dense(1))` over (batch, T, features) with an MSE loss on every
step, for cell = RNN (tanh), LSTM, GRU. Both gradients run jit-compiled in one process, from
the same parameters and data: `jaxbp.loss_and_grad` (the hand-written backward: the reverse
scan carries only the state gradient, the weight gradients are single matmuls after it) and
`jax.value_and_grad` of the same forward. Reports the median wall time (runs interleaved, so
machine load hits both alike) and the compiled temporary memory
(`jax.jit(f).lower(...).compile().memory_analysis().temp_size_in_bytes`), and their ratios.
Targets from the issue: time ≤ 0.85× and memory ≤ 0.75× of autodiff.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import jaxbp
from experiments import common, timing
from experiments.timing import interleaved_medians  # noqa: F401  (bench_attention imports it here)
from jaxbp import losses

CELLS = {"RNN": lambda h: jaxbp.RNN(h), "LSTM": jaxbp.LSTM, "GRU": jaxbp.GRU}


def build(cell: str, hidden: int):
    return jaxbp.serial(CELLS[cell](hidden), jaxbp.Dense(1))


def gradient_functions(model, loss, state):
    """(manual, autodiff): both (params, x, y) -> (loss, grads), not yet jitted."""
    step = jaxbp.models.grad.loss_and_grad(model, loss, jit=False)

    def manual(params, x, y):
        value, grads, _ = step(params, state, x, y)
        return value, grads

    def autodiff(params, x, y):
        def value(p):
            return loss.forward(model.forward(p, state, x, train=True)[0], y)[0]

        return jax.value_and_grad(value)(params)

    return manual, autodiff


def temp_bytes(fn, *args) -> int:
    return int(jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes)


def bench(cell, T, batch, hidden, features, repeat, seed=0):
    model, loss = build(cell, hidden), losses.mse()
    _, params, state = model.init(jax.random.key(seed), (T, features))
    kx, ky = jax.random.split(jax.random.key(seed + 1))
    x = jax.random.normal(kx, (batch, T, features))
    y = jax.random.normal(ky, (batch, T, 1))
    manual, autodiff = gradient_functions(model, loss, state)
    # same numbers first: the benchmark compares two ways of computing one gradient
    (_, g1), (_, g2) = jax.jit(manual)(params, x, y), jax.jit(autodiff)(params, x, y)
    err = max(
        float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))
        for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True)
    )
    mem_manual, mem_auto = temp_bytes(manual, params, x, y), temp_bytes(autodiff, params, x, y)
    manual, autodiff = jax.jit(manual), jax.jit(autodiff)
    times = timing.interleaved_times(
        {"manual": lambda: manual(params, x, y), "autodiff": lambda: autodiff(params, x, y)},
        rounds=repeat,
        pause=0.0,
    )
    t_manual, t_auto = times.medians["manual"], times.medians["autodiff"]
    return {
        "cell": cell,
        "T": T,
        "batch": batch,
        "hidden": hidden,
        "features": features,
        "grad_rel_err": err,
        "time_manual_ms": 1e3 * t_manual,
        "time_autodiff_ms": 1e3 * t_auto,
        "time_ratio": timing.ratio(times, "manual", "autodiff"),
        "temp_manual_MiB": mem_manual / 2**20,
        "temp_autodiff_MiB": mem_auto / 2**20,
        "memory_ratio": mem_manual / mem_auto,
    }


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=None)
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--tiny", action="store_true", help=argparse_hidden())
    args = p.parse_args(argv)
    out = common.out_dir(args)
    if args.tiny:  # for the test suite only
        configs, repeat, hidden, features = [(8, 4)], 2, 8, 3
    elif args.quick:
        configs, repeat, hidden, features = [(50, 32)], args.repeat or 10, 128, args.features
    else:
        configs, repeat, hidden, features = (
            [(100, 32), (50, 32)],
            args.repeat or 30,
            128,
            args.features,
        )
    rows = []
    print(
        f"{'cell':<5} {'T':>4} {'manual ms':>10} {'autodiff ms':>11} {'time x':>7} "
        f"{'manual MiB':>10} {'autodiff MiB':>12} {'mem x':>6}"
    )
    for T, batch in configs:
        for cell in CELLS:
            r = bench(cell, T, batch, hidden, features, repeat, args.seed)
            rows.append(r)
            print(
                f"{cell:<5} {T:>4} {r['time_manual_ms']:10.2f} {r['time_autodiff_ms']:11.2f} "
                f"{r['time_ratio']:7.2f} {r['temp_manual_MiB']:10.2f} "
                f"{r['temp_autodiff_MiB']:12.2f} {r['memory_ratio']:6.2f}",
                flush=True,
            )
    result = {
        "targets": {"time_ratio": 0.85, "memory_ratio": 0.75},
        "repeat": repeat,
        "rows": rows,
        "machine": common.machine(),
    }
    result["report"] = _report(rows, result["targets"], args)
    common.save_json(out / "bench_rnn.json", result)
    return result


# the README's table (idle machine): (time ratio, memory ratio) by (cell, T)
README = {
    ("RNN", 100): (0.91, 0.69),
    ("LSTM", 100): (0.61, 0.68),
    ("GRU", 100): (0.71, 0.70),
    ("RNN", 50): (0.95, 0.69),
    ("LSTM", 50): (0.74, 0.68),
    ("GRU", 50): (0.77, 0.70),
}


def _report(rows, targets, args):
    lines = []
    for r in rows:
        ref = README.get((r["cell"], r["T"]))
        for key, i in (("time_ratio", 0), ("memory_ratio", 1)):
            lines.append(common.headline(
                f"{r['cell']}, T = {r['T']}, batch {r['batch']}: {key.replace('_', ' ')} "
                "manual / autodiff",
                r[key],
                f"≤ {targets[key]} (issue target)" + (f"; README {ref[i]}" if ref else ""),
                ok=r[key] <= targets[key],
            ))  # fmt: skip
    return common.report(
        "RNN speed and memory: manual backward vs jax.value_and_grad",
        "python -m experiments.bench_rnn",
        lines,
        notes=common.size_note(args, "T = 100 and 50, 30 repeats")
        + "; times are medians, noisy on a shared machine; memory is XLA's temp allocation.",
    )


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
