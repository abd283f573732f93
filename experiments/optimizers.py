"""How to choose the learning rate: an SGD learning-rate sweep on the digits MLP, then SGD,
momentum, AdaGrad, RMSprop and Adam each at its best rate (chosen on a validation split).

    python -m experiments.optimizers [--quick]

Writes optimizers.json (every run: final losses, accuracies, divergence step; the best rate per
optimizer and its test accuracy), optimizers_lr_sweep.png (SGD loss curves across rates, and
final validation loss against the rate for every optimizer) and optimizers_compare.png (the
five optimizers at their best rates).
"""

from __future__ import annotations

import argparse
import math

import jax
import numpy as np

import jaxbp
from experiments import common
from jaxbp import data, losses, optim, train

# learning-rate grids (half decades); --quick runs the middle of each
SGD_SWEEP = [1e-3, 1e-2, 1e-1, 1.0, 3.0, 10.0, 100.0]
GRIDS = {
    "SGD": [1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0],
    "momentum": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
    "AdaGrad": [1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0],
    "RMSprop": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
    "Adam": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
}
QUICK_GRIDS = {
    "SGD": [1e-1, 1.0, 3.0],
    "momentum": [3e-2, 1e-1, 3e-1],
    "AdaGrad": [3e-1, 1.0, 3.0],
    "RMSprop": [3e-3, 1e-2, 3e-2],
    "Adam": [3e-3, 1e-2, 3e-2],
}
QUICK_SWEEP = [1e-3, 1e-1, 1.0, 10.0, 100.0]


def make_optimizer(name, lr):
    return {
        "SGD": lambda: optim.sgd(lr),
        "momentum": lambda: optim.sgd(lr, momentum=0.9),
        "AdaGrad": lambda: optim.adagrad(lr),
        "RMSprop": lambda: optim.rmsprop(lr),
        "Adam": lambda: optim.adam(lr),
    }[name]()


