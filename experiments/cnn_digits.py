"""A small 2-D CNN with batch norm and dropout on scikit-learn's 8×8 digits.

    Conv2D(16, 3, SAME) → BatchNorm → ReLU → Conv2D(32, 3, SAME) → BatchNorm → ReLU
    → MaxPool2D(2) → Flatten → Dropout(0.3) → Dense(64) → ReLU → Dropout(0.3) → Dense(10)

Trained with the hand-written backward (`jaxbp.loss_and_grad`), Adam lr 3e-3, batch 64;
batch norm uses batch statistics in training and its running averages at test time, dropout
is on only in training. 1438 training / 359 test images (`jaxbp.data.digits(image=True)`).

    python -m experiments.cnn_digits            # 1000 steps, 3 seeds
    python -m experiments.cnn_digits --quick    # 300 steps, 1 seed
"""

from __future__ import annotations

import numpy as np
import optax

import jaxbp
from experiments import common
from experiments.mnist1d import train
from jaxbp import data as datasets


def cnn(dropout: float = 0.3):
    return jaxbp.serial(
        jaxbp.Conv2D(16, 3, padding="SAME", bias=False, w_init="he_normal"),  # (N, 8, 8, 16)
        jaxbp.BatchNorm(),
        jaxbp.Relu(),
        jaxbp.Conv2D(32, 3, padding="SAME", bias=False, w_init="he_normal"),  # (N, 8, 8, 32)
        jaxbp.BatchNorm(),
        jaxbp.Relu(),
        jaxbp.MaxPool2D(2),  # (N, 4, 4, 32)
        jaxbp.Flatten(),  # (N, 512)
        jaxbp.Dropout(dropout),
        jaxbp.Dense(64, w_init="he_normal"),
        jaxbp.Relu(),
        jaxbp.Dropout(dropout),
        jaxbp.Dense(10),
    )


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="training steps (default 1000)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3)")
    args = p.parse_args(argv)
    steps = args.steps or (300 if args.quick else 1000)
    n_seeds = args.seeds or (1 if args.quick else 3)
    out = common.out_dir(args)

    data = datasets.digits(image=True)
    runs = [
        train(
            cnn(),
            data,
            seed=args.seed + s,
            steps=steps,
            batch=64,
            eval_every=min(200, steps),
            optimizer=optax.adam(3e-3),
        )
        for s in range(n_seeds)
    ]
    accs = np.array([r["test_acc"] for r in runs]) * 100
    summary = {
        "steps": steps,
        "seeds": n_seeds,
        "test_acc": accs.tolist(),
        "mean": float(accs.mean()),
        "min": float(accs.min()),
        "train_acc": [100 * r["train_acc"] for r in runs],
        "seconds": [r["seconds"] for r in runs],
        "curves": [r["curve"] for r in runs],
        "machine": common.machine(),
        "report": common.report(
            "CNN on digits (batch norm, dropout)",
            "python -m experiments.cnn_digits",
            [
                common.headline(
                    f"test accuracy (%), mean of {n_seeds} seed(s)",
                    float(accs.mean()),
                    "99.07 % mean over 3 seeds (README, full size)",
                )
            ],
            ["cnn_digits.png"],
            notes=common.size_note(args, "1000 steps, 3 seeds") + f"; {steps} steps.",
        ),
    }
    print(
        f"digits CNN: test accuracy {accs.round(2).tolist()} % (mean {accs.mean():.2f}%), "
        f"{np.mean(summary['seconds']):.1f} s per run"
    )
    common.save_json(out / "cnn_digits.json", summary)

    fig, ax = common.new_figure(figsize=(5, 3.5))
    for i, r in enumerate(runs):
        curve = np.array(r["curve"])
        ax.plot(curve[:, 0], 100 * curve[:, 2], label=f"seed {args.seed + i}")
    ax.set_xlabel("step")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(80, 100)
    ax.set_title("digits, CNN with batch norm and dropout")
    ax.legend()
    common.save_figure(fig, out / "cnn_digits.png")
    return summary


if __name__ == "__main__":
    main()
