"""The custom_vjp bridge: jax.grad of user code runs the hand-written backward."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp
from jaxbp import autodiff, losses


def _net():
    return jaxbp.serial(jaxbp.Dense(6), jaxbp.Gelu(), jaxbp.Dense(3), jaxbp.LogSoftmax())


def _plain(layer, state):
    return lambda p, x: layer.forward(p, state, x)[0]


def test_grad_through_bridge_equals_autodiff_under_jit(key):
    net = _net()
    _, params, state = net.init(key, (4,))
    x = jax.random.normal(key, (5, 4))
    apply = autodiff.to_jax(net)

    def user_code(f):
        return lambda p, x: jnp.sum(jnp.sin(f(p, x)) ** 2) + 0.1 * jnp.sum(p[0]["W"] ** 2)

    bridged = jax.jit(jax.grad(user_code(lambda p, x: apply(p, state, x)[0]), argnums=(0, 1)))
    plain = jax.jit(jax.grad(user_code(_plain(net, state)), argnums=(0, 1)))
    for a, b in zip(jax.tree.leaves(bridged(params, x)), jax.tree.leaves(plain(params, x))):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-14)


def test_bridge_really_uses_the_manual_backward(key):
    calls = []
    dense = jaxbp.Dense(2)

    def backward(params, residuals, dy):
        calls.append(1)
        return dense.backward(params, residuals, dy)

    layer = dense._replace(backward=backward)
    _, params, state = layer.init(key, (3,))
    jax.grad(lambda p: autodiff.to_jax(layer)(p, state, jnp.ones((1, 3)))[0].sum())(params)
    assert calls


def test_per_example_gradients_with_vmap(key):
    net = _net()
    _, params, state = net.init(key, (4,))
    xs = jax.random.normal(key, (7, 1, 4))  # 7 examples, each a batch of 1
    apply = autodiff.to_jax(net)

    def loss_bridge(p, x):
        return -apply(p, state, x)[0][0, 1]

    def loss_plain(p, x):
        return -net.forward(p, state, x)[0][0, 1]

    g1 = jax.vmap(jax.grad(loss_bridge), in_axes=(None, 0))(params, xs)
    g2 = jax.vmap(jax.grad(loss_plain), in_axes=(None, 0))(params, xs)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        assert a.shape[0] == 7
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-14)


def test_loss_fn_gradient_equals_value_and_grad(key):
    net = _net()
    _, params, state = net.init(key, (4,))
    x = jax.random.normal(key, (5, 4))
    y = jnp.array([0, 1, 2, 1, 0])
    loss = losses.softmax_cross_entropy()
    g_bridge = jax.jit(jax.grad(autodiff.loss_fn(net, loss)))(params, state, x, y)
    _, g_manual, _ = jaxbp.loss_and_grad(net, loss)(params, state, x, y)
    for a, b in zip(jax.tree.leaves(g_bridge), jax.tree.leaves(g_manual)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
