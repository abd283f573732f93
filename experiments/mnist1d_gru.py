"""MNIST-1D with a bidirectional GRU: the recurrent row of the MNIST-1D table.

    python -m experiments.mnist1d_gru [--quick] [--steps 6000] [--seeds 0 1 2]

Greydanus (2020), MNIST-1D: 40-step 1-D signals, 10 classes, 4000 training and 1000 test
examples, generated offline by the `mnist1d` package with its default arguments. Model (the
paper's GRU row, published 91% test accuracy): `gru_model()` = Bidirectional(GRU(6)) over the
(40, 1) sequence, all 40 outputs (40 × 12 = 480 numbers) flattened into Dense(480 → 10);
softmax cross-entropy, Adam lr 1e-2, batch 100, 6000 steps, gradients from the hand-written
BPTT. Writes mnist1d_gru.json and mnist1d_gru.png (test accuracy during training).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxbp
from experiments import common
from jaxbp import losses


def flatten() -> jaxbp.Layer:
    """(batch, *shape) -> (batch, prod(shape)); the backward reshapes the gradient back."""

    def init(key, in_shape):
        return (int(np.prod(in_shape)),), (), ()

    def forward(params, state, x, *, key=None, train=False):
        return x.reshape(x.shape[0], -1), x.shape, state

    def backward(params, shape, dy):
        return (), dy.reshape(shape)

    return jaxbp.Layer(init, forward, backward, "flatten")


def gru_model(hidden: int = 6, classes: int = 10) -> jaxbp.Layer:
    """Bidirectional GRU over (40, 1) inputs, every step's output flattened into one Dense."""
    return jaxbp.serial(
        jaxbp.Bidirectional(jaxbp.GRU(hidden, return_sequences=True)),
        flatten(),
        jaxbp.Dense(classes),
    )


def load_mnist1d(seed: int = 42):
    """The default MNIST-1D split, x reshaped to (n, 40, 1) sequences."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    d = make_dataset(args)
    as_seq = lambda a: np.asarray(a, np.float32)[..., None]
    return as_seq(d["x"]), np.asarray(d["y"]), as_seq(d["x_test"]), np.asarray(d["y_test"])


def train(data, *, steps, batch, lr, seed, eval_every):
    x, y, x_test, y_test = (jnp.asarray(a) for a in data)
    model, loss = gru_model(), losses.softmax_cross_entropy()
    k_init, k_data = jax.random.split(jax.random.key(seed))
    _, params, state = model.init(k_init, x.shape[1:])
    optimizer = optax.adam(lr)
    opt_state = optimizer.init(params)
    grad = jaxbp.models.grad.loss_and_grad(model, loss)

    @jax.jit
    def run(params, opt_state, key):
        idx = jax.random.randint(key, (eval_every, batch), 0, x.shape[0])

        def step(carry, i):
            params, opt_state = carry
            value, grads, _ = grad(params, state, x[i], y[i])
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        (params, opt_state), values = jax.lax.scan(step, (params, opt_state), idx)
        return params, opt_state, values.mean()

    @jax.jit
    def accuracy(params):
        logits = model.forward(params, state, x_test)[0]
        return jnp.mean(jnp.argmax(logits, -1) == y_test)

    curve = []
    t0 = time.perf_counter()
    for i in range(steps // eval_every):
        params, opt_state, train_loss = run(params, opt_state, jax.random.fold_in(k_data, i))
        curve.append(((i + 1) * eval_every, float(train_loss), float(accuracy(params))))
    seconds = time.perf_counter() - t0
    final = curve[-1][2]
    print(f"  seed {seed}: test accuracy {final:.3f}  ({seconds:.0f} s)", flush=True)
    return {"seed": seed, "test_accuracy": final, "curve": curve, "seconds": seconds}


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--n-train", type=int, default=None, help=argparse_suppress())
    args = p.parse_args(argv)
    steps = args.steps or (1500 if args.quick else 6000)
    seeds = args.seeds or [args.seed]
    out = common.out_dir(args)
    data = load_mnist1d()
    if args.n_train:  # the test suite's tiny run
        data = (data[0][: args.n_train], data[1][: args.n_train], data[2][:200], data[3][:200])
    eval_every = min(250, steps)
    print(f"MNIST-1D, Bidirectional(GRU(6)) + Dense(480→10): {steps} steps, seeds {seeds}")
    runs = [
        train(data, steps=steps, batch=args.batch, lr=args.lr, seed=s, eval_every=eval_every)
        for s in seeds
    ]
    accs = [r["test_accuracy"] for r in runs]
    result = {
        "model": "Bidirectional(GRU(6)) -> flatten (480) -> Dense(10)",
        "optimizer": f"adam({args.lr}), batch {args.batch}",
        "steps": steps,
        "test_accuracy_mean": float(np.mean(accs)),
        "test_accuracy_per_seed": accs,
        "published": 0.91,
        "runs": runs,
        "machine": common.machine(),
    }
    common.save_json(out / "mnist1d_gru.json", result)
    fig, ax = common.new_figure(figsize=(5.5, 4))
    for r in runs:
        s, _, acc = np.array(r["curve"]).T
        ax.plot(s, acc, label=f"seed {r['seed']}")
    ax.axhline(0.91, color="gray", ls="--", lw=1, label="published GRU (91%)")
    ax.set_xlabel("training step")
    ax.set_ylabel("test accuracy")
    ax.set_title("MNIST-1D, bidirectional GRU (hidden 6)")
    ax.legend(fontsize=8)
    common.save_figure(fig, out / "mnist1d_gru.png")
    return result


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
