"""A variational autoencoder on the 8×8 digits (pixels in [0, 1], Bernoulli decoder), trained
with the hand-written backward through the reparameterized sample and the analytic KL. Reports
the test ELBO and the importance-weighted bound for k = 1, 10, 100, 1000 in nats per image, and
draws samples, reconstructions and the latent space of a 2-latent model.

    python -m experiments.vae [--quick]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp
from experiments import common
from experiments.autoencoder import digits01
from jaxbp import losses
from jaxbp.models import autoencoder as ae


def build(latent, hidden):
    encoder = jaxbp.MLP([hidden, 2 * latent], activation=jaxbp.Elu)
    decoder = jaxbp.MLP([hidden, 64], activation=jaxbp.Elu)
    return encoder, decoder, ae.VAE(encoder, decoder)


def train(vae, x_train, *, seed, epochs, batch, lr):
    """Adam on −ELBO; a fresh key (fresh ε) every step."""
    _, params, state = vae.init(jax.random.key(seed), (64,))
    grad_fn = jaxbp.models.loss_and_grad(vae, losses.vae_loss(), jit=False)

    def value_and_grad(params, x, key):
        return grad_fn(params, state, x, (x, None), key)[:2]

    params, curve = common.adam_epochs(
        value_and_grad, params, x_train, seed=seed, epochs=epochs, batch=batch, lr=lr
    )
    return params, state, curve


def bounds(encoder, decoder, params, state, x, seed, ks):
    """Test ELBO (analytic KL, one ε per image) and IWAE bounds, nats per image ± s.e."""
    x = jnp.asarray(x)
    key = jax.random.key(seed + 12345)
    elbo = np.asarray(ae.elbo(encoder, decoder, params, state, x, key=key))
    out, per_image = {"elbo": _mean_se(elbo)}, {"elbo": elbo}
    for i, k in enumerate(ks):
        fn = jax.jit(
            lambda p, x, key, k=k: ae.iwae_bound(encoder, decoder, p, state, x, key=key, k=k)
        )
        per_image[k] = np.asarray(fn(params, x, jax.random.fold_in(key, i)))
        out[f"iwae_{k}"] = _mean_se(per_image[k])
    # paired differences (same images, independent samples) carry the noise of a comparison
    diffs = {f"iwae_{k} - elbo": _mean_se(per_image[k] - elbo) for k in ks}
    for a, b in zip(ks, ks[1:]):
        diffs[f"iwae_{b} - iwae_{a}"] = _mean_se(per_image[b] - per_image[a])
    return out, diffs


def _mean_se(v):
    return {"mean": float(v.mean()), "se": float(v.std(ddof=1) / np.sqrt(len(v)))}


def figures(vae, decoder, params, state, enc2, params2, state2, d, latent, out, seed):
    dec_p = ae.vae_parts(params)[1]
    names = []
    z = jax.random.normal(jax.random.key(seed + 1), (64, latent))
    samples = jax.nn.sigmoid(decoder.forward(dec_p, ae.vae_parts(state)[1], z)[0])
    fig, axes = common.new_figure(8, 8, figsize=(6, 6))
    for ax, img in zip(axes.ravel(), np.asarray(samples)):
        ax.imshow(img.reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        ax.axis("off")
    fig.suptitle(f"VAE samples (mean of p(x | z), z ~ N(0, I), {latent} latents)")
    names.append(common.save_figure(fig, out / "vae_samples.png").name)

    x = jnp.asarray(d["x_test"][:12])
    (logits, _), _, _ = vae.forward(params, state, x, key=jax.random.key(seed + 2), train=True)
    fig, axes = common.new_figure(2, 12, figsize=(10, 2))
    for c in range(12):
        for r, img in enumerate((x[c], jax.nn.sigmoid(logits[c]))):
            axes[r, c].imshow(np.asarray(img).reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
            axes[r, c].axis("off")
    fig.suptitle("test images (top) and VAE reconstructions (bottom)")
    names.append(common.save_figure(fig, out / "vae_reconstructions.png").name)

    enc2_p, enc2_s = ae.vae_parts(params2)[0], ae.vae_parts(state2)[0]
    h = np.asarray(enc2.forward(enc2_p, enc2_s, jnp.asarray(d["x_test"]))[0][:, :2])  # μ
    fig, ax = common.new_figure(figsize=(6, 5))
    sc = ax.scatter(h[:, 0], h[:, 1], c=d["y_test"], cmap="tab10", s=8)
    fig.colorbar(sc, ax=ax, label="digit")
    ax.set_xlabel("μ₁")
    ax.set_ylabel("μ₂")
    ax.set_title("2-latent VAE: posterior means of the test digits")
    names.append(common.save_figure(fig, out / "vae_latent_2d.png").name)
    return names


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--latent", type=int, default=8)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--ks", type=int, nargs="+", default=None, help="IWAE sample counts")
    args = p.parse_args(argv)
    epochs = args.epochs or (25 if args.quick else 400)
    ks = tuple(args.ks or ((1, 10, 100) if args.quick else (1, 10, 100, 1000)))
    out = common.out_dir(args)
    t0 = time.perf_counter()
    d = digits01(args.seed)
    kw = dict(seed=args.seed, epochs=epochs, batch=args.batch, lr=args.lr)

    encoder, decoder, vae = build(args.latent, args.hidden)
    params, state, curve = train(vae, d["x_train"], **kw)
    b, diffs = bounds(encoder, decoder, params, state, d["x_test"], args.seed, ks)
    for name, v in {**b, **diffs}.items():
        print(f"{name:<18} {v['mean']:9.4f} ± {v['se']:.4f} nats/image")
    enc2, dec2, vae2 = build(2, args.hidden)
    params2, state2, _ = train(vae2, d["x_train"], **kw)
    b2, _ = bounds(enc2, dec2, params2, state2, d["x_test"], args.seed, ks[:2])
    names = figures(
        vae, decoder, params, state, enc2, params2, state2, d, args.latent, out, args.seed
    )
    result = {
        "setup": f"digits in [0, 1] ({len(d['x_train'])} train / {len(d['x_test'])} test), "
        f"Bernoulli decoder on the grey pixels; encoder 64 → {args.hidden} → 2×{args.latent}, "
        f"decoder {args.latent} → "
        f"{args.hidden} → 64 (ELU); Adam {args.lr:g}, batch {args.batch}, {epochs} epochs, "
        "float32",
        "test_bounds_nats_per_image": b,
        "test_bound_differences_paired": diffs,
        "test_bounds_2_latents": b2,
        "final_train_neg_elbo": float(curve[-1]),
        "seconds": time.perf_counter() - t0,
        "machine": common.machine(),
    }
    result["report"] = report(args, epochs, ks, b, diffs, names)
    common.save_json(out / "vae.json", result)
    return result


def report(args, epochs, ks, b, diffs, names):
    # E[L_k] is non-decreasing in k and E[L_1] = ELBO: each estimated step must be ≥ 0 within 3
    # standard errors of its paired difference, and every L_k ≥ ELBO within the same noise.
    values = [b[f"iwae_{k}"]["mean"] for k in ks]
    within = {name: d["mean"] >= -3 * d["se"] for name, d in diffs.items()}
    monotone = all(ok for name, ok in within.items() if "elbo" not in name)
    above = all(ok for name, ok in within.items() if "elbo" in name)
    headline = [common.headline("test ELBO (nats/image)", b["elbo"]["mean"])]
    for k, v in zip(ks, values):
        headline.append(
            common.headline(
                f"test IWAE bound k = {k} (nats/image)",
                v,
                "non-decreasing in k, ≥ ELBO",
                monotone and above,
            )
        )
    return common.report(
        "Variational autoencoder on the digits",
        "python -m experiments.vae",
        headline,
        names,
        status="ok" if monotone and above and not args.quick else "partial",
        notes=f"{args.latent} latents, {epochs} epochs"
        + (" (quick size, not the full run)" if args.quick else "")
        + "; a Bernoulli likelihood of grey pixels, so the nats are not a density of the data.",
        size=common.run_size(args),
    )


if __name__ == "__main__":
    main()
