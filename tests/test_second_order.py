"""The manual gradient is itself a JAX function: differentiate it forward-mode to get
Hessian-vector products, and compare with jax.hessian and jvp-of-grad (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import jaxbp
from jaxbp import losses


def test_forward_over_manual_hvp_equals_autodiff(key):
    model = jaxbp.MLP([5, 4, 3], activation=jaxbp.Tanh)
    loss = losses.softmax_cross_entropy()
    _, params, state = model.init(key, (6,))
    kx, kv = jax.random.split(key)
    x = jax.random.normal(kx, (8, 6))
    y = jnp.arange(8) % 3
    v = jax.tree.map(lambda p: jax.random.normal(kv, p.shape), params)

    manual_grad = lambda p: jaxbp.loss_and_grad(model, loss)(p, state, x, y)[1]
    hvp_manual = jax.jit(lambda p, v: jax.jvp(manual_grad, (p,), (v,))[1])(params, v)

    def loss_of(p):
        return loss.forward(model.forward(p, state, x)[0], y)[0]

    hvp_reference = jax.jit(lambda p, v: jax.jvp(jax.grad(loss_of), (p,), (v,))[1])(params, v)
    for a, b in zip(jax.tree.leaves(hvp_manual), jax.tree.leaves(hvp_reference)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)

    # and against the full Hessian, flattened
    flat, unravel = ravel_pytree(params)
    hessian = jax.jit(jax.hessian(lambda f: loss_of(unravel(f))))(flat)
    hv = hessian @ ravel_pytree(v)[0]
    np.testing.assert_allclose(ravel_pytree(hvp_manual)[0], hv, rtol=1e-10, atol=1e-13)
