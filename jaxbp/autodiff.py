"""The bridge: wrap a Layer (or a model with its loss) in `jax.custom_vjp`, so that `jax.grad`
of any user code runs the hand-written backward.

    >>> import jax, jax.numpy as jnp, jaxbp
    >>> layer = jaxbp.serial(jaxbp.Dense(4), jaxbp.Tanh())
    >>> _, params, state = layer.init(jax.random.key(0), (3,))
    >>> apply = jaxbp.autodiff.to_jax(layer)
    >>> f = lambda p, x: jnp.sum(apply(p, state, x)[0] ** 2)
    >>> g = jax.grad(f)(params, jnp.ones((2, 3)))   # uses layer.backward
    >>> jax.tree.structure(g) == jax.tree.structure(params)
    True

`state` and `key` get zero cotangents (they are not differentiated); an integer input gets the
zero (float0) cotangent JAX expects. The new state is returned but carries no gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp.layer import Layer
from jaxbp.losses import Loss


def _zero_cotangent(tree):
    """Zeros shaped like `tree`: float0 for integer and key leaves, as JAX requires."""

    def zero(a):
        a = jnp.asarray(a) if not hasattr(a, "dtype") else a
        if jnp.issubdtype(a.dtype, jnp.inexact):
            return jnp.zeros_like(a)
        return np.zeros(np.shape(a), dtype=jax.dtypes.float0)

    return jax.tree.map(zero, tree)


def to_jax(layer: Layer, *, train: bool = False):
    """`apply(params, state, x, key=None) -> (y, new_state)`, differentiable by JAX through the
    layer's own backward (custom_vjp)."""

    @jax.custom_vjp
    def apply(params, state, x, key=None):
        y, _, new_state = layer.forward(params, state, x, key=key, train=train)
        return y, new_state

    def apply_fwd(params, state, x, key=None):
        y, residuals, new_state = layer.forward(params, state, x, key=key, train=train)
        return (y, new_state), (params, residuals, state, x, key)

    def apply_bwd(saved, cotangents):
        params, residuals, state, x, key = saved
        dy, _ = cotangents  # the new state carries no gradient
        dparams, dx = layer.backward(params, residuals, dy)
        if dx is None:
            dx = _zero_cotangent(x)
        return dparams, _zero_cotangent(state), dx, _zero_cotangent(key)

    apply.defvjp(apply_fwd, apply_bwd)
    return apply


def loss_fn(model: Layer, loss: Loss, *, train: bool = True):
    """`f(params, state, x, y, key=None) -> loss` whose `jax.grad` (w.r.t. params) is the
    hand-written gradient of `jaxbp.loss_and_grad`."""
    apply = to_jax(model, train=train)
    loss_apply = to_jax_loss(loss)

    def f(params, state, x, y, key=None):
        pred, _ = apply(params, state, x, key)
        return loss_apply(pred, y)

    return f


def to_jax_loss(loss: Loss):
    """`f(pred, target) -> value`, differentiable by JAX through `loss.backward`."""

    @jax.custom_vjp
    def f(pred, target):
        return loss.forward(pred, target)[0]

    def f_fwd(pred, target):
        value, residuals = loss.forward(pred, target)
        return value, (residuals, target)

    def f_bwd(saved, g):
        residuals, target = saved
        return loss.backward(residuals, g), _zero_cotangent(target)

    f.defvjp(f_fwd, f_bwd)
    return f
