"""The VAE: whole-model gradient vs jax.grad with the same ε, and the IWAE bounds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import losses
from jaxbp.models import autoencoder as ae


def _vae(latent=3, hidden=16, d=10):
    enc = jaxbp.MLP([hidden, 2 * latent], activation=jaxbp.Tanh)
    dec = jaxbp.MLP([hidden, d], activation=jaxbp.Softplus)
    return enc, dec, ae.VAE(enc, dec)


def test_vae_gradient_equals_jax_grad_of_the_same_computation_with_the_same_eps():
    enc, dec, vae = _vae()
    _, params, state = vae.init(jax.random.key(0), (10,))
    x = jnp.asarray(np.random.default_rng(0).random((7, 10)))
    key = jax.random.key(3)  # the same key → the same ε in both computations
    loss = losses.vae_loss()
    value, grads, _ = jaxbp.loss_and_grad(vae, loss)(params, state, x, (x, None), key)

    def neg_elbo(p):  # the same computation, written without the layers' backward
        enc_p, dec_p = ae.vae_parts(p)
        h = enc.forward(enc_p, ae.vae_parts(state)[0], x)[0]
        mu, logvar = h[:, :3], h[:, 3:]
        # the ε GaussianSample draws: serial and parallel split the key down to it
        k_par = jax.random.split(key, 2)[1]
        k_branch = jax.random.split(k_par, 2)[0]
        k_sample = jax.random.split(k_branch, 2)[0]
        eps = jax.random.normal(k_sample, mu.shape, mu.dtype)
        z = mu + jnp.exp(0.5 * logvar) * eps
        logits = dec.forward(dec_p, ae.vae_parts(state)[1], z)[0]
        rec = jnp.sum(jax.nn.softplus(logits) - x * logits) / x.shape[0]
        kl = jnp.sum(0.5 * (mu**2 + jnp.exp(logvar) - 1 - logvar)) / x.shape[0]
        return rec + kl

    ref_value, ref = jax.jit(jax.value_and_grad(neg_elbo))(params)
    np.testing.assert_allclose(value, ref_value, rtol=1e-14)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref)):
        assert float(jnp.max(jnp.abs(g - r)) / jnp.max(jnp.abs(r))) <= 1e-10


def test_iwae_bound_grows_with_k_and_is_above_the_elbo():
    from experiments.autoencoder import digits01
    from experiments.vae import build, train

    d = digits01(0)
    with jax.enable_x64(False):
        enc, dec, vae = build(4, 64)
        params, state, _ = train(vae, d["x_train"], seed=0, epochs=3, batch=64, lr=2e-3)
        x = jnp.asarray(d["x_test"])
        elbo = float(ae.elbo(enc, dec, params, state, x, key=jax.random.key(5)).mean())
        iwae = jax.jit(ae.iwae_bound, static_argnums=(0, 1), static_argnames="k")
        bound = {
            k: float(iwae(enc, dec, params, state, x, key=jax.random.key(k), k=k).mean())
            for k in (1, 10, 100)
        }
    assert bound[1] <= bound[10] <= bound[100], bound
    assert bound[10] >= elbo and bound[100] >= elbo, (bound, elbo)
    assert bound[100] - bound[1] > 0.1  # a gap the noise (≈ 0.1 nats s.e.) cannot fake alone


def test_iwae_chunk_must_divide_k():
    enc, dec, vae = _vae()
    _, params, state = vae.init(jax.random.key(0), (10,))
    with pytest.raises(ValueError, match="multiple of chunk"):
        ae.iwae_bound(enc, dec, params, state, jnp.ones((2, 10)), key=jax.random.key(0), k=150)
