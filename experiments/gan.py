"""GANs trained with hand-written gradient routes: the ring of 8 Gaussians (mode counts over 5
seeds, plain GAN vs a stabilized variant) and a sample grid from a GAN on the 8×8 digits.

The generator step (`generator_step`, with `jaxbp.models.gan.generator_grads`): the
discriminator's backward gives the input gradient dx, the generator's backward pulls it back to
θ_G, and the discriminator's parameter gradient from that pass is discarded — D's parameters are
not touched.

    python -m experiments.gan [--quick]
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
from jaxbp import loop, optim
from jaxbp.layer import Layer, as_shape
from jaxbp.models import gan

RADIUS, STD, MODES = 2.0, 0.02, 8


class Variant(NamedTuple):
    name: str
    lr: float
    b1: float
    pack: int  # the discriminator judges `pack` samples at once (PacGAN); 1 = a plain D
    decay: bool  # cosine decay of the rate to 0 over the run (sharpens the modes at the end)


VARIANTS = {
    "plain": Variant("plain GAN (Adam 1e-3, β₁ 0.9)", 1e-3, 0.9, 1, False),
    "packed": Variant("PacGAN-4 (Adam 1e-3 → 0 cosine, β₁ 0.5)", 1e-3, 0.5, 4, True),
}


# ------------------------------------------------------------------------------ the models


def Pack(m: int) -> Layer:
    """(B, d) → (B/m, m·d): m samples side by side, so D sees their joint distribution (PacGAN,
    Lin et al. 2018). Backward is the reshape back: dx = dy.reshape(B, d)."""
    name = f"Pack({m})"

    def init(key, in_shape):
        (d,) = as_shape(in_shape)
        return (m * d,), (), ()

    def forward(params, state, x, *, key=None, train=False):
        if x.shape[0] % m:
            raise ValueError(f"{name}: batch {x.shape[0]} is not a multiple of {m}")
        return x.reshape(x.shape[0] // m, m * x.shape[1]), x.shape, state

    def backward(params, shape, dy):
        return (), dy.reshape(shape)

    return Layer(init, forward, backward, name)


def networks(z_dim, data_dim, hidden, pack=1, out_activation=None):
    G = jaxbp.MLP([*hidden, data_dim], activation=jaxbp.Relu, out_activation=out_activation)
    D = jaxbp.MLP([*hidden, 1], activation=lambda: jaxbp.LeakyRelu(negative_slope=0.2))
    if pack > 1:
        D = jaxbp.serial(Pack(pack), D)
    return G, D


# ------------------------------------------------------------------------- the two steps


def generator_step(G, D, opt, g_params, g_opt, d_params, z):
    """θ_G ← θ_G − update(∂L_G/∂θ_G); D's parameters are read, never written.

    `gan.generator_grads` writes the route out: x̃ = G(z); f = D(x̃); δ_f = ∂L_G/∂f;
    (∂θ_D, dx) = D.backward(δ_f) with ∂θ_D discarded; ∂θ_G = G.backward(dx).
    """
    value, dG = gan.generator_grads(G, D, g_params, d_params, z)
    updates, g_opt = opt.update(dG, g_opt, g_params)
    return optax.apply_updates(g_params, updates), g_opt, value


def discriminator_step(G, D, opt, d_params, d_opt, g_params, x_real, z):
    """θ_D ← θ_D − update(∂L_D/∂θ_D) on a real batch and a generated one (G fixed)."""
    x_fake = G.forward(g_params, gan.empty_state(g_params), z)[0]
    value, dD = gan.discriminator_grads(D, d_params, x_real, x_fake)
    updates, d_opt = opt.update(dD, d_opt, d_params)
    return optax.apply_updates(d_params, updates), d_opt, value


def make_train_chunk(G, D, opt, sample_real, batch, z_dim):
    """A jit-compiled run of `steps` (D step, G step) pairs with lax.scan."""

    def one(carry, key):
        g_params, d_params, g_opt, d_opt = carry
        k_real, k_zd, k_zg = jax.random.split(key, 3)
        x_real = sample_real(k_real, batch)
        z_d = jax.random.normal(k_zd, (batch, z_dim))
        d_params, d_opt, loss_d = discriminator_step(
            G, D, opt, d_params, d_opt, g_params, x_real, z_d
        )
        z_g = jax.random.normal(k_zg, (batch, z_dim))
        g_params, g_opt, loss_g = generator_step(G, D, opt, g_params, g_opt, d_params, z_g)
        return (g_params, d_params, g_opt, d_opt), (loss_d, loss_g)

    def chunk(carry, key, steps):
        return jax.lax.scan(one, carry, jax.random.split(key, steps))

    return jax.jit(chunk, static_argnums=2)


# ---------------------------------------------------------------------- the ring of 8 modes


def ring_centres():
    angles = 2 * np.pi * np.arange(MODES) / MODES
    return RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (8, 2)


def sample_ring(key, n):
    k_mode, k_noise = jax.random.split(key)
    centres = jnp.asarray(ring_centres(), jnp.float32)
    mode = jax.random.randint(k_mode, (n,), 0, MODES)
    return centres[mode] + STD * jax.random.normal(k_noise, (n, 2))


def ring_metrics(samples):
    """VEEGAN's metrics: share of samples within 3 std of a mode centre ("high quality"), and
    the number of modes that have at least one such sample."""
    dist = np.linalg.norm(samples[:, None, :] - ring_centres()[None], axis=-1)  # (n, 8)
    nearest, closest = dist.argmin(axis=1), dist.min(axis=1)
    good = closest <= 3 * STD
    return {
        "modes": int(len(set(nearest[good].tolist()))),
        "high_quality": float(good.mean()),
    }


def train_ring(variant: Variant, seed, steps, batch, z_dim, hidden, log_every):
    G, D = networks(z_dim, 2, hidden, variant.pack)
    lr = optax.cosine_decay_schedule(variant.lr, steps) if variant.decay else variant.lr
    opt = optim.adam(lr, b1=variant.b1)
    k_g, k_d, k_run, k_eval = jax.random.split(jax.random.key(seed), 4)
    g_params, d_params = G.init(k_g, (z_dim,))[1], D.init(k_d, (2,))[1]
    carry = (g_params, d_params, opt.init(g_params), opt.init(d_params))
    chunk = make_train_chunk(G, D, opt, sample_ring, batch, z_dim)
    z_eval = jax.random.normal(k_eval, (2500, z_dim))
    history = {"step": [], "loss_d": [], "loss_g": [], "modes": [], "high_quality": []}

    def record(tick):  # after each chunk of log_every (D, G) steps
        loss_d, loss_g = tick.out
        g_params = tick.state[0]
        m = ring_metrics(np.asarray(G.forward(g_params, gan.empty_state(g_params), z_eval)[0]))
        history["step"].append(tick.step)
        history["loss_d"].append(float(jnp.mean(loss_d)))
        history["loss_g"].append(float(jnp.mean(loss_g)))
        history["modes"].append(m["modes"])
        history["high_quality"].append(m["high_quality"])

    carry = _run_chunks(chunk, carry, k_run, steps, log_every, [record])
    samples = np.asarray(G.forward(carry[0], gan.empty_state(carry[0]), z_eval)[0])
    return {**ring_metrics(samples), "history": history, "samples": samples}


def _run_chunks(chunk, carry, k_run, steps, per_call, callbacks):
    """The public loop over compiled chunks of `per_call` (D, G) steps, each chunk's key
    folded from `k_run` with its first step."""
    return loop.loop(
        lambda c, batch: chunk(c, *batch),
        carry,
        lambda step, count: (jax.random.fold_in(k_run, step), count),
        steps=steps,
        steps_per_call=per_call,
        callbacks=callbacks,
    )


def ring_runs(args, log):
    steps, seeds = args.steps, args.seeds
    runs = {}
    for key in args.variants:
        variant = VARIANTS[key]
        runs[key] = []
        for seed in range(args.seed, args.seed + seeds):
            t0 = time.perf_counter()
            r = train_ring(variant, seed, steps, args.batch, args.z_dim, (128, 128), args.log_every)
            r["seconds"] = time.perf_counter() - t0
            log(
                f"{variant.name:<32} seed {seed}: {r['modes']}/8 modes, "
                f"{100 * r['high_quality']:.1f}% high quality ({r['seconds']:.0f} s)"
            )
            runs[key].append(r)
    return runs


def ring_summary(runs):
    out = {}
    for key, rs in runs.items():
        modes = [r["modes"] for r in rs]
        hq = [r["high_quality"] for r in rs]
        late = [h for r in rs for h in _second_half(r["history"]["modes"])]
        out[key] = {
            "variant": VARIANTS[key].name,
            "modes_per_seed": modes,
            "high_quality_per_seed": hq,
            "seeds_with_all_8_modes": int(sum(m == MODES for m in modes)),
            "mean_modes": float(np.mean(modes)),
            "mean_high_quality": float(np.mean(hq)),
            "early_modes_per_seed": [r["history"]["modes"][0] for r in rs],
            "late_checkpoints_with_8_modes": float(np.mean([m == MODES for m in late])),
            "seconds_per_seed": [r["seconds"] for r in rs],
            "history": [r["history"] for r in rs],
        }
    return out


def _second_half(values):
    return values[len(values) // 2 :]


def ring_figures(runs, out):
    names = []
    centres = ring_centres()
    for key, rs in runs.items():
        fig, axes = common.new_figure(1, len(rs), figsize=(3 * len(rs), 3.2), squeeze=False)
        for ax, r in zip(axes[0], rs):
            s = r["samples"]
            ax.scatter(s[:, 0], s[:, 1], s=2, alpha=0.4, c="C0")
            ax.scatter(centres[:, 0], centres[:, 1], s=30, marker="x", c="C3")
            ax.set_title(f"{r['modes']}/8 modes, {100 * r['high_quality']:.0f}% HQ", fontsize=9)
            ax.set_xlim(-3, 3)
            ax.set_ylim(-3, 3)
            ax.set_aspect("equal")
        fig.suptitle(VARIANTS[key].name)
        names.append(common.save_figure(fig, out / f"gan_ring_{key}.png").name)
    fig, axes = common.new_figure(1, 3, figsize=(14, 3.8))
    for i, (key, rs) in enumerate(runs.items()):
        for j, r in enumerate(rs):
            h = r["history"]
            label = VARIANTS[key].name if j == 0 else None
            axes[0].plot(h["step"], h["modes"], f"C{i}", alpha=0.7, label=label)
            axes[1].plot(h["step"], h["high_quality"], f"C{i}", alpha=0.7, label=label)
            axes[2].plot(h["step"], h["loss_d"], f"C{i}", alpha=0.7, label=label)
            axes[2].plot(h["step"], h["loss_g"], f"C{i}:", alpha=0.7)
    axes[0].set_ylabel("modes covered (of 8)")
    axes[1].set_ylabel("high-quality share")
    axes[2].set_ylabel("L_D (solid), L_G (dotted)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    names.append(common.save_figure(fig, out / "gan_ring_dynamics.png").name)
    return names


# ------------------------------------------------------------------------------- digits


def train_digits(seed, steps, batch=128, z_dim=32, hidden=(256, 256), lr=2e-4, chunk=500):
    from experiments.autoencoder import digits01

    x_train = jnp.asarray(digits01(seed)["x_train"])
    G, D = networks(z_dim, 64, hidden, out_activation=jaxbp.Sigmoid)
    opt = optim.adam(lr, b1=0.5)
    k_g, k_d, k_run, k_eval = jax.random.split(jax.random.key(seed), 4)
    g_params, d_params = G.init(k_g, (z_dim,))[1], D.init(k_d, (64,))[1]
    carry = (g_params, d_params, opt.init(g_params), opt.init(d_params))

    def sample_real(key, n):
        return x_train[jax.random.randint(key, (n,), 0, x_train.shape[0])]

    train = make_train_chunk(G, D, opt, sample_real, batch, z_dim)
    losses_d, losses_g = [], []

    def record(tick):
        losses_d.append(np.asarray(tick.out[0]))
        losses_g.append(np.asarray(tick.out[1]))

    carry = _run_chunks(train, carry, k_run, steps, chunk, [record])
    g_params = carry[0]
    samples = G.forward(
        g_params, gan.empty_state(g_params), jax.random.normal(k_eval, (64, z_dim))
    )[0]
    return {
        "samples": np.asarray(samples),
        "loss_d": np.concatenate(losses_d),
        "loss_g": np.concatenate(losses_g),
    }


def digits_figure(result, out):
    fig, axes = common.new_figure(8, 8, figsize=(6, 6))
    for ax, img in zip(axes.ravel(), result["samples"]):
        ax.imshow(img.reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        ax.axis("off")
    fig.suptitle("GAN samples, 8×8 digits")
    return common.save_figure(fig, out / "gan_digits.png").name


# ---------------------------------------------------------------------------------- main


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="ring training steps per run")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--z-dim", type=int, default=16)
    p.add_argument("--log-every", type=int, default=None)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--digit-steps", type=int, default=None)
    args = p.parse_args(argv)
    args.steps = args.steps or (400 if args.quick else 10000)
    args.seeds = args.seeds or (1 if args.quick else 5)
    args.log_every = args.log_every or max(args.steps // 20, 1)
    digit_steps = (
        args.digit_steps if args.digit_steps is not None else (200 if args.quick else 6000)
    )
    out = common.out_dir(args)
    t0 = time.perf_counter()

    runs = ring_runs(args, print)
    summary = ring_summary(runs)
    figures = ring_figures(runs, out)
    digits = train_digits(args.seed, digit_steps) if digit_steps else None
    if digits is not None:
        figures.append(digits_figure(digits, out))

    result = {
        "setup": {
            "ring": f"8 Gaussians on a circle of radius {RADIUS}, std {STD}; G "
            f"z {args.z_dim} → 128 → 128 → 2 (ReLU), D 2 → 128 → 128 → 1 (LeakyReLU 0.2); "
            f"batch {args.batch}, {args.steps} steps (one D step, one G step each), float32",
            "metrics": "VEEGAN: of 2500 samples, the share within 3 std of a mode centre, and the "
            "number of modes with at least one such sample",
            "digits": f"G z 32 → 256 → 256 → 64 (sigmoid), D 64 → 256 → 256 → 1; Adam 2e-4, "
            f"β₁ 0.5; {digit_steps} steps",
        },
        "ring": summary,
        "digits_final_losses": None
        if digits is None
        else {
            "loss_d": float(digits["loss_d"][-100:].mean()),
            "loss_g": float(digits["loss_g"][-100:].mean()),
        },
        "seconds": time.perf_counter() - t0,
        "machine": common.machine(),
    }
    result["report"] = report(args, summary, figures)
    common.save_json(out / "gan.json", result)
    return result


def report(args, summary, figures):
    headline = []
    ok_all = True
    for key, s in summary.items():
        stabilized = key != "plain"
        n = len(s["modes_per_seed"])
        ok = None
        if stabilized:
            ok = s["seeds_with_all_8_modes"] >= min(4, n) and s["mean_high_quality"] >= 0.7
            ok_all = ok_all and ok
        headline.append(  # the targets are those of 5 seeds × 10 000 steps: full size only
            common.headline(
                f"{s['variant']}: seeds (of {n}) with 8/8 modes",
                s["seeds_with_all_8_modes"],
                "≥ 4 of 5 (issue target)" if stabilized else None,
                ok,
                at="full",
            )
        )
        headline.append(
            common.headline(
                f"{s['variant']}: high-quality samples (mean over seeds)",
                round(100 * s["mean_high_quality"], 1),
                "≥ 70 % (issue target)" if stabilized else None,
                None if not stabilized else s["mean_high_quality"] >= 0.7,
                at="full",
            )
        )
        headline.append(
            common.headline(
                f"{s['variant']}: second-half checkpoints with 8/8 modes (%)",
                round(100 * s["late_checkpoints_with_8_modes"], 1),
            )
        )
    full = not args.quick and args.seeds >= 5
    return common.report(
        "GAN: ring of 8 Gaussians and digits",
        "python -m experiments.gan",
        headline,
        figures,
        status="ok" if ok_all and full else "partial",
        notes=(
            f"{args.seeds} seed(s) × {args.steps} steps per variant"
            + ("" if full else " (quick size, not the full run)")
            + "; the generator step discards D's parameter gradient."
        ),
        size=common.run_size(args),
    )


if __name__ == "__main__":
    main()
