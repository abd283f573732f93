"""A GPT: token embedding + positions + N pre-LayerNorm transformer blocks + a final LayerNorm
+ an output head tied to the token embedding, with its backward written out.

With ids (B, T), the token table E: (V, C) and the position table P: (max_len, C):

    h₀ = E[ids] + P[:T]                          (B, T, C)
    h_l = Block_l(h_{l−1}),   l = 1 … N          causal transformer blocks
    z = LN(h_N)                                   (B, T, C)
    logits = z Eᵀ                                 (B, T, V)  the head reuses E (tied weights)

E is used twice, so its gradient is the sum over its two uses (the multivariate chain rule):

    ∂L/∂E = Σ_{b,t} δ_logits[b, t]ᵀ z[b, t]         the head:   (V, C) = δᵀ z
          + Σ_{b,t: ids[b,t] = v} ∂L/∂h₀[b, t]       the lookup: scatter-add into row v

and ∂L/∂z = δ_logits E flows back through LN, the blocks and the positions (∂L/∂P[t] =
Σ_b ∂L/∂h₀[b, t]). `jaxbp.losses.token_cross_entropy()` is the matching loss: the mean over all B·T
positions of −log softmax(logits)[target].

Example:
    >>> import jax, jax.numpy as jnp, jaxbp
    >>> model = jaxbp.GPT(vocab_size=11, features=8, depth=2, heads=2, max_len=6)
    >>> _, params, state = model.init(jax.random.key(0), (6,))
    >>> ids = jax.random.randint(jax.random.key(1), (3, 6), 0, 11)
    >>> step = jaxbp.loss_and_grad(model, jaxbp.losses.token_cross_entropy())
    >>> loss, grads, _ = step(params, state, ids[:, :-1], ids[:, 1:])
    >>> grads["tok"]["W"].shape, bool(loss > 0)
    ((11, 8), True)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxbp import init as initializers
from jaxbp.indices import check_range
from jaxbp.layer import Layer, as_shape, positive_int, split_key
from jaxbp.layers import embedding
from jaxbp.layers.norm import layer_norm_backward, layer_norm_forward
from jaxbp.layers.transformer import (
    TransformerBlock,
    check_length,
    position_backward,
    position_forward,
)


class GPTResiduals(NamedTuple):
    tokens: embedding.EmbeddingResiduals  # the ids (B, T)
    blocks: tuple  # one entry per block
    ln_f: Any  # the final LayerNorm's residuals
    z: jax.Array  # (B, T, C) the head's input LN(h_N)


def gpt_init(key, blocks, vocab_size, features, max_len, T):
    k_tok, k_pos, *k_blocks = jax.random.split(key, 2 + len(blocks))
    block_params, block_state = [], []
    for block, k in zip(blocks, k_blocks):
        _, p, s = block.init(k, (T, features))
        block_params.append(p)
        block_state.append(s)
    params = {
        "tok": {"W": initializers.normal(0.02)(k_tok, (vocab_size, features))},
        "pos": {"P": initializers.normal(0.02)(k_pos, (max_len, features))},
        "blocks": tuple(block_params),
        "ln_f": {"scale": jnp.ones((features,)), "bias": jnp.zeros((features,))},
    }
    return params, tuple(block_state)


def gpt_forward(blocks, params, state, ids, *, key=None, train=False):
    """logits (B, T, V), residuals, new state."""
    e, r_tok = embedding.embedding_forward(params["tok"], ids)  # (B, T, C) = E[ids]
    h, _ = position_forward(params["pos"], e)  # h₀ = E[ids] + P[:T]
    block_res, new_state = [], []
    for block, p, s, k in zip(blocks, params["blocks"], state, split_key(key, len(blocks))):
        h, r, s = block.forward(p, s, h, key=k, train=train)
        block_res.append(r)
        new_state.append(s)
    z, r_ln = layer_norm_forward(params["ln_f"], h)  # (B, T, C)
    logits = jnp.einsum("btc,vc->btv", z, params["tok"]["W"])  # z Eᵀ
    return logits, GPTResiduals(r_tok, tuple(block_res), r_ln, z), tuple(new_state)


def gpt_backward(blocks, params, residuals, dlogits):
    """dparams (ids get no gradient: dx = None); ∂L/∂E = head use + lookup use."""
    E = params["tok"]["W"]  # (V, C)
    dE_head = jnp.einsum("btv,btc->vc", dlogits, residuals.z)  # δᵀ z
    dz = jnp.einsum("btv,vc->btc", dlogits, E)  # δ E
    d_ln, dh = layer_norm_backward(params["ln_f"], residuals.ln_f, dz)
    d_blocks = [None] * len(blocks)
    for i in reversed(range(len(blocks))):
        d_blocks[i], dh = blocks[i].backward(params["blocks"][i], residuals.blocks[i], dh)
    d_pos, dh0 = position_backward(params["pos"], (), dh)  # ∂L/∂h₀ = ∂L/∂(E[ids])
    d_lookup, _ = embedding.embedding_backward(params["tok"], residuals.tokens, dh0)  # scatter-add
    dE = d_lookup["W"] + dE_head  # the tied weight: the sum over its two uses
    dparams = {"tok": {"W": dE}, "pos": d_pos, "blocks": tuple(d_blocks), "ln_f": d_ln}
    return dparams, None


def _check_ids(name, ids, vocab_size, max_len):
    dtype = jnp.result_type(ids)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(
            f"{name}: expected integer token ids of shape (batch, time), got dtype {dtype} "
            f"with shape {jnp.shape(ids)}; cast them, e.g. ids.astype(jnp.int32)"
        )
    if jnp.ndim(ids) != 2 or jnp.shape(ids)[1] < 1:
        raise ValueError(f"{name}: expected ids of shape (batch, time >= 1), got {jnp.shape(ids)}")
    check_length(name, jnp.shape(ids)[1], max_len, jnp.shape(ids))
    check_range(name, "token id", ids, 0, vocab_size)


def GPT(
    vocab_size: int,
    *,
    features: int = 128,
    depth: int = 4,
    heads: int = 4,
    max_len: int = 128,
    mlp_ratio: int = 4,
    dropout: float = 0.0,
    block_size: int | None = None,
) -> Layer:
    """A GPT language model on integer ids (batch, time) -> logits (batch, time, vocab_size).

    Causal pre-LN `TransformerBlock`s, a final LayerNorm and a head tied to the token table
    (see the module docstring for the tied gradient). Params: {'tok': {'W'}, 'pos': {'P'},
    'blocks': (one per block, `depth` of them), 'ln_f': {'scale', 'bias'}}. `features` is the
    model width C, `block_size` selects the blocked attention (no T×T array); `dropout`
    applies inside the blocks in train mode.
    """
    name = f"GPT(vocab={vocab_size}, features={features}, depth={depth}, heads={heads})"
    vocab_size = positive_int(name, "vocab_size", vocab_size)
    features = positive_int(name, "features", features)
    depth = positive_int(name, "depth", depth)
    heads = positive_int(name, "heads", heads)
    max_len = positive_int(name, "max_len", max_len)
    if features % heads:
        raise ValueError(f"{name}: features = {features} is not divisible by heads = {heads}")
    opts = dict(mlp_ratio=mlp_ratio, causal=True, dropout=dropout, block_size=block_size)
    blocks = tuple(TransformerBlock(heads, **opts) for _ in range(depth))

    def init(key, in_shape):
        in_shape = as_shape(in_shape)
        if len(in_shape) != 1:
            raise ValueError(f"{name}: needs per-example ids of shape (time,), got {in_shape}")
        check_length(name, in_shape[0], max_len, in_shape)
        params, state = gpt_init(key, blocks, vocab_size, features, max_len, in_shape[0])
        return (in_shape[0], vocab_size), params, state

    def forward(params, state, ids, *, key=None, train=False):
        _check_ids(name, ids, vocab_size, max_len)
        return gpt_forward(blocks, params, state, ids, key=key, train=train)

    def backward(params, residuals, dlogits):
        return gpt_backward(blocks, params, residuals, dlogits)

    config = (("vocab_size", vocab_size), ("features", features), ("depth", depth),
              ("heads", heads), ("max_len", max_len), ("mlp_ratio", mlp_ratio),
              ("dropout", dropout), ("block_size", block_size))  # fmt: skip
    return Layer(init, forward, backward, name, config=config)
