"""An MLP on scikit-learn's digits, trained with the hand-written backward — and the same model
from the same initialization trained with `jax.value_and_grad`, to show the two loss curves
are the same curve (float64).

    python -m experiments.mlp_digits [--quick]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxbp
from experiments import common
from jaxbp import data, loop, losses


def build(hidden=(128, 128)):
    return jaxbp.MLP([*hidden, 10], activation=jaxbp.Relu, w_init="he_normal")


def make_epoch(grad_fn, optimizer, batch_size):
    """One jit-compiled epoch: scan over the minibatches of a permutation."""

    def epoch(params, opt_state, x, y, perm):
        n_batches = perm.shape[0] // batch_size
        idx = perm[: n_batches * batch_size].reshape(n_batches, batch_size)

        def step(carry, batch):
            params, opt_state = carry
            value, grads = grad_fn(params, x[batch], y[batch])
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        (params, opt_state), values = jax.lax.scan(step, (params, opt_state), idx)
        return params, opt_state, values

    return jax.jit(epoch)


def _shuffles(key, n):
    """A fresh permutation of the n rows per epoch, from a chain of key splits."""
    while True:
        key, sub = jax.random.split(key)
        yield jax.random.permutation(sub, n)


def accuracy(model, params, state, x, y):
    logits = model.forward(params, state, x)[0]
    return float(jnp.mean(jnp.argmax(logits, axis=-1) == y))


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args(argv)
    epochs = args.epochs or (40 if args.quick else 80)
    out = common.out_dir(args)

    with jax.enable_x64(True):
        d = data.digits(seed=args.seed, dtype=np.float64)
        x_train, y_train = jnp.asarray(d["x_train"]), jnp.asarray(d["y_train"])
        x_test, y_test = jnp.asarray(d["x_test"]), jnp.asarray(d["y_test"])
        model, loss = build(), losses.softmax_cross_entropy()
        _, params0, state = model.init(jax.random.key(args.seed), (64,))
        optimizer = optax.adam(args.lr)

        manual = jaxbp.models.loss_and_grad(model, loss, jit=False)

        def manual_grad(params, x, y):
            value, grads, _ = manual(params, state, x, y)
            return value, grads

        def autodiff_grad(params, x, y):
            return jax.value_and_grad(
                lambda p: loss.forward(model.forward(p, state, x, train=True)[0], y)[0]
            )(params)

        runs = {}
        for name, grad_fn in (("manual", manual_grad), ("autodiff", autodiff_grad)):
            epoch = make_epoch(grad_fn, optimizer, args.batch)
            curve = []
            t0 = time.perf_counter()

            def epoch_step(carry, perm, epoch=epoch):  # one compiled call: a whole epoch
                params, opt_state, values = epoch(*carry, x_train, y_train, perm)
                return (params, opt_state), values

            params, _ = loop.loop(
                epoch_step,
                (params0, optimizer.init(params0)),
                _shuffles(jax.random.key(args.seed + 1), x_train.shape[0]),  # same for both
                steps=epochs,
                callbacks=[lambda tick: curve.append(np.asarray(tick.out))],
            )
            runs[name] = {
                "curve": np.concatenate(curve),
                "seconds": time.perf_counter() - t0,
                "test_accuracy": accuracy(model, params, state, x_test, y_test),
                "train_accuracy": accuracy(model, params, state, x_train, y_train),
            }

    diff = np.abs(runs["manual"]["curve"] - runs["autodiff"]["curve"])
    result = {
        "model": f"MLP 64-128-128-10, ReLU, He init; Adam lr {args.lr:g}, batch {args.batch}, "
        f"{epochs} epochs, float64",
        "test_accuracy_manual": runs["manual"]["test_accuracy"],
        "test_accuracy_autodiff": runs["autodiff"]["test_accuracy"],
        "train_accuracy_manual": runs["manual"]["train_accuracy"],
        "steps": int(diff.size),
        "max_loss_curve_difference": float(diff.max()),
        "final_loss_manual": float(runs["manual"]["curve"][-1]),
        "seconds_manual": runs["manual"]["seconds"],
        "seconds_autodiff": runs["autodiff"]["seconds"],
    }
    result["report"] = common.report(
        "Digits MLP 64-128-128-10, manual backward vs jax.value_and_grad",
        "python -m experiments.mlp_digits",
        [
            common.headline("test accuracy (manual backward)", result["test_accuracy_manual"],
                            "0.983 (README, quick size)"),
            common.headline(f"max |loss manual − loss autodiff| over {diff.size} steps",
                            result["max_loss_curve_difference"],
                            "float64 rounding: ≤ 1e-10 (README 4.4e-16)",
                            ok=result["max_loss_curve_difference"] <= 1e-10),
        ],
        ["mlp_digits.png"],
        notes=common.size_note(args, "80 epochs") + "; same init and batches for both runs.",
    )  # fmt: skip
    common.save_json(out / "mlp_digits.json", result)

    fig, (ax1, ax2) = common.new_figure(1, 2, figsize=(11, 4))
    steps = np.arange(1, diff.size + 1)
    ax1.semilogy(steps, runs["manual"]["curve"], "C0", lw=1.5, label="manual backward")
    ax1.semilogy(steps, runs["autodiff"]["curve"], "C1--", lw=1, label="jax.value_and_grad")
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    ax1.set_title(f"Digits MLP: test accuracy {result['test_accuracy_manual']:.3f}")
    ax1.legend()
    ax2.semilogy(steps, np.maximum(diff, 1e-18), "C2")
    ax2.set_xlabel("step")
    ax2.set_ylabel("|loss manual − loss autodiff|")
    ax2.set_title(f"max difference {result['max_loss_curve_difference']:.1e}")
    common.save_figure(fig, out / "mlp_digits.png")

    print(
        f"test accuracy: manual {result['test_accuracy_manual']:.4f}, "
        f"autodiff {result['test_accuracy_autodiff']:.4f}"
    )
    print(f"max |loss_manual − loss_autodiff| over {diff.size} steps: {diff.max():.2e}")
    return result


if __name__ == "__main__":
    main()