def run_one(model, loss, evaluate, name, lr, d, args, steps):
    """One fit; returns its record (curves, final metrics, divergence)."""
    eval_every = max(steps // 20 // 10 * 10, 10)
    record = {"optimizer": name, "lr": lr, "diverged_at": None}
    try:
        result = train.fit(
            model,
            loss,
            make_optimizer(name, lr),
            (d["x_train"], d["y_train"]),
            key=jax.random.key(args.seed),
            steps=steps,
            batch_size=args.batch,
            eval_data=(d["x_val"], d["y_val"]),
            schedule=train.Schedule(eval_every=eval_every, log_every=10),
            progress=False,
            # float32 whatever jax_enable_x64 says: divergence is dtype-bound
            precision=train.Precision(dtype=np.float32),
        )
        history, params = result.history, result.params
        test = evaluate(params, result.model_state, d["x_test"], d["y_test"])
        record["test_accuracy"] = float(test["accuracy"])
        record["test_loss"] = float(test["loss"])
    except train.DivergenceError as e:
        history, params = e.history, None
        record["diverged_at"] = e.step
        record["divergence_message"] = str(e).split(". ")[0]
    record["train_curve"] = [[r["step"], r["loss"]] for r in history["train"]]
    record["val_curve"] = [[r["step"], r["loss"], r["accuracy"]] for r in history["eval"]]
    if params is not None:
        record["final_train_loss"] = float(np.mean([r["loss"] for r in history["train"][-5:]]))
        record["final_val_loss"] = history["eval"][-1]["loss"]
        record["final_val_accuracy"] = history["eval"][-1]["accuracy"]
    else:
        record["final_train_loss"] = record["final_val_loss"] = math.inf
    return record


# best-rate test accuracy per optimizer in the README's table (full size, 3000 steps)
README_BEST = {"SGD": 0.983, "momentum": 0.981, "AdaGrad": 0.983, "RMSprop": 0.978, "Adam": 0.981}


def _report(summary, sweep_runs, steps, args):
    rows = [
        common.headline(
            f"{name}: test accuracy at its best rate ({s['best_lr']:g})",
            s["test_accuracy"],
            f"{README_BEST[name]} (README, full size)" if name in README_BEST else "",
        )
        for name, s in summary.items()
    ]
    diverged = [r["lr"] for r in sweep_runs if r["diverged_at"] is not None]
    rows.append(
        common.headline(
            "SGD rates that diverged (the guard stopped them)",
            ", ".join(f"{lr:g}" for lr in diverged) or "none",
            "100 diverges; 10 stalls (README)",
        )
    )
    return common.report(
        "Learning rate and optimizers (digits)",
        "python -m experiments.optimizers",
        rows,
        ["optimizers_lr_sweep.png", "optimizers_compare.png"],
        notes=common.size_note(args, "3000 steps, wider rate grids") + f"; {steps} steps per run.",
    )


def _score(record):
    """Selection criterion: final validation loss (diverged or non-finite runs lose)."""
    v = record["final_val_loss"]
    return v if math.isfinite(v) else math.inf


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="training steps per run")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # for the tests
    args = p.parse_args(argv)
    steps = args.steps or (600 if args.quick else 3000)
    sweep = QUICK_SWEEP if (args.quick or args.tiny) else SGD_SWEEP
    grids = QUICK_GRIDS if (args.quick or args.tiny) else GRIDS
    if args.tiny:  # for the test suite: a good and a diverging SGD rate, one rate for the others
        sweep = [QUICK_SWEEP[1], QUICK_SWEEP[-1]]
        grids = {k: [QUICK_SWEEP[1]] if k == "SGD" else v[:1] for k, v in QUICK_GRIDS.items()}
    out = common.out_dir(args)

    d = data.digits(seed=args.seed)
    x_tr, y_tr, x_val, y_val = data.train_test_split(
        d["x_train"], d["y_train"], test_fraction=0.2, seed=args.seed + 1
    )
    d = {**d, "x_train": x_tr, "y_train": y_tr, "x_val": x_val, "y_val": y_val}
    model = jaxbp.MLP([64, 10])  # one object: fit's compilation is shared across runs
    loss = losses.softmax_cross_entropy()
    evaluate = train.make_eval_step(model, loss)
    d = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in d.items()}

    print(f"SGD learning-rate sweep ({steps} steps each)")
    sweep_runs = []
    for lr in sweep:
        r = run_one(model, loss, evaluate, "SGD", lr, d, args, steps)
        sweep_runs.append(r)
        _print(r)

    print("\nper-optimizer grids, best rate by final validation loss")
    grid_runs = {name: [] for name in grids}
    for name, lrs in grids.items():
        for lr in lrs:
            # SGD runs already done in the sweep are reused
            done = [r for r in sweep_runs if name == "SGD" and r["lr"] == lr]
            r = done[0] if done else run_one(model, loss, evaluate, name, lr, d, args, steps)
            grid_runs[name].append(r)
            _print(r)
    best = {name: min(runs, key=_score) for name, runs in grid_runs.items()}

    summary = {
        name: {
            "best_lr": r["lr"],
            "test_accuracy": r.get("test_accuracy"),
            "final_val_loss": r["final_val_loss"],
            "final_train_loss": r["final_train_loss"],
        }
        for name, r in best.items()
    }
    print("\nbest rates:")
    for name, s in summary.items():
        print(
            f"  {name:9s} lr={s['best_lr']:<8g} val loss {s['final_val_loss']:.4f}  "
            f"test accuracy {s['test_accuracy']:.4f}"
        )

    result = {
        "config": {
            "model": "MLP([64], 10), ReLU, Xavier-uniform; softmax cross-entropy; float32",
            "data": f"digits: train/val/test = {len(x_tr)}/{len(x_val)}/{len(d['x_test'])}",
            "steps": steps,
            "batch_size": args.batch,
            "seed": args.seed,
            "selection": "final validation loss",
            "hyperparameters": "momentum 0.9; AdaGrad G0=0.1 eps=1e-7; RMSprop decay 0.9 "
            "eps=1e-8; Adam b1=0.9 b2=0.999 eps=1e-8 (optax defaults)",
        },
        "sgd_sweep": sweep_runs,
        "grids": grid_runs,
        "best": summary,
        "machine": common.machine(),
    }
    result["report"] = _report(summary, sweep_runs, steps, args)
    common.save_json(out / "optimizers.json", result)
    plot_sweep(sweep_runs, grid_runs, out / "optimizers_lr_sweep.png")
    plot_compare(best, out / "optimizers_compare.png")
    return result


