"""Activation derivatives against jax.grad, kinks, and large inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import activations as act

ELEMENTWISE = {
    "identity": (act.identity, act.identity_prime),
    "sigmoid": (act.sigmoid, act.sigmoid_prime),
    "tanh": (act.tanh, act.tanh_prime),
    "relu": (act.relu, act.relu_prime),
    "leaky_relu": (act.leaky_relu, act.leaky_relu_prime),
    "elu": (act.elu, act.elu_prime),
    "gelu": (act.gelu, act.gelu_prime),
    "gelu_tanh": (lambda z: act.gelu(z, True), lambda z: act.gelu_prime(z, True)),
    "softplus": (act.softplus, act.softplus_prime),
    "silu": (act.silu, act.silu_prime),
}


@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_prime_matches_jax_grad(name):
    f, f_prime = ELEMENTWISE[name]
    z = jnp.linspace(-6, 6, 241) + 1e-3  # avoid landing exactly on kinks
    expected = jax.vmap(jax.grad(f))(z)
    np.testing.assert_allclose(f_prime(z), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "layer, at_zero",
    [(jaxbp.Relu(), 0.0), (jaxbp.LeakyRelu(negative_slope=0.2), 0.2), (jaxbp.Elu(alpha=0.5), 0.5)],
)
def test_kink_uses_left_derivative(layer, at_zero):
    z = jnp.zeros((1, 3))
    _, res, _ = layer.forward((), (), z)
    _, dz = layer.backward((), res, jnp.ones_like(z))
    np.testing.assert_array_equal(dz, jnp.full_like(z, at_zero))


def test_relu_kink_agrees_with_jax():
    assert float(jax.grad(jax.nn.relu)(0.0)) == float(act.relu_prime(jnp.array(0.0))) == 0.0


@pytest.mark.parametrize(
    "make",
    [
        jaxbp.Sigmoid,
        jaxbp.Tanh,
        jaxbp.Softplus,
        jaxbp.Silu,
        jaxbp.Gelu,
        jaxbp.Elu,
        jaxbp.Softmax,
        jaxbp.LogSoftmax,
    ],
)
def test_finite_for_huge_inputs_float32(make):
    layer = make()
    z = jnp.array([[-1e4, -50.0, 0.0, 50.0, 1e4]], jnp.float32)
    a, res, _ = layer.forward((), (), z)
    _, dz = layer.backward((), res, jnp.ones_like(a))
    assert jnp.isfinite(a).all() and jnp.isfinite(dz).all(), (a, dz)


def test_softmax_backward_is_jacobian_product():
    z = jnp.array([[0.3, -1.2, 2.0]])
    a = act.softmax(z)
    da = jnp.array([[1.0, 2.0, -0.5]])
    jac = jax.jacobian(lambda v: act.softmax(v[None])[0])(z[0])
    np.testing.assert_allclose(act.softmax_backward(a, da)[0], da[0] @ jac, rtol=1e-12)


@pytest.mark.parametrize(
    "make, option",
    [
        (jaxbp.LeakyRelu, {"negative_slope": -0.1}),
        (jaxbp.Elu, {"alpha": 0.0}),
        (jaxbp.Elu, {"alpha": "1"}),
    ],
)
def test_invalid_hyperparameters(make, option):
    with pytest.raises(ValueError, match=make.__name__):
        make(**option)


def test_integer_input_is_rejected():
    with pytest.raises(TypeError, match="Tanh.*int"):
        jaxbp.Tanh().forward((), (), jnp.ones((2, 2), jnp.int32))
