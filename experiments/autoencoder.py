"""Autoencoders on the 8×8 digits (pixels in [0, 1]) with a code of size 8, against PCA with 8
components: a linear autoencoder (at best PCA), a nonlinear one (must beat PCA), and a denoising
one (noisy inputs, clean targets).

    python -m experiments.autoencoder [--quick]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp
from experiments import common
from jaxbp import losses
from jaxbp.models import autoencoder

CODE = 8


def digits01(seed=0, test_fraction=0.2):
    """scikit-learn's digits with pixels scaled to [0, 1] (not centred), float32."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    x_train, y_train, x_test, y_test = jaxbp.data.train_test_split(
        x, bunch.target.astype(np.int32), test_fraction, seed
    )
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def pca_reconstruct(x_train, x, k):
    """Project x on the top-k principal directions of x_train and map back."""
    mean = x_train.mean(axis=0)
    _, _, vt = np.linalg.svd(x_train - mean, full_matrices=False)
    basis = vt[:k]  # (k, 64)
    return (x - mean) @ basis.T @ basis + mean


def build(kind, hidden):
    if kind == "linear":
        return autoencoder.Autoencoder(jaxbp.Dense(CODE), jaxbp.Dense(64))
    encoder = jaxbp.MLP([hidden, CODE], activation=jaxbp.Elu)
    decoder = jaxbp.MLP([hidden, 64], activation=jaxbp.Elu, out_activation=jaxbp.Sigmoid)
    return autoencoder.Autoencoder(encoder, decoder)


def train(model, x_train, *, seed, epochs, batch, lr, noise=0.0):
    """Adam on the MSE between model(x̃) and x, x̃ = x + noise·N(0, 1) (x̃ = x without noise)."""
    _, params, state = model.init(jax.random.key(seed), (64,))
    grad_fn = jaxbp.models.loss_and_grad(model, losses.mse(), jit=False)

    def value_and_grad(params, x, key):
        x_in = x + noise * jax.random.normal(key, x.shape) if noise else x
        return grad_fn(params, state, x_in, x)[:2]

    params, curve = common.adam_epochs(
        value_and_grad, params, x_train, seed=seed, epochs=epochs, batch=batch, lr=lr
    )
    return params, state, curve


def mse(a, b):
    return float(np.mean((np.asarray(a) - np.asarray(b)) ** 2))


def figure(x_test, rows, out):
    n = 10
    fig, axes = common.new_figure(len(rows), n, figsize=(n * 0.9, len(rows) * 1.0))
    for r, (label, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(np.clip(imgs[c], 0, 1).reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    return common.save_figure(fig, out / "autoencoder_reconstructions.png").name


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--noise", type=float, default=0.3, help="std of the denoising input noise")
    args = p.parse_args(argv)
    epochs = args.epochs or (60 if args.quick else 400)
    out = common.out_dir(args)
    t0 = time.perf_counter()

    d = digits01(args.seed)
    x_train, x_test = d["x_train"], d["x_test"]
    rng = np.random.default_rng(args.seed + 7)
    x_test_noisy = (x_test + args.noise * rng.normal(size=x_test.shape)).astype(np.float32)
    pca = pca_reconstruct(x_train, x_test, CODE)
    pca_noisy = pca_reconstruct(x_train, x_test_noisy, CODE)

    recon, table = {}, {"PCA (8 components)": {"test_mse": mse(pca, x_test)}}
    kw = dict(seed=args.seed, epochs=epochs, batch=args.batch, lr=args.lr)
    for key, kind, noise in (
        ("linear", "linear", 0.0),
        ("nonlinear", "mlp", 0.0),
        ("denoising", "mlp", args.noise),
    ):
        model = build(kind, args.hidden)
        params, state, curve = train(model, x_train, noise=noise, **kw)
        x_in = x_test_noisy if noise else x_test
        recon[key] = np.asarray(model.forward(params, state, jnp.asarray(x_in))[0])
        table[key] = {"test_mse": mse(recon[key], x_test), "final_train_loss": float(curve[-1])}
        print(f"{key:<10} test MSE {table[key]['test_mse']:.5f}")
    table["PCA on noisy inputs"] = {"test_mse": mse(pca_noisy, x_test)}
    table["noisy inputs themselves"] = {"test_mse": mse(x_test_noisy, x_test)}
    print(f"PCA        test MSE {table['PCA (8 components)']['test_mse']:.5f}")

    fig_name = figure(
        x_test,
        [
            ("original", x_test),
            ("PCA-8", pca),
            ("linear AE", recon["linear"]),
            ("MLP AE", recon["nonlinear"]),
            (f"noisy (σ {args.noise})", x_test_noisy),
            ("denoising AE", recon["denoising"]),
        ],
        out,
    )
    result = {
        "setup": f"digits in [0, 1], 1437 train / 360 test; code {CODE}; MLP AE 64 → "
        f"{args.hidden} → 8 → {args.hidden} → 64 (ELU, sigmoid out); linear AE 64 → 8 → 64; "
        f"Adam {args.lr:g}, batch {args.batch}, {epochs} epochs, MSE loss, float32",
        "test_mse": table,
        "seconds": time.perf_counter() - t0,
        "machine": common.machine(),
    }
    result["report"] = report(args, epochs, table, fig_name)
    common.save_json(out / "autoencoder.json", result)
    return result


def report(args, epochs, table, fig_name):
    pca = table["PCA (8 components)"]["test_mse"]
    nonlin, lin = table["nonlinear"]["test_mse"], table["linear"]["test_mse"]
    den, pca_noisy = table["denoising"]["test_mse"], table["PCA on noisy inputs"]["test_mse"]
    ok = nonlin < pca
    return common.report(
        "Autoencoders on the digits vs PCA (code size 8)",
        "python -m experiments.autoencoder",
        [
            common.headline("PCA-8 test MSE", pca),
            common.headline("linear AE test MSE", lin, f"≥ PCA {pca:.5f}"),
            common.headline("MLP AE test MSE", nonlin, f"< PCA {pca:.5f}", ok),
            common.headline(
                f"denoising AE test MSE (noise σ {args.noise})",
                den,
                f"PCA on the noisy inputs {pca_noisy:.5f}",
                den < pca_noisy,
            ),
        ],
        [fig_name],
        status="ok" if ok else "failed",
        notes=f"{epochs} epochs" + (" (quick size, not the full run)" if args.quick else ""),
        size=common.run_size(args),
    )


if __name__ == "__main__":
    main()