def _print(r):
    if r["diverged_at"] is not None:
        print(f"  {r['optimizer']:9s} lr={r['lr']:<8g} diverged at step {r['diverged_at']}")
    else:
        print(
            f"  {r['optimizer']:9s} lr={r['lr']:<8g} train {r['final_train_loss']:.4f}  "
            f"val {r['final_val_loss']:.4f}  val acc {r['final_val_accuracy']:.4f}"
        )


def _smooth(values, width=5):
    values = np.asarray(values, dtype=float)
    if len(values) < width:
        return values
    kernel = np.ones(width) / width
    padded = np.concatenate([np.full(width - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def plot_sweep(sweep_runs, grid_runs, path):
    fig, (ax1, ax2) = common.new_figure(1, 2, figsize=(12, 4.5))
    cmap = __import__("matplotlib").colormaps["viridis"]
    top = 10.0  # ≈ 4× the initial loss ln 10; diverging runs leave the chart (× = guard stop)
    for i, r in enumerate(sweep_runs):
        curve = np.asarray(r["train_curve"], dtype=float).reshape(-1, 2)
        color = cmap(i / max(len(sweep_runs) - 1, 1))
        label = f"lr={r['lr']:g}"
        if r["diverged_at"] is not None:
            label += f" (diverged, step {r['diverged_at']})"
        finite = np.isfinite(curve[:, 1])
        ax1.plot(curve[finite, 0], _smooth(curve[finite, 1]), color=color, label=label)
        if r["diverged_at"] is not None:  # off the top of the chart: mark where it stopped
            ax1.plot([r["diverged_at"]], [top], "x", color=color, ms=10, mew=2, clip_on=False)
    ax1.set_yscale("log")
    finite_losses = [
        v for r in sweep_runs for _, v in r["train_curve"] if math.isfinite(v) and v > 0
    ]
    ax1.set_ylim(0.5 * min(finite_losses, default=1e-3), top)
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss (smoothed)")
    ax1.set_title("SGD: too small, good, too large")
    ax1.legend(fontsize=8)
    for name, runs in grid_runs.items():
        lrs = [r["lr"] for r in runs]
        vals = [r["final_val_loss"] if math.isfinite(r["final_val_loss"]) else np.nan for r in runs]
        ax2.plot(lrs, vals, "o-", label=name)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("learning rate")
    ax2.set_ylabel("final validation loss")
    ax2.set_title("final validation loss against the rate")
    ax2.legend(fontsize=8)
    common.save_figure(fig, path)


def plot_compare(best, path):
    fig, (ax1, ax2) = common.new_figure(1, 2, figsize=(12, 4.5))
    for name, r in best.items():
        curve = np.asarray(r["train_curve"], dtype=float)
        ax1.plot(curve[:, 0], _smooth(curve[:, 1]), label=f"{name} (lr={r['lr']:g})")
        val = np.asarray(r["val_curve"], dtype=float)
        ax2.plot(val[:, 0], val[:, 2], label=f"{name} (lr={r['lr']:g})")
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss (smoothed)")
    ax1.set_title("each optimizer at its best rate")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("step")
    ax2.set_ylabel("validation accuracy")
    ax2.set_ylim(0.8, 1.0)
    ax2.legend(fontsize=8)
    common.save_figure(fig, path)


if __name__ == "__main__":
    main()
