"""Registry cases for attention and the transformer: MultiHeadAttention (whole-matrix and
blocked, causal or not, with a key-padding mask), PositionalEmbedding, TransformerBlock,
the token cross-entropy and a 2-layer GPT.

Sizes are small and random: T in [1, 7] (T = 1 and odd T included), half the time the
blocked form with a block size in [1, 3] (so T is often not a multiple of the block), 1–2
heads of width 1–3, causal or not. The masked case makes the first example's keys all padding,
so its rows are fully masked (output 0, gradient 0, no NaN), and pads the other examples' tails
at random. The transformer and GPT cases normalize over >= 4 features: LayerNorm over 2 is
x̂ = ±1, a step too curved for central differences. Every combination (whole/blocked ×
causal × mask × T) is also checked deterministically in tests/layers/test_attention.py.
"""

from __future__ import annotations

import numpy as np

import jaxbp
from jaxbp.cases.base import layer_case, loss_case, model_case, size


def _attention_dims(rng):
    heads = size(rng, 1, 2)
    return size(rng, 1, 7), heads, heads * size(rng, 1, 3)  # T, heads, dim


def _block(rng):
    """None (the whole-matrix form) or a block size in [1, 3], half the time each."""
    return size(rng, 1, 3) if rng.integers(0, 2) else None


def _mha(rng):
    T, heads, dim = _attention_dims(rng)
    causal = bool(rng.integers(0, 2))
    return jaxbp.MultiHeadAttention(heads, causal=causal, block_size=_block(rng)), (T, dim)


def _key_mask(rng, batch, T):
    lengths = rng.integers(1, T + 1, size=batch)
    if batch > 1:  # every key of the first example is padding: fully masked rows (a batch of
        lengths[0] = 0  # one such example would have no gradient to check at all)
    return np.arange(T)[None, :] < lengths[:, None]


def _mha_masked(rng):
    T, heads, dim = _attention_dims(rng)
    layer = jaxbp.MultiHeadAttention(heads, causal=bool(rng.integers(0, 2)), block_size=_block(rng))

    def x(rng, batch):
        return {"x": rng.normal(size=(batch, T, dim)), "mask": _key_mask(rng, batch, T)}

    return layer, (T, dim), {"x": x}


def _positional(rng):
    T = size(rng, 1, 6)
    return jaxbp.PositionalEmbedding(T + size(rng, 0, 3)), (T, size(rng, 1, 4))


def _feed_forward(rng):
    extra = tuple(size(rng, 1, 3) for _ in range(int(rng.integers(0, 2))))  # e.g. a time axis
    return jaxbp.FeedForward(size(rng, 1, 6)), (*extra, size(rng, 1, 5))


def _transformer_block(rng):
    heads = size(rng, 1, 2)
    dim = heads * size(rng, 4 // heads, 4 // heads + 1)  # LayerNorm over >= 4 features
    dropout = 0.3 if rng.integers(0, 2) else 0.0
    layer = jaxbp.TransformerBlock(
        heads,
        mlp_ratio=size(rng, 1, 2),
        causal=bool(rng.integers(0, 2)),
        dropout=dropout,
        block_size=_block(rng),
    )
    return layer, (size(rng, 1, 6), dim), {"train": dropout > 0}


def _token_ce(rng, batch):
    T, V = size(rng, 1, 5), size(rng, 2, 7)
    logits = 3 * rng.normal(size=(batch, T, V))
    return jaxbp.losses.token_cross_entropy(), logits, rng.integers(0, V, size=(batch, T))


def _gpt(rng, batch):
    heads = size(rng, 1, 2)
    V, T = size(rng, 2, 9), size(rng, 1, 6)
    model = jaxbp.GPT(
        V,
        features=heads * size(rng, 4 // heads, 4 // heads + 1),  # LayerNorm over >= 4 features
        depth=2,
        heads=heads,
        max_len=T + size(rng, 0, 2),
        mlp_ratio=1,
        block_size=_block(rng),
    )
    ids = rng.integers(0, V, size=(batch, T + 1))
    return model, jaxbp.losses.token_cross_entropy(), ids[:, :-1], ids[:, 1:]


CASES = [
    layer_case("MultiHeadAttention", _mha),
    layer_case("MultiHeadAttention+mask", _mha_masked),
    layer_case("PositionalEmbedding", _positional),
    layer_case("FeedForward", _feed_forward),
    layer_case("TransformerBlock", _transformer_block),
    loss_case("token_cross_entropy", _token_ce),
    model_case("GPT (2 layers, tied head)", _gpt),
]
