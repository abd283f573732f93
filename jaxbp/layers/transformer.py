"""Transformer parts: learned positional embeddings and the pre-LayerNorm transformer block.

**PositionalEmbedding(max_len)** adds a learned row per position to a (batch, time, dim)
input, y[b, t] = x[b, t] + P[t]. Backward: dx = δ, and each used row gets the sum over the
batch, ∂L/∂P[t] = Σ_b δ[b, t] (rows t ≥ T get 0).

**FeedForward(hidden_features)** is the block's GELU MLP, y = gelu(a W₁ + b₁) W₂ + b₂,
written as one layer so that it keeps z = a W₁ + b₁ and recomputes gelu(z) in the backward
instead of storing both (serial(Dense, Gelu, Dense) would keep both: one (…, hidden) array
more per block).

**TransformerBlock(heads)** is the pre-LayerNorm block of GPT-2, built from the library's
layers with `serial` and `residual`:

    h = x + Dropout(MHA(LN₁(x)))                 attention sublayer
    y = h + Dropout(W₂ gelu(W₁ LN₂(h) + b₁) + b₂)  MLP sublayer, hidden width mlp_ratio · dim

so its backward is the chain rule of those layers walked in reverse: each residual passes δ
straight through and adds the sublayer's input gradient, dx = δ + J_fᵀ δ.

Example:
    >>> import jax, jax.numpy as jnp, jaxbp
    >>> block = jaxbp.serial(jaxbp.PositionalEmbedding(16), jaxbp.TransformerBlock(2))
    >>> out_shape, params, state = block.init(jax.random.key(0), (5, 8))
    >>> y, res, _ = block.forward(params, state, jnp.ones((3, 5, 8)))
    >>> dparams, dx = block.backward(params, res, jnp.ones_like(y))
    >>> out_shape, dparams[0]["P"].shape, dx.shape
    ((5, 8), (16, 8), (3, 5, 8))
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbp import init as initializers
from jaxbp.activations import gelu, gelu_prime
from jaxbp.layer import Layer, as_shape, check_float_input, positive_int, residual, serial
from jaxbp.layers import dense
from jaxbp.layers.attention import MultiHeadAttention
from jaxbp.layers.dropout import Dropout
from jaxbp.layers.norm import LayerNorm

# ------------------------------------------------------------------ positional embedding


def position_init(key, max_len: int, features: int, *, w_init=None):
    """{'P': (max_len, features)}, N(0, 0.02²) unless `w_init` says otherwise."""
    w_init = initializers.normal(0.02) if w_init is None else initializers.get(w_init)
    return {"P": w_init(key, (max_len, features))}


def position_forward(params, x):
    """y = x + P[:T] for x: (B, T, C); no residuals are needed."""
    T = x.shape[1]
    return x + params["P"][:T].astype(x.dtype), ()


def position_backward(params, residuals, dy):
    """dP[t] = Σ_b δ[b, t] for t < T (0 beyond); dx = δ."""
    max_len = params["P"].shape[0]
    T = dy.shape[1]
    dP = jnp.pad(dy.sum(axis=0), ((0, max_len - T), (0, 0)))  # (max_len, C)
    return {"P": dP.astype(params["P"].dtype)}, dy


def check_length(name: str, T: int, max_len: int, shape) -> None:
    if T > max_len:
        raise ValueError(
            f"{name}: sequence length T = {T} (input shape {tuple(shape)}) exceeds "
            f"max_len = {max_len}; use a larger max_len or shorter sequences"
        )


def PositionalEmbedding(max_len: int, *, w_init=None) -> Layer:
    """Learned positions on (batch, time, dim): y = x + P[:time], P: (max_len, dim), N(0, 0.02²)
    unless `w_init` says otherwise. Inputs longer than `max_len` are a ValueError."""
    name = f"PositionalEmbedding({max_len})"
    max_len = positive_int(name, "max_len", max_len)

    def init(key, in_shape):
        in_shape = as_shape(in_shape)
        if len(in_shape) != 2:
            raise ValueError(f"{name}: needs per-example input (time, dim), got {in_shape}")
        check_length(name, in_shape[0], max_len, in_shape)
        return in_shape, position_init(key, max_len, in_shape[1], w_init=w_init), ()

    def forward(params, state, x, *, key=None, train=False):
        check_float_input(name, x)
        dim = params["P"].shape[1]
        if x.ndim != 3 or x.shape[-1] != dim:
            raise ValueError(f"{name}: expected input (batch, time, {dim}), got {tuple(x.shape)}")
        check_length(name, x.shape[1], max_len, x.shape)
        y, res = position_forward(params, x)
        return y, res, state

    def backward(params, residuals, dy):
        return position_backward(params, residuals, dy)

    return Layer(init, forward, backward, name)


# ------------------------------------------------------------------ the GELU MLP


class FeedForwardResiduals(NamedTuple):
    a: jax.Array  # (..., C) the input
    z: jax.Array  # (..., hidden) the pre-activation; gelu(z) is recomputed, not stored


def feed_forward_init(key, in_features: int, hidden_features: int):
    """{'in': {'W': (C, hidden), 'b'}, 'out': {'W': (hidden, C), 'b'}}, Xavier-uniform W, b = 0."""
    k_in, k_out = jax.random.split(key)
    return {
        "in": dense.dense_init(k_in, in_features, hidden_features),
        "out": dense.dense_init(k_out, hidden_features, in_features),
    }


def feed_forward_forward(params, a):
    """y = gelu(a W₁ + b₁) W₂ + b₂; keeps a and z = a W₁ + b₁ only."""
    z, _ = dense.dense_forward(params["in"], a)  # (..., hidden)
    y, _ = dense.dense_forward(params["out"], gelu(z))  # (..., C)
    return y, FeedForwardResiduals(a, z)


def feed_forward_backward(params, residuals, dy):
    """The chain rule through both Dense layers and the GELU, gelu(z) recomputed from z:

    dW₂ = gelu(z)ᵀ δ,  dg = δ W₂ᵀ,  dz = gelu′(z) ⊙ dg,  dW₁ = aᵀ dz,  da = dz W₁ᵀ
    """
    a, z = residuals
    d_out, dg = dense.dense_backward(params["out"], dense.DenseResiduals(gelu(z)), dy)
    d_in, da = dense.dense_backward(params["in"], dense.DenseResiduals(a), gelu_prime(z) * dg)
    return {"in": d_in, "out": d_out}, da


def FeedForward(hidden_features: int) -> Layer:
    """The transformer's MLP on the last axis: y = gelu(a W₁ + b₁) W₂ + b₂, params
    {'in': {'W', 'b'}, 'out': {'W', 'b'}}. The same numbers as serial(Dense(hidden_features),
    Gelu(), Dense(C)), but it keeps z and not gelu(z) as well: one (…, hidden) array less per
    block.
    """
    name = f"FeedForward({hidden_features})"
    hidden_features = positive_int(name, "hidden_features", hidden_features)

    def init(key, in_shape):
        in_shape = as_shape(in_shape)
        if len(in_shape) < 1:
            raise ValueError(f"{name}: needs per-example input of rank >= 1, got {in_shape}")
        return in_shape, feed_forward_init(key, in_shape[-1], hidden_features), ()

    def forward(params, state, x, *, key=None, train=False):
        check_float_input(name, x)
        dim = params["in"]["W"].shape[0]
        if x.ndim < 2 or x.shape[-1] != dim:
            raise ValueError(f"{name}: expected input (batch, ..., {dim}), got {tuple(x.shape)}")
        y, res = feed_forward_forward(params, x)
        return y, res, state

    def backward(params, residuals, dy):
        return feed_forward_backward(params, residuals, dy)

    return Layer(init, forward, backward, name)


# ------------------------------------------------------------------ transformer block


def _block_layers(dim, heads, mlp_ratio, causal, dropout, block_size):
    """serial(residual(LN, MHA, Dropout), residual(LN, FeedForward, Dropout))."""
    drop = (Dropout(dropout),) if dropout > 0 else ()
    mha = MultiHeadAttention(heads, causal=causal, block_size=block_size)
    attention = serial(LayerNorm(), mha, *drop)
    mlp = serial(LayerNorm(), FeedForward(mlp_ratio * dim), *drop)
    return serial(residual(attention), residual(mlp))


def TransformerBlock(
    heads: int,
    *,
    mlp_ratio: int = 4,
    causal: bool = True,
    dropout: float = 0.0,
    block_size: int | None = None,
) -> Layer:
    """Pre-LayerNorm transformer block on (batch, time, dim): x + MHA(LN(x)), then
    h + MLP(LN(h)) with a GELU MLP of width mlp_ratio · dim (see the module docstring).

    `causal` and `block_size` go to the `MultiHeadAttention`; `dropout` (rate) applies after
    each sublayer in train mode. Params: the tuple structure of the `serial` above.
    """
    name = f"TransformerBlock({heads}, mlp_ratio={mlp_ratio}, causal={causal})"
    heads = positive_int(name, "heads", heads)
    mlp_ratio = positive_int(name, "mlp_ratio", mlp_ratio)
    Dropout(dropout)  # validates the rate
    build = functools.lru_cache(maxsize=None)(
        lambda dim: _block_layers(dim, heads, mlp_ratio, causal, dropout, block_size)
    )

    def dim_of(params):
        return params[0][0]["scale"].shape[0]  # LN₁'s scale: (dim,)

    def init(key, in_shape):
        in_shape = as_shape(in_shape)
        if len(in_shape) != 2:
            raise ValueError(f"{name}: needs per-example input (time, dim), got {in_shape}")
        return build(in_shape[-1]).init(key, in_shape)

    def forward(params, state, x, *, key=None, train=False):
        return build(dim_of(params)).forward(params, state, x, key=key, train=train)

    def backward(params, residuals, dy):
        return build(dim_of(params)).backward(params, residuals, dy)

    return Layer(init, forward, backward, name)
