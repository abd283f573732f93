"""GaussianSample: z = μ + σ ⊙ ε, its backward (∂z/∂μ = 1, ∂z/∂log σ² = ½ σ ⊙ ε), the key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.layers import latent


def test_backward_is_the_reparameterization_chain_rule():
    rng = np.random.default_rng(0)
    mu, logvar, eps, dz = (jnp.asarray(rng.normal(size=(5, 3))) for _ in range(4))
    z, res = latent.sample_forward(mu, logvar, eps)
    np.testing.assert_allclose(z, mu + jnp.exp(0.5 * logvar) * eps, rtol=1e-15)
    dmu, dlogvar = latent.sample_backward(res, dz)
    ref = jax.vjp(lambda m, lv: latent.sample_forward(m, lv, eps)[0], mu, logvar)[1](dz)
    np.testing.assert_allclose(dmu, ref[0], rtol=1e-14)
    np.testing.assert_allclose(dlogvar, ref[1], rtol=1e-14)
    np.testing.assert_allclose(dlogvar, dz * 0.5 * (z - mu), rtol=1e-12)


def test_layer_draws_eps_from_its_key():
    layer = jaxbp.GaussianSample()
    h = jnp.concatenate([jnp.full((20000, 2), 3.0), jnp.full((20000, 2), np.log(4.0))], axis=1)
    z, _, _ = layer.forward((), (), h, key=jax.random.key(0), train=True)
    assert abs(float(z.mean()) - 3.0) < 0.05 and abs(float(z.std()) - 2.0) < 0.05
    z2, _, _ = layer.forward((), (), h, key=jax.random.key(0), train=True)
    z3, _, _ = layer.forward((), (), h, key=jax.random.key(1), train=True)
    assert bool((z == z2).all()) and not bool((z == z3).all())


def test_no_key_in_eval_gives_the_mean_and_no_logvar_gradient():
    layer = jaxbp.GaussianSample()
    h = jnp.array([[1.0, 2.0, 0.3, -0.4]])
    z, res, _ = layer.forward((), (), h)
    np.testing.assert_array_equal(z, h[:, :2])
    _, dh = layer.backward((), res, jnp.ones_like(z))
    np.testing.assert_array_equal(dh, [[1.0, 1.0, 0.0, 0.0]])


def test_clear_errors():
    layer = jaxbp.GaussianSample()
    with pytest.raises(ValueError, match="GaussianSample.*train=True needs a random key"):
        layer.forward((), (), jnp.ones((2, 4)), train=True)
    with pytest.raises(ValueError, match=r"GaussianSample.*\(batch, \.\.\., 2d\).*\(2, 3\)"):
        layer.forward((), (), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="GaussianSample.*even"):
        layer.init(jax.random.key(0), (5,))
    with pytest.raises(TypeError, match="GaussianSample.*floating"):
        layer.forward((), (), jnp.ones((2, 4), jnp.int32))
