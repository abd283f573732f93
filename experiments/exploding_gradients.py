"""Exploding and vanishing gradients in a tanh RNN, measured with the hand-written BPTT.

    python -m experiments.exploding_gradients [--quick]

A tanh RNN (hidden 128, 1 input feature) with recurrent matrix U = ρ Q, Q a random orthogonal
matrix, so the spectral radius of U is exactly ρ ∈ {0.9, 1.0, 1.1}. The loss reads the last
state, L = ⟨v, h_T⟩ with a fixed unit vector v, and we measure ‖∂L/∂h_0‖, the gradient with
respect to the first hidden state (the initial-state gradient the layer returns), as a function
of T. Backpropagation multiplies it by J_tᵀ = U diag(1 − h_t²) once per step, so it scales like
ρ^T while the units stay in tanh's linear range.

Two regimes, one panel each:
* "linear": zero inputs and a tiny h_0 (1e-12): tanh′ ≈ 1, the norm follows ρ^T exactly;
* "driven": inputs x_t ~ N(0, 1) through W: the units saturate, tanh′ < 1 shrinks every factor.

"clipped" (dashed) applies `optax.clip_by_global_norm(1.0)` to the whole gradient
(∂L/∂W, ∂L/∂U, ∂L/∂b, ∂L/∂h_0) for each T, as in training: clipping caps the exploding norm but
cannot restore a vanishing one. All T are computed in one batched call: row k is a sequence of
length T_k padded to T_max with a mask, and masked steps carry the state through unchanged.
Writes exploding_gradients.json and exploding_gradients.png.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from jaxbp.layers import recurrent

RADII = (0.9, 1.0, 1.1)


def gradient_norms(rho, Ts, hidden, regime, clip, seed):
    """(‖∂L/∂h_0‖, ‖clipped ∂L/∂h_0‖) for every T in Ts."""
    k_p, k_q, k_x, k_h, k_v = jax.random.split(jax.random.key(seed), 5)
    params = recurrent.rnn_init(k_p, 1, hidden)
    q, _ = jnp.linalg.qr(jax.random.normal(k_q, (hidden, hidden)))
    params = {**params, "U": rho * q}  # spectral radius exactly rho
    T_max = max(Ts)
    v = jax.random.normal(k_v, (hidden,))
    v = v / jnp.linalg.norm(v)
    if regime == "linear":
        x = jnp.zeros((T_max, 1))
        h0 = 1e-12 * jax.random.normal(k_h, (hidden,))
    else:
        x = jax.random.normal(k_x, (T_max, 1))
        h0 = jnp.zeros((hidden,))

    def one(T):
        mask = (jnp.arange(T_max) < T)[None]  # (1, T_max): steps after T carry h_T through
        y, res = recurrent.rnn_forward(params, x[None], h0[None], mask, return_sequences=False)
        dparams, _, dh0 = recurrent.rnn_backward(params, res, v[None])  # dy = ∂L/∂h_T = v
        grads = {"params": dparams, "h0": dh0}
        clipped, _ = optax.clip_by_global_norm(clip).update(grads, optax.EmptyState())
        return jnp.linalg.norm(dh0), jnp.linalg.norm(clipped["h0"])

    raw, clipped = jax.jit(jax.vmap(one))(jnp.asarray(Ts))
    return np.asarray(raw), np.asarray(clipped)


def _report(result, args):
    """‖∂L/∂h₀‖ at the longest T against ρ^T (exact in the linear regime: ∂L/∂h₀ = (Uᵀ)^T v
    with U = ρ Q orthogonal and ‖v‖ = 1)."""
    T = result["T"][-1]
    rows = []
    for curve in result["curves"]:
        value, rho = curve["norm"][-1], curve["rho"]
        linear = curve["regime"] == "linear"
        rows.append(common.headline(
            f"{curve['regime']} regime, ρ = {rho}: ‖∂L/∂h₀‖ at T = {T} (clipped "
            f"{curve['clipped'][-1]:.3g})", value,
            f"ρ^T = {rho**T:.3g} (exact, rel. 1e-6)" if linear else "below ρ^T: tanh′ < 1",
            ok=abs(value / rho**T - 1) <= 1e-6 if linear else value <= rho**T,
        ))  # fmt: skip
    return common.report(
        "Exploding and vanishing gradients in a tanh RNN",
        "python -m experiments.exploding_gradients",
        rows,
        ["exploding_gradients.png"],
        notes=common.size_note(args, "T up to 200") + f"; hidden {result['hidden']}.",
    )


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--T-max", type=int, default=None)
    p.add_argument("--clip", type=float, default=1.0)
    args = p.parse_args(argv)
    T_max = args.T_max or (100 if args.quick else 200)
    Ts = sorted({1, *range(5, T_max + 1, 5)})
    out = common.out_dir(args)
    result = {"hidden": args.hidden, "clip": args.clip, "T": Ts, "curves": []}
    fig, axes = common.new_figure(1, 2, figsize=(11, 4), sharey=True)
    with jax.enable_x64(True):
        for ax, regime in zip(axes, ("linear", "driven"), strict=True):
            for rho, color in zip(RADII, ("C0", "C1", "C3"), strict=True):
                raw, clipped = gradient_norms(rho, Ts, args.hidden, regime, args.clip, args.seed)
                result["curves"].append(
                    {
                        "regime": regime,
                        "rho": rho,
                        "norm": raw.tolist(),
                        "clipped": clipped.tolist(),
                    }
                )
                ax.plot(Ts, raw, color=color, label=f"ρ = {rho}")
                ax.plot(Ts, clipped, color=color, ls="--", lw=1, label=f"ρ = {rho}, clipped")
                print(
                    f"  {regime:<7} rho={rho}: ‖∂L/∂h0‖ at T={Ts[-1]}: {raw[-1]:.3e} "
                    f"(clipped {clipped[-1]:.3e})"
                )
            ax.set_yscale("log")
            ax.set_xlabel("sequence length T")
            ax.set_title(f"tanh RNN, {regime} regime")
        axes[0].set_ylabel("‖∂L/∂h₀‖")
        axes[0].legend(fontsize=8, ncol=2)
    result["report"] = _report(result, args)
    common.save_json(out / "exploding_gradients.json", result)
    common.save_figure(fig, out / "exploding_gradients.png")
    return result


if __name__ == "__main__":
    main()
