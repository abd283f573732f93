"""Autoencoders and the variational autoencoder, as compositions of layers and losses.

An autoencoder is `serial(encoder, decoder)` trained on (x, x) — or on (x + noise, x) for the
denoising variant. A VAE (Kingma & Welling 2014) is the same two networks with a reparameterized
sample between them and the KL to the prior on the side:

    h = enc(x) = [μ, log σ²]            (n, 2d)
    z = μ + σ ⊙ ε,   ε ~ N(0, I)        (n, d)        GaussianSample
    ℓ = dec(z)                          (n, D)        Bernoulli logits
    −ELBO = 1/n Σᵢ [−log p(xᵢ | zᵢ) + KL(q(z | xᵢ) ‖ N(0, I))]

Written as layers, the VAE is `serial(enc, parallel(serial(GaussianSample(), dec), Identity()))`
with the loss `multi_task(bernoulli_nll(), gaussian_kl())` and the target (x, None). Its
backward is then the engine's: the two heads' input gradients are summed at h,

    ∂L/∂h = [δ_z, δ_z ⊙ ½ σ ⊙ ε]  +  [μ, ½ (σ² − 1)] / n,     δ_z = dec.backward(σ(ℓ) − x) / n

and flows into the encoder. `jaxbp.loss_and_grad(vae, jaxbp.losses.vae_loss())` trains it;
pass a fresh `key` every step (it draws ε).

Example:
    >>> import jax, jax.numpy as jnp, jaxbp
    >>> from jaxbp.models import autoencoder as ae
    >>> vae = ae.VAE(jaxbp.MLP([16, 2 * 2]), jaxbp.MLP([16, 6]))     # 6 pixels, 2 latents
    >>> _, params, state = vae.init(jax.random.key(0), (6,))
    >>> x = jnp.full((4, 6), 0.5)
    >>> step = jaxbp.loss_and_grad(vae, jaxbp.losses.vae_loss())
    >>> neg_elbo, grads, _ = step(params, state, x, (x, None), jax.random.key(1))
    >>> enc_grads, dec_grads = ae.vae_parts(grads)
    >>> bool(neg_elbo > 0), jax.tree.structure(grads) == jax.tree.structure(params)
    (True, True)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxbp import losses
from jaxbp.activations import Identity
from jaxbp.layer import Layer, parallel, serial
from jaxbp.layers.latent import GaussianSample, split


def Autoencoder(encoder: Layer, decoder: Layer) -> Layer:
    """x̂ = dec(enc(x)): `serial(encoder, decoder)`, params (enc_params, dec_params)."""
    return serial(encoder, decoder, name=f"Autoencoder({encoder.name}, {decoder.name})")


def VAE(encoder: Layer, decoder: Layer) -> Layer:
    """The VAE as one layer: x → (decoder logits ℓ, h = [μ, log σ²]).

    `encoder` maps x to 2d features [μ, log σ²]; `decoder` maps d latents to the logits of the
    Bernoulli p(x | z). Use with `losses.vae_loss()` and the target (x, None). The params are
    `(enc, (((), dec), ()))`; `vae_parts(params)` returns (enc, dec).
    """
    sample_then_decode = serial(GaussianSample(), decoder)
    return serial(
        encoder,
        parallel(sample_then_decode, Identity()),
        name=f"VAE({encoder.name}, {decoder.name})",
    )


def vae_parts(tree):
    """(encoder part, decoder part) of a VAE's params, grads or state."""
    return tree[0], tree[1][0][1]


def _encode(encoder, enc_params, enc_state, x):
    h = encoder.forward(enc_params, enc_state, x)[0]
    return split(h)


def _log_normal(x, mu, logvar):
    """log N(x; μ, σ²) summed over the last axis."""
    terms = -0.5 * (math.log(2 * math.pi) + logvar + (x - mu) ** 2 * jnp.exp(-logvar))
    return jnp.sum(terms, axis=-1)


def elbo(encoder: Layer, decoder: Layer, params, state, x, *, key):
    """Per-example ELBO = log p(x | z) − KL(q(z | x) ‖ N(0, I)), one z each, analytic KL; (n,)."""
    (enc_p, dec_p), (enc_s, dec_s) = vae_parts(params), vae_parts(state)
    mu, logvar = _encode(encoder, enc_p, enc_s, x)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)
    logits = decoder.forward(dec_p, dec_s, z)[0]
    kl = jnp.sum(losses.gaussian_kl_terms(mu, logvar), axis=-1)
    return losses.bernoulli_log_prob(logits, x) - kl


def iwae_bound(encoder: Layer, decoder: Layer, params, state, x, *, key, k: int, chunk=100):
    """Importance-weighted bound (Burda et al. 2016) per example, shape (n,):

        L_k(x) = log 1/k Σ_j p(x | z_j) p(z_j) / q(z_j | x),     z_j ~ q(z | x)

    L_1 is a one-sample ELBO; E[L_k] does not decrease with k and tends to log p(x). The k
    samples are drawn `chunk` at a time (k must be a multiple of min(k, chunk)), with a running
    log-sum-exp.
    """
    chunk = min(k, chunk)
    if k % chunk:
        raise ValueError(f"iwae_bound: k = {k} must be a multiple of chunk = {chunk}")
    (enc_p, dec_p), (enc_s, dec_s) = vae_parts(params), vae_parts(state)
    mu, logvar = _encode(encoder, enc_p, enc_s, x)  # (n, d) each
    n, d = mu.shape

    def log_weights(key):
        eps = jax.random.normal(key, (chunk, n, d), mu.dtype)
        z = mu + jnp.exp(0.5 * logvar) * eps  # (chunk, n, d)
        logits = decoder.forward(dec_p, dec_s, z.reshape(chunk * n, d))[0]
        log_px = losses.bernoulli_log_prob(logits, jnp.tile(x, (chunk, 1))).reshape(chunk, n)
        log_pz = _log_normal(z, 0.0, jnp.zeros_like(z))
        log_qz = _log_normal(z, mu, logvar)
        return log_px + log_pz - log_qz  # (chunk, n)

    def step(carry, key):
        m, s = carry  # running max and Σ exp(log w − m)
        lw = log_weights(key)
        m_new = jnp.maximum(m, lw.max(axis=0))
        s = s * jnp.exp(m - m_new) + jnp.exp(lw - m_new).sum(axis=0)
        return (m_new, s), None

    init = (jnp.full((n,), -jnp.inf, mu.dtype), jnp.zeros((n,), mu.dtype))
    (m, s), _ = jax.lax.scan(step, init, jax.random.split(key, k // chunk))
    return m + jnp.log(s) - math.log(k)
