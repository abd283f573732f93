"""The VAE and GAN losses: formulas, analytic KL vs Monte Carlo, stability, half precision."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbp import losses


def test_analytic_kl_equals_monte_carlo_within_three_standard_errors():
    rng = np.random.default_rng(0)
    d, n = 4, 200_000
    mu, logvar = rng.normal(size=d), rng.normal(scale=0.7, size=d)
    value, _ = losses.gaussian_kl().forward(jnp.asarray(np.concatenate([mu, logvar])[None]))
    sigma = np.exp(0.5 * logvar)
    z = mu + sigma * rng.normal(size=(n, d))
    log_q = -0.5 * (np.log(2 * np.pi) + logvar + ((z - mu) / sigma) ** 2).sum(1)
    log_p = -0.5 * (np.log(2 * np.pi) + z**2).sum(1)
    samples = log_q - log_p  # E_q[log q − log p] = KL(q ‖ p)
    se = samples.std(ddof=1) / np.sqrt(n)
    assert abs(float(value) - samples.mean()) <= 3 * se, (float(value), samples.mean(), se)
    assert float(value) > 10 * se  # a KL this far from 0 is a real comparison


def test_kl_gradient_formula():
    h = jnp.array([[0.5, -1.0, 0.2, -0.3], [0.0, 2.0, 1.0, 0.0]])
    _, res = losses.gaussian_kl().forward(h)
    dh = losses.gaussian_kl().backward(res, 3.0)
    mu, logvar = h[:, :2], h[:, 2:]
    np.testing.assert_allclose(dh[:, :2], 3.0 * mu / 2, rtol=1e-14)
    np.testing.assert_allclose(dh[:, 2:], 3.0 * 0.5 * (jnp.exp(logvar) - 1) / 2, rtol=1e-14)


def test_bernoulli_nll_is_the_log_likelihood_and_finite_for_huge_logits():
    z = jnp.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    x = jnp.array([[1.0, 0.0, 0.3], [0.5, 1.0, 0.0]])
    value, res = losses.bernoulli_nll().forward(z, x)
    p = jax.nn.sigmoid(z)
    expected = -jnp.sum(x * jnp.log(p) + (1 - x) * jnp.log(1 - p)) / 2
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    np.testing.assert_allclose(losses.bernoulli_nll().backward(res), (p - x) / 2, rtol=1e-12)
    big = jnp.array([[1e4, -1e4]])
    v, r = losses.bernoulli_nll().forward(big, jnp.array([[0.0, 1.0]]))
    assert np.isfinite(float(v)) and float(v) == pytest.approx(2e4)
    assert np.isfinite(np.asarray(losses.bernoulli_nll().backward(r))).all()


def test_gan_losses_formulas_and_non_saturation():
    real, fake = jnp.array([[1.0], [-2.0]]), jnp.array([[0.5], [-1.0], [3.0]])
    value, res = losses.gan_discriminator_loss().forward((real, fake))
    expected = -jnp.mean(jnp.log(jax.nn.sigmoid(real))) - jnp.mean(
        jnp.log(1 - jax.nn.sigmoid(fake))
    )
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    dreal, dfake = losses.gan_discriminator_loss().backward(res)
    np.testing.assert_allclose(dreal, (jax.nn.sigmoid(real) - 1) / 2, rtol=1e-12)
    np.testing.assert_allclose(dfake, jax.nn.sigmoid(fake) / 3, rtol=1e-12)
    # the non-saturating generator loss keeps a gradient ≈ −1/m where D rejects the samples
    rejected = jnp.full((4, 1), -30.0)
    _, res = losses.gan_generator_loss().forward(rejected)
    np.testing.assert_allclose(losses.gan_generator_loss().backward(res), -0.25, rtol=1e-12)


def test_targetless_losses_reject_a_target():
    with pytest.raises(TypeError, match="gaussian_kl: takes no target"):
        losses.gaussian_kl().forward(jnp.ones((2, 4)), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="gaussian_kl.*even"):
        losses.gaussian_kl().forward(jnp.ones((2, 3)))
    with pytest.raises(TypeError, match="gan_discriminator_loss: pred must be the pair"):
        losses.gan_discriminator_loss().forward(jnp.ones((2, 1)))
    with pytest.raises(ValueError, match=r"gan_generator_loss.*\(batch, \.\.\.\)"):
        losses.gan_generator_loss().forward(jnp.ones(3))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_sums_accumulate_in_float32(dtype):
    rng = np.random.default_rng(1)
    h = jnp.asarray(rng.normal(size=(4096, 32)), dtype)
    value, _ = losses.gaussian_kl().forward(h)
    assert value.dtype == dtype
    exact = losses.gaussian_kl().forward(h.astype(jnp.float64))[0]
    # one rounding of the result to the half format, not one per addition
    assert abs(float(value) - float(exact)) <= float(jnp.finfo(dtype).eps) * abs(float(exact))
    z = jnp.asarray(3 * rng.normal(size=(4096, 16)), dtype)
    x = jnp.asarray(rng.random((4096, 16)), dtype)
    v, _ = losses.bernoulli_nll().forward(z, x)
    exact = losses.bernoulli_nll().forward(z.astype(jnp.float64), x.astype(jnp.float64))[0]
    assert abs(float(v) - float(exact)) <= 2 * float(jnp.finfo(dtype).eps) * abs(float(exact))
