"""Multi-task learning on the digits: one trunk, two heads (the digit class, and "is it ≥ 5"),
trained jointly with `parallel` and `losses.multi_task`, against the two single-task models on
equal budgets (same trunk, steps, batches and optimizer); and a check that the engine's
backward sums the heads' gradients at the fan-out.

    python -m experiments.multitask [--quick]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxbp
from experiments import common
from jaxbp import data, losses

CE, BCE = losses.softmax_cross_entropy(), losses.sigmoid_binary_cross_entropy()
CURVE_EVERY = 25


def trunk(width=64):
    return jaxbp.serial(jaxbp.Dense(width), jaxbp.Relu(), jaxbp.Dense(width), jaxbp.Relu())


def models(width=64):
    """name -> (model, loss, how to pick its target from (digit, is_high))."""
    return {
        "joint": (
            jaxbp.serial(trunk(width), jaxbp.parallel(jaxbp.Dense(10), jaxbp.Dense(1))),
            losses.multi_task(CE, BCE),
            lambda y: y,
        ),
        "digit only": (jaxbp.serial(trunk(width), jaxbp.Dense(10)), CE, lambda y: y[0]),
        "≥ 5 only": (jaxbp.serial(trunk(width), jaxbp.Dense(1)), BCE, lambda y: y[1]),
    }


def targets(digits):
    return (jnp.asarray(digits), jnp.asarray((digits >= 5)[:, None], jnp.float32))


def train(model, loss, x, y, *, key, steps, batch, lr):
    """`jaxbp.fit` with Adam on the (digit, is_high) targets; the curve holds the mean training
    loss of every CURVE_EVERY steps (each a compiled call of that many steps)."""
    result = jaxbp.fit(
        model,
        loss,
        optax.adam(lr),
        (x, y),
        key=key,
        steps=steps,
        batch_size=batch,
        schedule=jaxbp.train.Schedule(log_every=CURVE_EVERY, steps_per_call=CURVE_EVERY),
        progress=False,
    )
    values = [r["loss"] for r in result.history["train"]]
    return result.params, result.model_state, values


def head_metrics(name, model, params, state, x, y):
    out = model.forward(params, state, x)[0]
    metrics = {}
    logits = out[0] if name == "joint" else out
    if name != "≥ 5 only":
        metrics["digit_accuracy"] = float(jnp.mean(logits.argmax(-1) == y[0]))
    high = out[1] if name == "joint" else out
    if name != "digit only":
        metrics["high_accuracy"] = float(jnp.mean((high[:, 0] > 0) == (y[1][:, 0] > 0.5)))
    return metrics


def fan_out_check(seed=0, batch=16):
    """Joint gradient vs the sum of the two heads' separate gradients (float64).

    The trunk's output a feeds both heads; `parallel`'s backward returns
    δa = J₁ᵀ δ₁ + J₂ᵀ δ₂, so the trunk's gradient under L = L₁ + L₂ equals the sum of its
    gradients under L₁ alone and L₂ alone. Returns the largest difference over all leaves."""
    with jax.enable_x64(True):
        d = data.digits(seed=seed, dtype=np.float64)
        x, y = jnp.asarray(d["x_train"][:batch]), targets(d["y_train"][:batch])
        y = (y[0], y[1].astype(jnp.float64))
        model, loss, _ = models()["joint"]
        _, params, state = model.init(jax.random.key(seed), (64,))
        pred, res, _ = model.forward(params, state, x)
        _, loss_res = loss.forward(pred, y)
        d_joint = loss.backward(loss_res, 1.0)  # (δ₁, δ₂)
        g_joint, _ = model.backward(params, res, d_joint)
        zero = lambda t: jnp.zeros_like(t)
        g_1, _ = model.backward(params, res, (d_joint[0], zero(d_joint[1])))
        g_2, _ = model.backward(params, res, (zero(d_joint[0]), d_joint[1]))
        diff = jax.tree.map(lambda j, a, b: float(jnp.max(jnp.abs(j - (a + b)))), g_joint, g_1, g_2)
        auto = jax.grad(lambda p: loss.forward(model.forward(p, state, x)[0], y)[0])(params)
        vs_auto = jax.tree.map(lambda m, a: float(jnp.max(jnp.abs(m - a))), g_joint, auto)
    return {
        "max_abs_joint_minus_sum_of_heads": max(jax.tree.leaves(diff)),
        "max_abs_manual_minus_jax_grad": max(jax.tree.leaves(vs_auto)),
    }


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args(argv)
    steps = args.steps or (600 if args.quick else 3000)
    seeds = args.seeds or (2 if args.quick else 5)
    out = common.out_dir(args)
    t0 = time.perf_counter()
    d = data.digits(seed=args.seed)
    x_train, x_test = jnp.asarray(d["x_train"]), jnp.asarray(d["x_test"])
    y_train, y_test = targets(d["y_train"]), targets(d["y_test"])

    runs = {name: [] for name in models()}
    curves = {}
    for seed in range(seeds):
        key = jax.random.key(args.seed + seed)  # the same init key and batches for every model
        for name, (model, loss, pick) in models().items():
            params, state, values = train(
                model,
                loss,
                x_train,
                pick(y_train),
                key=key,
                steps=steps,
                batch=args.batch,
                lr=args.lr,
            )
            runs[name].append(head_metrics(name, model, params, state, x_test, y_test))
            curves.setdefault(name, np.asarray(values))
    summary = {
        name: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for name, rs in runs.items()
    }
    fan = fan_out_check(args.seed)

    fig, ax = common.new_figure(figsize=(5.5, 3.6))
    for i, (name, c) in enumerate(curves.items()):
        ax.semilogy(CURVE_EVERY * np.arange(1, len(c) + 1), c, c=f"C{i}", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss ({CURVE_EVERY}-step mean)")
    ax.set_title("Digits: joint (CE + BCE) vs single-task")
    ax.legend()
    common.save_figure(fig, out / "multitask.png")

    j, dig, hi = summary["joint"], summary["digit only"], summary["≥ 5 only"]
    headline = [
        {
            "metric": "digit accuracy: joint / single-task",
            "value": f"{j['digit_accuracy']:.4f} / {dig['digit_accuracy']:.4f}",
            "reference": None,
            "ok": None,
        },
        {
            "metric": "≥ 5 accuracy: joint / single-task",
            "value": f"{j['high_accuracy']:.4f} / {hi['high_accuracy']:.4f}",
            "reference": None,
            "ok": None,
        },
        {
            "metric": "fan-out: |joint trunk gradient − sum of the heads' gradients|",
            "value": fan["max_abs_joint_minus_sum_of_heads"],
            "reference": "<= 1e-12 (float64)",
            "ok": fan["max_abs_joint_minus_sum_of_heads"] <= 1e-12,
        },
    ]
    result = {
        "per_seed": runs,
        "mean": summary,
        "fan_out": fan,
        "steps": steps,
        "seeds": seeds,
        "batch": args.batch,
        "seconds": time.perf_counter() - t0,
        "machine": common.machine(),
        "report": common.report(
            "Multi-task learning on the digits",
            "python -m experiments.multitask",
            headline,
            ["multitask.png"],
            status="ok" if headline[2]["ok"] else "failed",
            notes=(f"quick size: {steps} steps, {seeds} seeds. " if args.quick else "")
            + "Trunk 64-64-64 ReLU, Adam, equal steps and batches for all three models.",
            size=common.run_size(args),
        ),
    }
    common.save_json(out / "multitask.json", result)
    print(f"mean test metrics over {seeds} seeds: {summary}")
    print(f"fan-out check: {fan}")
    return result


if __name__ == "__main__":
    main()
