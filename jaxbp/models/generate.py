"""Sampling from a GPT with a key/value cache: each new token costs O(T), not O(T²).

In a causal transformer the key and value of position j depend on the tokens ≤ j only, so once
computed they never change. `generate` keeps them, for every block, in a cache
K, V: (B, H, T, d), T = prompt length T₀ + steps, and runs inference only (no dropout):

    prefill   one forward over the prompt (B, T₀) — the blocks' own MHA op — fills
              K[:, :, :T₀], V[:, :, :T₀] and gives the logits of the first new token
    step t    the token at position t goes through each block alone, h = E[token] + P[t]:
                  a = LN₁(h);   q, k, v = a W_qkv + b_qkv                 (B, H, 1, d) each
                  K[:, :, t] = k;   V[:, :, t] = v
                  o = softmax(s q K[:, :, :t+1]ᵀ) V[:, :, :t+1]          keys j ≤ t, s = 1/√d
                  h ← h + o W_o + b_o;   h ← h + FF(LN₂(h))
              then logits = LN_f(h) Eᵀ (the tied head), and the next token is drawn from them

A step costs O(C²) for the projections and MLP of one position plus O(T·C) for its attention
against the cache, where the uncached loop runs a full forward over all T positions per token,
O(T·C² + T²·C). The cache has a fixed length T, so the whole decode is one `lax.scan` under
one `jax.jit` (positions not yet written are masked out).

Sampling, per step and per prompt, with a key split from `key`: logits / temperature, kept to
the `top_k` largest (None: all), then a categorical draw. temperature = 0 is greedy: the
argmax, no randomness (key may then be None).

Example:
    >>> import jax, jax.numpy as jnp, jaxbp
    >>> model = jaxbp.GPT(vocab_size=11, features=8, depth=2, heads=2, max_len=10)
    >>> _, params, _ = model.init(jax.random.key(0), (10,))
    >>> prompt = jnp.array([[1, 2, 3], [4, 5, 6]])  # (batch, T₀): prompts of one length
    >>> ids = jaxbp.generate(model, params, prompt, 5, key=jax.random.key(1), top_k=3)
    >>> ids.shape, bool((ids[:, :3] == prompt).all())  # the prompt, then 5 new tokens
    ((2, 8), True)
    >>> greedy = jaxbp.generate(model, params, prompt, 7, key=None, temperature=0)
    >>> greedy.shape
    (2, 10)
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxbp.indices import check_range
from jaxbp.layer import Layer, positive_int
from jaxbp.layers import dense, embedding
from jaxbp.layers.attention import _merge_heads, _split_heads, mha_forward
from jaxbp.layers.norm import layer_norm_forward
from jaxbp.layers.transformer import feed_forward_forward, position_forward

GPT_CONFIG = ("vocab_size", "features", "depth", "heads", "max_len")


class KVCache(NamedTuple):
    k: jax.Array  # (B, H, T, d) the keys of positions 0 … T−1 (zeros where not yet written)
    v: jax.Array  # (B, H, T, d) their values


# ------------------------------------------------------------------ one block, two attentions


def cached_attention(q, k_cache, v_cache, t):
    """o = softmax(s q Kᵀ) V over the cached keys j ≤ t only, for the query of position t.

    q: (B, H, 1, d); k_cache, v_cache: (B, H, T, d), t: a scalar. Scores, softmax and sums in
    at least float32, as in the attention op; o comes back in q's dtype.
    """
    dtype, acc = q.dtype, jnp.promote_types(q.dtype, jnp.float32)
    q, K, V = (x.astype(acc) for x in (q, k_cache, v_cache))
    S = jnp.einsum("bhqd,bhkd->bhqk", q, K) / math.sqrt(q.shape[-1])  # (B, H, 1, T)
    visible = jnp.arange(K.shape[2]) <= t  # (T,) the keys written so far
    m = jnp.max(jnp.where(visible, S, -jnp.inf), axis=-1, keepdims=True)  # (B, H, 1, 1)
    E = jnp.exp(jnp.where(visible, S - m, -jnp.inf))  # 0 at unwritten positions
    P = E / E.sum(axis=-1, keepdims=True)  # (B, H, 1, T)
    return jnp.einsum("bhqk,bhkd->bhqd", P, V).astype(dtype)  # (B, H, 1, d)


def cached_mha(params, a, cache, t, *, heads):
    """Self-attention of the one position t, a: (B, 1, C), against the cache: write its k, v
    at t, attend over keys ≤ t; returns (y (B, 1, C), the updated cache)."""
    qkv, _ = dense.dense_forward({"W": params["W_qkv"], "b": params["b_qkv"]}, a)  # (B, 1, 3C)
    q, k, v = (_split_heads(x, heads) for x in jnp.split(qkv, 3, axis=-1))  # (B, H, 1, d)
    K = lax.dynamic_update_slice_in_dim(cache.k, k.astype(cache.k.dtype), t, axis=2)
    V = lax.dynamic_update_slice_in_dim(cache.v, v.astype(cache.v.dtype), t, axis=2)
    o = cached_attention(q, K, V, t)  # (B, H, 1, d)
    y, _ = dense.dense_forward({"W": params["W_o"], "b": params["b_o"]}, _merge_heads(o))
    return y, KVCache(K, V)


def _block(params, h, attend):
    """A TransformerBlock in inference: h + MHA(LN₁(h)), then + FF(LN₂(·)), with the attention
    sublayer `attend(mha_params, a) -> (y, cache)`. Params: the block's serial layout
    ((LN₁, MHA[, Dropout]), (LN₂, FeedForward[, Dropout])); dropout is the identity here."""
    (ln_1, mha, *_), (ln_2, ff, *_) = params
    a, _ = layer_norm_forward(ln_1, h)
    y, cache = attend(mha, a)
    h = h + y
    b, _ = layer_norm_forward(ln_2, h)
    m, _ = feed_forward_forward(ff, b)
    return h + m, cache


def _head(params, h):
    """The tied head on the last position: LN_f(h[:, -1]) Eᵀ, (B, V)."""
    z, _ = layer_norm_forward(params["ln_f"], h[:, -1])  # (B, C)
    return z @ params["tok"]["W"].T


# ------------------------------------------------------------------ prefill, step, sample


def _prefill(params, ids, length, *, heads, block_size):
    """Logits (B, V) of the position after the prompt ids (B, T₀), and one KVCache per block
    padded with zeros to `length` positions."""
    e, _ = embedding.embedding_forward(params["tok"], ids)  # (B, T₀, C)
    h, _ = position_forward(params["pos"], e)  # E[ids] + P[:T₀]
    pad = ((0, 0), (0, 0), (0, length - ids.shape[1]), (0, 0))

    def attend(mha, a):
        y, res = mha_forward(mha, a, heads=heads, causal=True, block_size=block_size)
        return y, KVCache(jnp.pad(res.attention.k, pad), jnp.pad(res.attention.v, pad))

    caches = []
    for p in params["blocks"]:
        h, cache = _block(p, h, attend)
        caches.append(cache)
    return _head(params, h), tuple(caches)


def _step(params, token, t, caches, *, heads):
    """Logits (B, V) after the token (B,) at position t, and the caches with t written."""
    e, _ = embedding.embedding_forward(params["tok"], token[:, None])  # (B, 1, C)
    h, _ = position_forward({"P": lax.dynamic_slice_in_dim(params["pos"]["P"], t, 1)}, e)
    new_caches = []
    for p, cache in zip(params["blocks"], caches):
        attend = functools.partial(cached_mha, cache=cache, t=t, heads=heads)
        h, cache = _block(p, h, attend)
        new_caches.append(cache)
    return _head(params, h), tuple(new_caches)


def _sample(logits, key, temperature, top_k):
    """The next token (B,): the argmax when key is None (greedy), else a draw from
    softmax(logits / temperature) over the top_k largest logits (all when None)."""
    if key is None:
        return jnp.argmax(logits, axis=-1)
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32)) / temperature
    if top_k is None:
        return jax.random.categorical(key, logits, axis=-1)
    values, indices = lax.top_k(logits, top_k)  # (B, k) each: never a token outside them
    pick = jax.random.categorical(key, values, axis=-1)  # (B,) an index into the k
    return jnp.take_along_axis(indices, pick[:, None], axis=-1)[:, 0]


@functools.partial(jax.jit, static_argnames=("steps", "heads", "block_size", "top_k"))
def _decode(params, prompt_ids, key, temperature, *, steps, heads, block_size, top_k):
    """The prompt followed by `steps` tokens: prefill, then a scan of steps − 1 cached steps;
    token i is drawn with the i-th key split from `key` (None: greedy, no temperature)."""
    T0 = prompt_ids.shape[1]
    keys = None if key is None else jax.random.split(key, steps)  # (steps,)
    first_key, step_keys = (None, None) if key is None else (keys[0], keys[1:])
    logits, caches = _prefill(params, prompt_ids, T0 + steps, heads=heads, block_size=block_size)
    first = _sample(logits, first_key, temperature, top_k).astype(prompt_ids.dtype)  # (B,)

    def step(carry, inputs):
        caches, token = carry  # the token at position t, not yet in the caches
        t, key = inputs
        logits, caches = _step(params, token, t, caches, heads=heads)
        token = _sample(logits, key, temperature, top_k).astype(prompt_ids.dtype)
        return (caches, token), token

    positions = T0 + jnp.arange(steps - 1)
    _, rest = lax.scan(step, (caches, first), (positions, step_keys))  # (steps − 1, B)
    return jnp.concatenate([prompt_ids, first[:, None], rest.T], axis=1)


# ------------------------------------------------------------------ the public function


def _gpt_config(model) -> dict:
    config = dict(model.config or ()) if isinstance(model, Layer) else {}
    missing = [k for k in GPT_CONFIG if k not in config]
    if missing:
        got = model.name if isinstance(model, Layer) else type(model).__name__
        raise TypeError(
            f"generate: needs a GPT (a Layer whose config names {', '.join(GPT_CONFIG)}), got "
            f"{got}, whose config lacks {', '.join(missing)}"
        )
    return config


def _check_inputs(model, config, params, prompt_ids, steps):
    name, max_len = model.name, config["max_len"]
    dtype, shape = jnp.result_type(prompt_ids), tuple(jnp.shape(prompt_ids))
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(
            f"generate: {name} needs integer prompt ids (batch, time), got dtype {dtype} with "
            f"shape {shape}; cast them, e.g. ids.astype(jnp.int32)"
        )
    if len(shape) != 2 or shape[1] < 1:
        raise ValueError(f"generate: {name} needs prompt ids (batch, time >= 1), got {shape}")
    check_range(f"generate({name})", "prompt id", prompt_ids, 0, config["vocab_size"])
    steps = positive_int(f"generate({name})", "steps", steps)
    if shape[1] + steps > max_len:
        raise ValueError(
            f"generate: {name} has max_len = {max_len}, but the prompt length {shape[1]} "
            f"(prompt shape {shape}) + steps = {steps} makes {shape[1] + steps} tokens; "
            f"ask for at most {max_len - shape[1]} steps"
        )
    if len(params["blocks"]) != config["depth"]:
        raise ValueError(
            f"generate: {name} has depth {config['depth']}, but params hold "
            f"{len(params['blocks'])} blocks (pass the params that its init returned)"
        )
    return steps


def _check_sampling(name, config, key, temperature, top_k):
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"generate: {name}: temperature must be a number >= 0, got {temperature!r}")
    if temperature < 0:
        raise ValueError(f"generate: {name}: temperature must be >= 0, got {temperature}")
    if top_k is not None:
        top_k = positive_int(f"generate({name})", "top_k", top_k)
        if top_k > config["vocab_size"]:
            raise ValueError(
                f"generate: {name}: top_k = {top_k} exceeds vocab_size = {config['vocab_size']}"
            )
    if key is None and temperature != 0:
        raise ValueError(f"generate: {name}: sampling (temperature {temperature}) needs a key")
    return float(temperature), top_k


def generate(model, params, prompt_ids, steps, *, key, temperature=1.0, top_k=None):
    """The prompts (batch, T₀) followed by `steps` new tokens each: ids (batch, T₀ + steps).

    Decodes with a key/value cache (see the module docstring), jit-compiled: one prefill over
    the prompt, then one position per step through every block. `model` is a `GPT` (its
    `config` gives heads, depth, max_len, …) and `params` its params. All prompts of a batch
    have one length. Sampling: softmax(logits / temperature) over the `top_k` largest logits
    (None: every token), drawn with keys split from `key`; `temperature=0` is greedy argmax
    (then `key` may be None). T₀ + steps > max_len is a ValueError. Works under `jax.jit`.
    """
    config = _gpt_config(model)
    steps = _check_inputs(model, config, params, prompt_ids, steps)
    temperature, top_k = _check_sampling(model.name, config, key, temperature, top_k)
    return _decode(
        params,
        prompt_ids,
        None if temperature == 0 else key,  # greedy needs no key
        temperature,  # traced: a new temperature is no new compile
        steps=steps,
        heads=config["heads"],
        block_size=config.get("block_size"),
        top_k=top_k,
    )
