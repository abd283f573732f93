r"""Dense (fully connected) layer: z = a W + b.

In the article's column-vector notation z⁽ˡ⁾ = W⁽ˡ⁾ a⁽ˡ⁻¹⁾ + b⁽ˡ⁾. jaxbp stores a batch of row
vectors, so the kernel is the transpose: `W` has shape (in, out) and z = a W + b. With
δ = ∂L/∂z the chain rule gives

$$
\frac{\partial L}{\partial W} = a^\top \delta, \qquad
\frac{\partial L}{\partial b} = \sum_{\text{batch}} \delta, \qquad
\frac{\partial L}{\partial a} = \delta \, W^\top
$$

(the article's δ a⁽ˡ⁻¹⁾ᵀ and W⁽ˡ⁾ᵀ δ⁽ˡ⁾, transposed).

Leading axes beyond the batch (e.g. time) are allowed: the layer acts on the last axis and the
parameter gradients sum over every other axis.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxbp.layers import dense
    >>> params = dense.dense_init(jax.random.key(0), 3, 2)
    >>> y, res = dense.dense_forward(params, jnp.ones((4, 3)))
    >>> dparams, dx = dense.dense_backward(params, res, jnp.ones_like(y))
    >>> dparams["W"].shape, dparams["b"].shape, dx.shape
    ((3, 2), (2,), (4, 3))
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from jaxbp import init as initializers
from jaxbp.layer import Layer, as_shape, check_float_input, positive_int
from jaxbp.precision import acc_sum


class DenseResiduals(NamedTuple):
    a: jax.Array  # the input, (..., in)


def dense_init(
    key, in_features: int, features: int, *, w_init="xavier_uniform", b_init="zeros", bias=True
):
    """{'W': (in, out), 'b': (out,)} — 'b' is left out when `bias=False`."""
    kw, kb = jax.random.split(key)
    params = {"W": initializers.get(w_init)(kw, (in_features, features))}
    if bias:
        params["b"] = initializers.get(b_init)(kb, (features,))
    return params


def dense_forward(params, a):
    z = a @ params["W"]  # (..., in) @ (in, out) -> (..., out)
    if "b" in params:
        z = z + params["b"]
    return z, DenseResiduals(a)


def dense_backward(params, residuals, dz):
    a = residuals.a  # (..., in); dz: (..., out)
    W = params["W"]
    rows_a = a.reshape(-1, a.shape[-1])  # (N, in), N = batch x leading axes
    rows_dz = dz.reshape(-1, dz.shape[-1])  # (N, out)
    dparams = {"W": rows_a.T @ rows_dz}  # (in, out) = aᵀ δ
    if "b" in params:
        dparams["b"] = acc_sum(rows_dz, axis=0)  # (out,), Σ in float32 for half precision
    da = dz @ W.T  # (..., in) = δ Wᵀ
    return dparams, da


def Dense(features: int, *, w_init="xavier_uniform", b_init="zeros", bias: bool = True) -> Layer:
    """Fully connected layer z = a W + b on the last axis of the input.

    Args:
        features: number of output features.
        w_init, b_init: initializer names or functions from `jaxbp.init`.
        bias: whether to add `b`.
    """
    name = f"Dense({features})"
    features = positive_int(name, "features", features)
    w_init, b_init = initializers.get(w_init), initializers.get(b_init)

    def init_layer(key, in_shape):
        in_shape = as_shape(in_shape)
        if len(in_shape) < 1:
            raise ValueError(f"{name}: needs per-example input of rank >= 1, got shape {in_shape}")
        params = dense_init(key, in_shape[-1], features, w_init=w_init, b_init=b_init, bias=bias)
        return (*in_shape[:-1], features), params, ()

    def forward_layer(params, state, x, *, key=None, train=False):
        check_float_input(name, x)
        in_dim = params["W"].shape[0]
        if x.ndim < 2 or x.shape[-1] != in_dim:
            raise ValueError(
                f"{name}: expected input of shape (batch, ..., {in_dim}), got {tuple(x.shape)}"
            )
        y, res = dense_forward(params, x)
        return y, res, state

    def backward_layer(params, residuals, dy):
        return dense_backward(params, residuals, dy)

    return Layer(init_layer, forward_layer, backward_layer, name)
