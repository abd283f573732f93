"""Inverted dropout: zero each input with probability `rate`, scale the survivors by 1/(1 − rate).

In train mode, with a keep mask κ ~ Bernoulli(1 − rate) drawn from the `key` argument:

    y = x ⊙ κ / (1 − rate)          ∂L/∂x = δ ⊙ κ / (1 − rate)

so the expected activation is unchanged and eval mode (`train=False`) is the identity. The
forward stores the boolean mask (one byte per element), not the input. The key is an explicit
argument — pass a fresh one each step (`jax.random.split`); `train=True` without a key is an
error.

Example:
    >>> import jax, jax.numpy as jnp, jaxbp
    >>> layer = jaxbp.Dropout(0.5)
    >>> y, res, _ = layer.forward((), (), jnp.ones((2, 4)), key=jax.random.key(0), train=True)
    >>> sorted(set(y.ravel().tolist())) in ([0.0, 2.0], [2.0], [0.0])
    True
    >>> _, dx = layer.backward((), res, jnp.ones_like(y))
    >>> bool((dx == y).all())
    True
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbp.layer import Layer, as_shape, check_float_input


class DropoutResiduals(NamedTuple):
    keep: jax.Array | None  # (N, ...) bool mask κ; None in eval mode (identity)


def dropout_forward(x, *, key, rate: float, train: bool):
    """y = x ⊙ κ / (1 − rate) in train mode, y = x in eval mode."""
    if not train or rate == 0:
        return x, DropoutResiduals(None)
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)  # κ: (N, ...) bool
    y = jnp.where(keep, x * (1.0 / (1.0 - rate)), jnp.zeros((), x.dtype))
    return y, DropoutResiduals(keep)


def dropout_backward(residuals, dy, *, rate: float):
    """∂L/∂x = δ ⊙ κ / (1 − rate) (δ itself in eval mode)."""
    if residuals.keep is None:
        return dy
    return jnp.where(residuals.keep, dy * (1.0 / (1.0 - rate)), jnp.zeros((), dy.dtype))


def Dropout(rate: float) -> Layer:
    """Inverted dropout; `rate` is the probability of dropping an element (0 <= rate < 1).

    forward(..., key=k, train=True) draws the mask from `k`; with train=False it is the identity.
    """
    name = f"Dropout({rate})"
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise TypeError(f"{name}: rate must be a float in [0, 1), got {rate!r}")
    if not 0 <= rate < 1:
        raise ValueError(
            f"{name}: rate (the probability of dropping) must be in [0, 1), got {rate}"
        )
    rate = float(rate)

    def init(key, in_shape):
        return as_shape(in_shape), (), ()

    def forward_layer(params, state, x, *, key=None, train=False):
        check_float_input(name, x)
        if train and rate > 0 and key is None:
            raise ValueError(
                f"{name}: train=True needs a random key, e.g. forward(..., key=jax.random.key(0), "
                "train=True); pass train=False for evaluation"
            )
        y, res = dropout_forward(x, key=key, rate=rate, train=train)
        return y, res, state

    def backward_layer(params, residuals, dy):
        return (), dropout_backward(residuals, dy, rate=rate)

    return Layer(init, forward_layer, backward_layer, name)
