"""Batch normalization and layer normalization, with their compact backward formulas.

Both normalize, then scale and shift per feature (the last axis, C):

    x̂ = (x − μ) / σ,     σ = √(v + ε),     y = γ ⊙ x̂ + β          γ, β: (C,)

**BatchNorm** takes μ and v (the biased variance) per channel over every axis but the last —
the batch, and the spatial axes of a channels-last image — so m = N · (spatial size) values
share one mean. In train mode it uses the batch statistics and updates the running averages in
`state` (momentum ρ, the flax convention):

    mean ← ρ · mean + (1 − ρ) · μ,     var ← ρ · var + (1 − ρ) · v

In eval mode (`train=False`) it uses the running `state['mean']`, `state['var']` instead: then
μ and σ are constants and the layer is affine. Backward, with δ = ∂L/∂y and sums over the m
values of a channel:

    ∂L/∂β = Σ δ,    ∂L/∂γ = Σ δ ⊙ x̂
    train:  ∂L/∂x = (γ / σ) ⊙ (δ − (1/m) ∂L/∂β − x̂ ⊙ (1/m) ∂L/∂γ)      (μ and v depend on x)
    eval:   ∂L/∂x = (γ / σ) ⊙ δ

The compact train formula is the chain rule through μ and v collected: ∂x̂/∂x contributes δ,
∂μ/∂x the −mean(δ) term, ∂v/∂x the −x̂·mean(δ x̂) term. The forward keeps x̂ and 1/σ.

**LayerNorm** takes μ and v over the last axis of each example (no state, same in train and
eval); with g = γ ⊙ δ and means over the C features:

    ∂L/∂x = (1/σ) ⊙ (g − mean(g) − x̂ ⊙ mean(g ⊙ x̂))

Example:
    >>> import jax, jax.numpy as jnp, jaxbp
    >>> bn = jaxbp.BatchNorm()
    >>> _, params, state = bn.init(jax.random.key(0), (4, 4, 3))
    >>> y, res, new_state = bn.forward(params, state, jnp.ones((2, 4, 4, 3)), train=True)
    >>> dparams, dx = bn.backward(params, res, jnp.ones_like(y))
    >>> sorted(new_state), dparams["scale"].shape, dx.shape
    (['mean', 'var'], (3,), (2, 4, 4, 3))
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxbp.layer import Layer, as_shape, check_float_input
from jaxbp.precision import acc_mean, acc_sum, accumulation_dtype


class BatchNormTrainResiduals(NamedTuple):
    x_hat: jax.Array  # (N, ..., C) normalized input
    inv_std: jax.Array  # (C,) 1/σ of the batch


class BatchNormEvalResiduals(NamedTuple):
    x_hat: jax.Array  # (N, ..., C) input normalized with the running statistics
    inv_std: jax.Array  # (C,) 1/σ from the running variance


class LayerNormResiduals(NamedTuple):
    x_hat: jax.Array  # (..., C)
    inv_std: jax.Array  # (..., 1) 1/σ of each example


# ------------------------------------------------------------------------------ batch norm


def batch_norm_forward(params, state, x, *, momentum=0.9, eps=1e-5, train=False):
    """(y, residuals, new_state) of y = γ ⊙ (x − μ)/√(v + ε) + β, statistics over all but the
    last axis (train) or the running ones in `state` (eval)."""
    axes = tuple(range(x.ndim - 1))  # batch and spatial axes
    gamma, beta = params["scale"], params["bias"]  # (C,)
    if train:
        mu = acc_mean(x, axis=axes)  # (C,); half precision: accumulated in float32
        centered = x - mu  # (N, ..., C)
        var = acc_mean(centered * centered, axis=axes)  # (C,) biased
        inv_std = lax.rsqrt(var + eps)  # (C,)
        x_hat = centered * inv_std
        new_state = {
            "mean": momentum * state["mean"] + (1 - momentum) * mu.astype(state["mean"].dtype),
            "var": momentum * state["var"] + (1 - momentum) * var.astype(state["var"].dtype),
        }
        residuals = BatchNormTrainResiduals(x_hat, inv_std)
    else:
        inv_std = lax.rsqrt(state["var"].astype(x.dtype) + eps)  # (C,)
        x_hat = (x - state["mean"].astype(x.dtype)) * inv_std
        new_state = state
        residuals = BatchNormEvalResiduals(x_hat, inv_std)
    return gamma * x_hat + beta, residuals, new_state


def batch_norm_backward(params, residuals, dy):
    """(dparams, dx); the train formula when `residuals` came from train mode."""
    x_hat, inv_std = residuals  # (N, ..., C), (C,)
    axes = tuple(range(dy.ndim - 1))
    dbeta = acc_sum(dy, axis=axes)  # (C,) Σ δ
    dgamma = acc_sum(dy * x_hat, axis=axes)  # (C,) Σ δ x̂
    scale = params["scale"] * inv_std  # (C,) γ/σ
    if isinstance(residuals, BatchNormTrainResiduals):
        m = dy.size // dy.shape[-1]  # values per channel
        dx = scale * (dy - dbeta / m - x_hat * (dgamma / m))  # (N, ..., C)
    else:
        dx = scale * dy
    dparams = {
        "scale": dgamma.astype(params["scale"].dtype),
        "bias": dbeta.astype(params["bias"].dtype),
    }
    return dparams, dx.astype(x_hat.dtype)


def _init_scale_bias(name: str, in_shape):
    """The shared init of both norms: γ = 1, β = 0 per feature (the last axis)."""
    in_shape = as_shape(in_shape)
    if len(in_shape) < 1:
        raise ValueError(
            f"{name}: needs per-example input of rank >= 1 (features last), got {in_shape}"
        )
    c = in_shape[-1]
    return in_shape, {"scale": jnp.ones((c,)), "bias": jnp.zeros((c,))}


def BatchNorm(*, momentum: float = 0.9, eps: float = 1e-5) -> Layer:
    """Batch normalization over all axes but the last (channels-last), with running statistics.

    `train=True`: batch statistics, running averages updated in the returned state.
    `train=False`: the running statistics (start: mean 0, var 1). Params {'scale', 'bias'}
    start at 1 and 0; state {'mean', 'var'} holds the running averages (biased variance).

    Example:
        >>> import jax, jaxbp
        >>> out_shape, params, state = jaxbp.BatchNorm().init(jax.random.key(0), (10,))
        >>> out_shape, params["scale"].shape, state["var"].shape
        ((10,), (10,), (10,))
    """
    name = f"BatchNorm(momentum={momentum}, eps={eps})"
    if not 0 <= momentum < 1:
        raise ValueError(f"{name}: momentum must be in [0, 1), got {momentum}")
    if not eps > 0:
        raise ValueError(f"{name}: eps must be positive, got {eps}")

    def init(key, in_shape):
        in_shape, params = _init_scale_bias(name, in_shape)
        c = in_shape[-1]
        state = {"mean": jnp.zeros((c,)), "var": jnp.ones((c,))}
        return in_shape, params, state

    def forward(params, state, x, *, key=None, train=False):
        check_float_input(name, x)
        c = params["scale"].shape[0]
        if x.ndim < 2 or x.shape[-1] != c:
            raise ValueError(f"{name}: expected input (batch, ..., {c}), got {tuple(x.shape)}")
        return batch_norm_forward(params, state, x, momentum=momentum, eps=eps, train=train)

    def backward(params, residuals, dy):
        return batch_norm_backward(params, residuals, dy)

    return Layer(init, forward, backward, name)


# ------------------------------------------------------------------------------ layer norm


def layer_norm_forward(params, x, *, eps=1e-5):
    """y = γ ⊙ (x − μ)/√(v + ε) + β with μ, v over the last axis of each example."""
    mu = acc_mean(x, axis=-1, keepdims=True)  # (..., 1); half precision: in float32
    centered = x - mu
    inv_std = lax.rsqrt(acc_mean(centered * centered, axis=-1, keepdims=True) + eps)  # (..., 1)
    x_hat = centered * inv_std  # (..., C)
    return params["scale"] * x_hat + params["bias"], LayerNormResiduals(x_hat, inv_std)


def layer_norm_backward(params, residuals, dy):
    x_hat, inv_std = residuals  # (..., C), (..., 1)
    rows = tuple(range(dy.ndim - 1))
    dparams = {  # (C,)
        "scale": acc_sum(dy * x_hat, axis=rows).astype(params["scale"].dtype),
        "bias": acc_sum(dy, axis=rows).astype(params["bias"].dtype),
    }
    # dx in the accumulation dtype (float32 for half precision), rounded once: its three terms
    # cancel (Σ_c dx = 0), and rounding each to bfloat16 left a GPT's embedding gradients
    # ~5x less accurate than autodiff's
    dtype, acc = x_hat.dtype, accumulation_dtype(x_hat.dtype)
    x_hat, inv_std = x_hat.astype(acc), inv_std.astype(acc)
    g = params["scale"].astype(acc) * dy.astype(acc)  # ∂L/∂x̂: (..., C)
    dx = inv_std * (
        g
        - jnp.mean(g, axis=-1, keepdims=True)
        - x_hat * jnp.mean(g * x_hat, axis=-1, keepdims=True)
    )
    return dparams, dx.astype(dtype)


def LayerNorm(*, eps: float = 1e-5) -> Layer:
    """Layer normalization over the last axis of each example; params {'scale', 'bias'}: (C,).

    Example:
        >>> import jax, jax.numpy as jnp, jaxbp
        >>> ln = jaxbp.LayerNorm()
        >>> _, params, state = ln.init(jax.random.key(0), (5, 8))
        >>> y, res, _ = ln.forward(params, state, jnp.arange(80.0).reshape(2, 5, 8))
        >>> round(float(y[0, 0].mean()), 6), round(float(y[0, 0].std()), 3)
        (0.0, 1.0)
    """
    name = f"LayerNorm(eps={eps})"
    if not eps > 0:
        raise ValueError(f"{name}: eps must be positive, got {eps}")

    def init(key, in_shape):
        in_shape, params = _init_scale_bias(name, in_shape)
        return in_shape, params, ()

    def forward(params, state, x, *, key=None, train=False):
        check_float_input(name, x)
        c = params["scale"].shape[0]
        if x.ndim < 2 or x.shape[-1] != c:
            raise ValueError(f"{name}: expected input (batch, ..., {c}), got {tuple(x.shape)}")
        y, res = layer_norm_forward(params, x, eps=eps)
        return y, res, state

    def backward(params, residuals, dy):
        return layer_norm_backward(params, residuals, dy)

    return Layer(init, forward, backward, name)
