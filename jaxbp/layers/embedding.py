"""Embedding: look rows of a table up by integer id.

    y[..., :] = W[ids[...], :]          W: (vocab_size, features),  ids: integers in [0, vocab_size)

The backward is a scatter-add: every position adds its δ into the row it read,

    ∂L/∂W[v, :] = Σ_{positions p with ids[p] = v} δ[p, :]

so a row used twice gets both gradients and unused rows get zero. The ids are discrete: they
get no gradient, and the backward returns dx = None (a `serial` placing the embedding first
never needs it).

Ids outside [0, vocab_size) are refused: with concrete ids (no `jit`) the layer raises
ValueError naming the id, where it is and the range; under `jit` wrap the function in
`jaxbp.indices.checked` to get the same error from `checkify`. Under `jit` without it nothing is
checked, and an out-of-range id reads a zero vector and adds no gradient (the `forward` and
`embedding_forward`/`embedding_backward` ops below never check: that is the layer's job).

Example:
    >>> import jax, jax.numpy as jnp, jaxbp
    >>> emb = jaxbp.Embedding(5, 3)
    >>> out_shape, params, _ = emb.init(jax.random.key(0), (4,))
    >>> ids = jnp.array([[1, 2, 1, 0]])
    >>> y, res, _ = emb.forward(params, (), ids)
    >>> dparams, dx = emb.backward(params, res, jnp.ones_like(y))
    >>> out_shape, dparams["W"][:, 0].tolist(), dx
    ((4, 3), [1.0, 2.0, 1.0, 0.0, 0.0], None)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbp import init as initializers
from jaxbp.indices import check_range
from jaxbp.layer import Layer, as_shape, positive_int


class EmbeddingResiduals(NamedTuple):
    ids: jax.Array  # (N, ...) integer ids


def embedding_init(key, vocab_size: int, features: int, *, w_init=None):
    """{'W': (vocab_size, features)}, N(0, 1) unless `w_init` says otherwise."""
    w_init = initializers.normal(1.0) if w_init is None else initializers.get(w_init)
    return {"W": w_init(key, (vocab_size, features))}


def embedding_forward(params, ids):
    """y = W[ids]: (N, ...) -> (N, ..., features)."""
    y = jnp.take(params["W"], ids, axis=0, mode="fill", fill_value=0)
    return y, EmbeddingResiduals(ids)


def embedding_backward(params, residuals, dy):
    """dW = scatter-add of δ into the rows read; ids get no gradient (dx = None)."""
    W = params["W"]  # (V, features); dy: (N, ..., features)
    dW = jnp.zeros_like(W).at[residuals.ids].add(dy, mode="drop")
    return {"W": dW}, None


def Embedding(vocab_size: int, features: int, *, w_init=None) -> Layer:
    """Integer ids (batch, ...) -> vectors (batch, ..., features) from a (vocab_size, features)
    table.

    `w_init`: initializer of the table (default N(0, 1)). Ids must lie in [0, vocab_size):
    ValueError otherwise, or under `jit` a checkify error inside `jaxbp.indices.checked` (see
    the module docstring for what happens without it).
    """
    name = f"Embedding({vocab_size}, {features})"
    vocab_size = positive_int(name, "vocab_size", vocab_size)
    features = positive_int(name, "features", features)

    def init_layer(key, in_shape):
        in_shape = as_shape(in_shape)
        return (*in_shape, features), embedding_init(key, vocab_size, features, w_init=w_init), ()

    def forward_layer(params, state, ids, *, key=None, train=False):
        dtype = jnp.result_type(ids)
        if not jnp.issubdtype(dtype, jnp.integer):
            raise TypeError(
                f"{name}: expected integer ids of shape (batch, ...), got dtype {dtype} with "
                f"shape {jnp.shape(ids)}; cast them, e.g. ids.astype(jnp.int32)"
            )
        if jnp.ndim(ids) < 1:
            raise ValueError(f"{name}: expected ids with a batch axis, got a scalar")
        check_range(name, "id", ids, 0, vocab_size)
        y, res = embedding_forward(params, ids)
        return y, res, state

    def backward_layer(params, residuals, dy):
        return embedding_backward(params, residuals, dy)

    return Layer(init_layer, forward_layer, backward_layer, name)
