"""Reparameterized Gaussian sampling: z = μ + σ ⊙ ε, the layer a VAE backpropagates through.

The input h holds the two halves of an encoder's output on its last axis, h = [μ, log σ²]
(2d features → d latents). With ε ~ N(0, I) drawn from the layer's `key`, and σ = exp(½ log σ²):

    z = μ + σ ⊙ ε

ε is a constant of the backward (it was drawn, not computed from h), so the chain rule is

    ∂L/∂μ      = δ                       (∂z/∂μ = 1)
    ∂L/∂log σ² = δ ⊙ ½ σ ⊙ ε             (∂z/∂log σ² = ½ σ ⊙ ε = ½ (z − μ))

with δ = ∂L/∂z, and the input gradient is their concatenation [∂L/∂μ, ∂L/∂log σ²]. The forward
keeps only ½ σ ⊙ ε (one array of the latents' shape).

Without a key and with `train=False`, the layer returns the mean z = μ (a deterministic code:
ε = 0, so ∂L/∂log σ² = 0); `train=True` without a key is an error.

Example:
    >>> import jax, jax.numpy as jnp, jaxbp
    >>> layer = jaxbp.GaussianSample()
    >>> out_shape, params, state = layer.init(jax.random.key(0), (4,))   # 2 latents
    >>> h = jnp.array([[1.0, -1.0, 0.0, 0.0]])                          # μ = (1, −1), σ = 1
    >>> z, res, _ = layer.forward(params, state, h, key=jax.random.key(1), train=True)
    >>> _, dh = layer.backward(params, res, jnp.ones_like(z))
    >>> out_shape, z.shape, bool(jnp.allclose(dh[:, 2:], 0.5 * (z - h[:, :2])))
    ((2,), (1, 2), True)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbp.layer import Layer, as_shape, check_float_input


class SampleResiduals(NamedTuple):
    half_sigma_eps: jax.Array | None  # ½ σ ⊙ ε, (..., d); None when z = μ (no noise drawn)


def split(h):
    """(μ, log σ²) from h = [μ, log σ²] on the last axis: (..., 2d) → two (..., d) arrays."""
    d = h.shape[-1] // 2
    return h[..., :d], h[..., d:]


def sample_forward(mu, logvar, eps):
    """z = μ + σ ⊙ ε with σ = exp(½ log σ²); all (..., d)."""
    sigma_eps = jnp.exp(0.5 * logvar) * eps  # σ ⊙ ε
    return mu + sigma_eps, SampleResiduals(0.5 * sigma_eps)


def sample_backward(residuals, dz):
    """(∂L/∂μ, ∂L/∂log σ²) = (δ, δ ⊙ ½ σ ⊙ ε) for δ = dz = ∂L/∂z, (..., d) each."""
    if residuals.half_sigma_eps is None:
        return dz, jnp.zeros_like(dz)
    return dz, dz * residuals.half_sigma_eps


def GaussianSample() -> Layer:
    """Reparameterized sample z = μ + σ ⊙ ε from h = [μ, log σ²] (last axis 2d → d).

    forward(..., key=k) draws ε ~ N(0, I) from `k` (in the input's dtype); with no key and
    train=False it returns z = μ.
    """
    name = "GaussianSample"

    def init(key, in_shape):
        in_shape = as_shape(in_shape)
        if len(in_shape) < 1 or in_shape[-1] % 2 or in_shape[-1] == 0:
            raise ValueError(
                f"{name}: the last axis holds [μ, log σ²] and must have an even, positive size, "
                f"got per-example shape {in_shape}"
            )
        return (*in_shape[:-1], in_shape[-1] // 2), (), ()

    def forward(params, state, h, *, key=None, train=False):
        check_float_input(name, h)
        if h.ndim < 2 or h.shape[-1] % 2 or h.shape[-1] == 0:
            raise ValueError(
                f"{name}: expected input of shape (batch, ..., 2d) holding [μ, log σ²], "
                f"got {tuple(h.shape)}"
            )
        mu, logvar = split(h)
        if key is None:
            if train:
                raise ValueError(
                    f"{name}: train=True needs a random key for ε, e.g. "
                    "forward(..., key=jax.random.key(0), train=True); with train=False and no "
                    "key the layer returns the mean μ"
                )
            return mu, SampleResiduals(None), state
        eps = jax.random.normal(key, mu.shape, mu.dtype)  # ε ~ N(0, I), (..., d)
        z, res = sample_forward(mu, logvar, eps)
        return z, res, state

    def backward(params, residuals, dz):
        dmu, dlogvar = sample_backward(residuals, dz)
        return (), jnp.concatenate([dmu, dlogvar], axis=-1)  # (..., 2d)

    return Layer(init, forward, backward, name)
