"""MNIST-1D (Greydanus 2020, "Scaling down deep learning"): logistic regression, MLP and CNN
trained with jaxbp's hand-written backward, beside the published test accuracies.

Data: `jaxbp.data.mnist1d()` — the `mnist1d` package's `make_dataset` on its default arguments,
seed 42, generated offline (4000 train / 1000 test sequences of length 40).
Models and training as in the reference: logistic regression (Linear 40→10); MLP 40→100→100→10
with ReLU; CNN of three Conv1D (25 channels, kernels 5/3/3, stride 2, padding 1, ReLU) then a
Linear 125→10; Adam lr 1e-2, batch 100, 6000 steps, cross-entropy. Weights start as PyTorch's
defaults do (U[±1/√fan_in], `jaxbp.init.fan_in_uniform`), biases at zero. Mini-batches are
drawn from a fresh permutation of the training set every epoch. We report the test accuracy
after the last step, mean ± standard deviation over seeds.

Full size (the README table); it took 5½ minutes on a shared, heavily loaded 2-core CPU
machine (per seed: logistic 5 s, MLP 12 s, CNN 93 s, compilation included):

    python -m experiments.mnist1d                  # 6000 steps, 3 seeds

`--quick` (make demo) runs 1500 steps and 2 seeds. Adding a model is one entry in `MODELS`.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxbp
from experiments import common
from jaxbp import data as datasets
from jaxbp import loop, losses


class Model(NamedTuple):
    build: object  # () -> Layer taking (batch, 40) float inputs, giving (batch, 10) logits
    published: float | None  # test accuracy (%) in Greydanus (2020), Table/Figure 1


W_INIT = "fan_in_uniform"  # PyTorch's default for Linear and Conv1d weights


def logistic():
    return jaxbp.Dense(10, w_init=W_INIT)


def mlp():
    return jaxbp.models.MLP([100, 100, 10], w_init=W_INIT)


def cnn(channels: int = 25):
    conv = lambda k: jaxbp.Conv1D(channels, k, stride=2, padding=1, w_init=W_INIT)
    return jaxbp.serial(
        jaxbp.Reshape((40, 1)),  # (N, 40) -> (N, 40, 1): one input channel
        conv(5),  # (N, 19, 25)
        jaxbp.Relu(),
        conv(3),  # (N, 10, 25)
        jaxbp.Relu(),
        conv(3),  # (N, 5, 25)
        jaxbp.Relu(),
        jaxbp.Flatten(),  # (N, 125)
        jaxbp.Dense(10, w_init=W_INIT),
    )


def gru(hidden: int = 6):
    """Bidirectional GRU over the 40 samples as a sequence; all 40 outputs (2 × 6 features
    each) flattened into one linear layer 480 → 10."""
    return jaxbp.serial(
        jaxbp.Reshape((40, 1)),  # (N, 40) -> (N, 40, 1): a sequence of 40 scalars
        jaxbp.bidirectional(jaxbp.GRU(hidden, return_sequences=True)),  # (N, 40, 12)
        jaxbp.Flatten(),  # (N, 480)
        jaxbp.Dense(10, w_init=W_INIT),
    )


# One entry per table row.
MODELS: dict[str, Model] = {
    "logistic": Model(logistic, 32.0),
    "MLP": Model(mlp, 68.0),
    "CNN": Model(cnn, 94.0),
    "GRU": Model(gru, 91.0),
}


# ---------------------------------------------------------------------------- training


def batch_indices(n: int, batch: int, steps: int, seed: int) -> np.ndarray:
    """(steps, batch) training indices: consecutive slices of per-epoch permutations."""
    rng = np.random.default_rng(seed)
    epochs = -(-steps * batch // n)
    order = np.concatenate([rng.permutation(n) for _ in range(epochs)])
    return order[: steps * batch].reshape(steps, batch).astype(np.int32)


def accuracy(model, params, state, x, y):
    logits = model.forward(params, state, x, train=False)[0]
    return jnp.mean(jnp.argmax(logits, -1) == y)


def train(
    model,
    data,
    *,
    seed: int,
    steps: int,
    batch: int = 100,
    lr: float = 1e-2,
    eval_every: int = 250,
    optimizer=None,
):
    """Train `model` with the manual backward (`jaxbp.loss_and_grad`) and Adam.

    The steps between evaluations run in one `lax.scan`. Returns a dict with the final test
    accuracy, the curve of (step, train loss, test accuracy) and the wall time (compile
    included).
    """
    t0 = time.perf_counter()
    loss = losses.softmax_cross_entropy()
    x_train, y_train = jnp.asarray(data["x_train"]), jnp.asarray(data["y_train"])
    x_test, y_test = jnp.asarray(data["x_test"]), jnp.asarray(data["y_test"])
    key = jax.random.key(seed)
    k_init, k_drop = jax.random.split(key)
    _, params, state = model.init(k_init, x_train.shape[1:])
    opt = optax.adam(lr) if optimizer is None else optimizer
    opt_state = opt.init(params)
    grad_fn = jaxbp.loss_and_grad(model, loss, train=True)
    idx = jnp.asarray(batch_indices(len(x_train), batch, steps, seed))

    def step(carry, inputs):
        params, state, opt_state = carry
        i, rows = inputs
        value, grads, state = grad_fn(
            params, state, x_train[rows], y_train[rows], jax.random.fold_in(k_drop, i)
        )
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), state, opt_state), value

    @jax.jit
    def run_chunk(carry, start, rows):
        steps_in_chunk = rows.shape[0]
        carry, values = jax.lax.scan(step, carry, (start + jnp.arange(steps_in_chunk), rows))
        params, state, _ = carry
        return carry, values.mean(), accuracy(model, params, state, x_test, y_test)

    def chunk_step(carry, window):  # the steps start .. start+count−1, then the test accuracy
        start, count = window
        carry, train_loss, test_acc = run_chunk(carry, start, idx[start : start + count])
        return carry, (train_loss, test_acc)

    curve = []
    params, state, _ = loop.loop(
        chunk_step,
        (params, state, opt_state),
        lambda start, count: (start, count),
        steps=steps,
        steps_per_call=eval_every,
        callbacks=[lambda t: curve.append((t.step, float(t.out[0]), float(t.out[1])))],
    )
    return {
        "test_acc": curve[-1][2],
        "train_acc": float(accuracy(model, params, state, x_train, y_train)),
        "curve": curve,
        "seconds": time.perf_counter() - t0,
        "params": params,
        "state": state,
    }


# ------------------------------------------------------------------------------ main


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="training steps (default 6000)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated rows of MODELS")
    p.add_argument("--data-seed", type=int, default=42)
    p.add_argument("--samples", type=int, default=5000, help="sequences generated (80/20 split)")
    args = p.parse_args(argv)
    steps = args.steps or (1500 if args.quick else 6000)
    n_seeds = args.seeds or (2 if args.quick else 3)
    names = [m for m in args.models.split(",") if m]
    unknown = set(names) - set(MODELS)
    if unknown:
        p.error(f"unknown models {sorted(unknown)}; choose from {list(MODELS)}")
    out = common.out_dir(args)

    data = datasets.mnist1d(seed=args.data_seed, samples=args.samples)
    results = {}
    for name in names:
        runs = [
            train(
                MODELS[name].build(),
                data,
                seed=args.seed + s,
                steps=steps,
                eval_every=min(250, steps),
            )
            for s in range(n_seeds)
        ]
        accs = np.array([r["test_acc"] for r in runs]) * 100
        results[name] = {
            "published": MODELS[name].published,
            "test_acc": accs.tolist(),
            "mean": float(accs.mean()),
            "std": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
            "train_acc": [100 * r["train_acc"] for r in runs],
            "seconds": [r["seconds"] for r in runs],
            "curves": [r["curve"] for r in runs],
        }
        print(
            f"{name}: test accuracy {accs.round(1).tolist()} %, "
            f"{np.mean(results[name]['seconds']):.1f} s per run",
            flush=True,
        )

    lines = [
        f"MNIST-1D, {steps} steps, batch 100, Adam 1e-2, {n_seeds} seeds",
        f"{'model':<10} {'published':>9} {'jaxbp (mean ± sd)':>18} {'train acc':>9} {'s/run':>6}",
    ]
    for name, r in results.items():
        pub = f"{r['published']:.0f}%" if r["published"] is not None else "-"
        lines.append(
            f"{name:<10} {pub:>9} {r['mean']:>10.1f} ± {r['std']:<4.1f}%  "
            f"{np.mean(r['train_acc']):>8.1f}% {np.mean(r['seconds']):>6.1f}"
        )
    table = "\n".join(lines)
    print(table)

    common.save_json(
        out / "mnist1d.json",
        {
            "steps": steps,
            "seeds": n_seeds,
            "batch": 100,
            "lr": 1e-2,
            "table": table,
            "results": results,
            "machine": common.machine(),
            "report": common.report(
                "MNIST-1D (Greydanus 2020)",
                "python -m experiments.mnist1d",
                [
                    common.headline(
                        f"{name}: test accuracy (%), mean of {n_seeds} seeds",
                        r["mean"],
                        "–" if r["published"] is None else f"{r['published']:g} % (published)",
                    )
                    for name, r in results.items()
                ],
                ["mnist1d.png"],
                notes=common.size_note(args, "6000 steps, 3 seeds") + f"; {steps} steps.",
            ),
        },
    )
    fig, ax = common.new_figure(figsize=(6, 4))
    for i, (name, r) in enumerate(results.items()):
        color = f"C{i}"
        curve = np.array(r["curves"])  # (seeds, points, 3)
        ax.plot(curve[0, :, 0], 100 * curve[:, :, 2].mean(0), color=color, label=f"{name} (jaxbp)")
        if r["published"] is not None:
            ax.axhline(r["published"], color=color, ls=":", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("MNIST-1D; dotted: published (Greydanus 2020)")
    ax.legend()
    common.save_figure(fig, out / "mnist1d.png")
    return results


if __name__ == "__main__":
    main()
