"""Speed: the hand-written backward of CNNs against `jax.value_and_grad` of the same forward.

Both sides compute the loss and the parameter gradients of the same model on the same batch,
jit-compiled, in one process, float32:

* manual:   `jaxbp.loss_and_grad(model, loss)` — forward, then the layers' backward functions;
* autodiff: `jax.jit(jax.value_and_grad(f))` with f(θ) = loss(model.forward(θ, x), y).

Models: the MNIST-1D CNN (batch 100), a 2-D CNN on 32×32×3 inputs at batch 128 with three
conv layers (32, 64, 64 channels; the last two with stride 2; then global average pooling and
a linear layer), and the same 2-D CNN with batch norm and 2×2 max pooling in place of the
strides. Times are medians over interleaved rounds (compile excluded); ratio = manual /
autodiff, so < 1 means the manual backward is faster.

    python -m experiments.bench_cnn            # 7 rounds of 10 calls
    python -m experiments.bench_cnn --quick    # 3 rounds of 3 calls, 2-D models at batch 32
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp
from experiments import common, timing
from experiments.mnist1d import cnn as mnist1d_cnn
from jaxbp import losses


def cnn2d():
    return jaxbp.serial(
        jaxbp.Conv2D(32, 3, padding="SAME"),  # (N, 32, 32, 32)
        jaxbp.Relu(),
        jaxbp.Conv2D(64, 3, stride=2, padding="SAME"),  # (N, 16, 16, 64)
        jaxbp.Relu(),
        jaxbp.Conv2D(64, 3, stride=2, padding="SAME"),  # (N, 8, 8, 64)
        jaxbp.Relu(),
        jaxbp.GlobalAvgPool(),  # (N, 64)
        jaxbp.Dense(10),
    )


def cnn2d_bn_pool():
    return jaxbp.serial(
        jaxbp.Conv2D(32, 3, padding="SAME", bias=False),
        jaxbp.BatchNorm(),
        jaxbp.Relu(),
        jaxbp.MaxPool2D(2),  # (N, 16, 16, 32)
        jaxbp.Conv2D(64, 3, padding="SAME", bias=False),
        jaxbp.BatchNorm(),
        jaxbp.Relu(),
        jaxbp.MaxPool2D(2),  # (N, 8, 8, 64)
        jaxbp.Conv2D(64, 3, padding="SAME"),
        jaxbp.Relu(),
        jaxbp.GlobalAvgPool(),
        jaxbp.Dense(10),
    )


BENCHMARKS = {
    "MNIST-1D CNN (batch 100, 40×1)": (mnist1d_cnn, (40,), 100),
    "2-D CNN, 3 conv (batch 128, 32×32×3)": (cnn2d, (32, 32, 3), 128),
    "2-D CNN + BatchNorm + MaxPool (batch 128)": (cnn2d_bn_pool, (32, 32, 3), 128),
}


def make_steps(model, loss, params, state):
    manual = jaxbp.loss_and_grad(model, loss, train=True)

    def loss_of(params, x, y):
        pred, _, _ = model.forward(params, state, x, train=True)
        return loss.forward(pred, y)[0]

    auto = jax.jit(jax.value_and_grad(loss_of))
    return (lambda x, y: manual(params, state, x, y)[:2]), (lambda x, y: auto(params, x, y))


def bench(build, in_shape, batch, rounds, repeat, seed=0):
    model, loss = build(), losses.softmax_cross_entropy()
    k_init, k_x = jax.random.split(jax.random.key(seed))
    _, params, state = model.init(k_init, in_shape)
    x = jax.random.normal(k_x, (batch, *in_shape), jnp.float32)
    y = jnp.arange(batch) % 10
    manual, auto = make_steps(model, loss, params, state)

    # Same numbers first: the two sides must compute the same gradient.
    (lm, gm), (la, ga) = manual(x, y), auto(x, y)
    rel = max(
        float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))
        for a, b in zip(jax.tree.leaves(gm), jax.tree.leaves(ga), strict=True)
    )
    # interleaved rounds, so load changes on a shared machine hit both
    times = timing.interleaved_times(
        {"manual": lambda: manual(x, y), "autodiff": lambda: auto(x, y)},
        rounds=rounds,
        repeat=repeat,
    )
    m, a = times.medians["manual"], times.medians["autodiff"]
    return {
        "manual_ms": 1e3 * m,
        "autodiff_ms": 1e3 * a,
        "ratio": timing.ratio(times, "manual", "autodiff"),
        "loss_diff": abs(float(lm) - float(la)),
        "grad_rel_diff": rel,
    }


# the README's manual / autodiff ratios (full size, idle machine), by benchmark name prefix
README_RATIOS = {
    "MNIST-1D CNN": "0.98–1.01",
    "2-D CNN, 3 conv": "0.59",
    "2-D CNN + BatchNorm": "0.67",
}


def _readme_ratio(name):
    return next((v for k, v in README_RATIOS.items() if name.startswith(k)), "–")


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--repeat", type=int, default=None)
    p.add_argument("--only", default="", help="run benchmarks whose name contains this")
    args = p.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    repeat = args.repeat or (3 if args.quick else 10)
    out = common.out_dir(args)

    t0 = time.perf_counter()
    results = {}
    for name, (build, in_shape, batch) in BENCHMARKS.items():
        if args.only.lower() not in name.lower():
            continue
        if args.quick and len(in_shape) == 3:
            batch, name = 32, name.replace("batch 128", "batch 32")
        results[name] = r = bench(build, in_shape, batch, rounds, repeat, seed=args.seed)
        print(
            f"{name:<44} manual {r['manual_ms']:8.2f} ms  autodiff {r['autodiff_ms']:8.2f} ms"
            f"  ratio {r['ratio']:.2f}  (grad rel diff {r['grad_rel_diff']:.1e})",
            flush=True,
        )
    common.save_json(
        out / "bench_cnn.json",
        {
            "rounds": rounds,
            "repeat": repeat,
            "results": results,
            "machine": common.machine(),
            "seconds": time.perf_counter() - t0,
            "report": common.report(
                "CNN speed: manual backward vs jax.value_and_grad",
                "python -m experiments.bench_cnn",
                [
                    common.headline(
                        f"{name}: time manual / autodiff",
                        r["ratio"],
                        f"≤ 1.05 (never slower); README {_readme_ratio(name)} (idle machine)",
                        ok=r["ratio"] <= 1.05,
                    )
                    for name, r in results.items()
                ],
                ["bench_cnn.png"],
                notes=common.size_note(args, "2-D CNNs at batch 128, 7 rounds")
                + "; medians of interleaved rounds in one process.",
            ),
        },
    )
    fig, ax = common.new_figure(figsize=(7, 3))
    names = list(results)
    ypos = np.arange(len(names))
    ax.barh(ypos - 0.2, [results[n]["manual_ms"] for n in names], 0.4, label="manual backward")
    ax.barh(ypos + 0.2, [results[n]["autodiff_ms"] for n in names], 0.4, label="jax.value_and_grad")
    ax.set_yticks(ypos, names, fontsize=8)
    ax.set_xlabel("ms per loss + gradient (median)")
    ax.legend(fontsize=8)
    common.save_figure(fig, out / "bench_cnn.png")
    return results


if __name__ == "__main__":
    main()
