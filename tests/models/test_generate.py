"""generate: the key/value-cache decode equals the uncached loop (a full forward over the
growing sequence, argmax of the last position) token for token; sampling is reproducible and
stays in the top k; lengths beyond max_len are refused; it runs under jit on a batch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.models.generate import cached_attention

V, MAX_LEN, T0 = 13, 12, 3
STEPS = MAX_LEN - T0  # every generated sequence fills the context: one compiled forward


@functools.cache
def setup(dtype):
    """The model, its params in `dtype`, a (3, T0) prompt and the jitted full forward."""
    model = jaxbp.GPT(V, features=16, depth=2, heads=2, max_len=MAX_LEN)
    _, params, state = model.init(jax.random.key(0), (MAX_LEN,))
    params = jax.tree.map(lambda p: p.astype(dtype), params)
    prompt = jnp.asarray(np.random.default_rng(1).integers(0, V, (3, T0)))
    return model, params, prompt, jax.jit(lambda p, ids: model.forward(p, state, ids)[0])


def uncached_greedy(forward, params, prompt):
    """The reference: each token is the argmax at the last position of a full forward over the
    sequence so far. The sequence sits in a (B, MAX_LEN) buffer so that one compiled forward
    serves every length: the causal model's logits at position t − 1 see positions < t only.
    The positions not yet written hold random tokens, which a non-causal model would see."""
    noise = np.random.default_rng(9).integers(0, V, (prompt.shape[0], MAX_LEN))
    ids = jnp.asarray(noise, prompt.dtype).at[:, :T0].set(prompt)
    for t in range(T0, MAX_LEN):
        logits = forward(params, ids)  # (B, MAX_LEN, V): every position again
        ids = ids.at[:, t].set(jnp.argmax(logits[:, t - 1], axis=-1))
    return ids


@functools.cache
def greedy(model):
    """generate's greedy decode of STEPS tokens, under jit (one compile per model)."""
    return jax.jit(lambda p, ids: jaxbp.generate(model, p, ids, STEPS, key=None, temperature=0))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_cached_greedy_under_jit_equals_the_uncached_loop(dtype):
    model, params, prompt, forward = setup(dtype)
    got = greedy(model)(params, prompt)  # a batch of 3 prompts of one length
    assert got.shape == (3, MAX_LEN) and got.dtype == prompt.dtype
    np.testing.assert_array_equal(got, uncached_greedy(forward, params, prompt))
    assert len(np.unique(np.asarray(got[:, T0:]))) > 1  # not a degenerate constant stream


def test_blocked_attention_prefill_gives_the_same_tokens():
    model, params, prompt, _ = setup(jnp.float32)
    blocked = jaxbp.GPT(V, features=16, depth=2, heads=2, max_len=MAX_LEN, block_size=2)
    np.testing.assert_array_equal(greedy(blocked)(params, prompt), greedy(model)(params, prompt))


def test_cached_attention_sees_only_the_keys_written():
    q, k, v = np.random.default_rng(2).normal(size=(3, 2, 3, 6, 4))  # (B, H, T, d), T = 6
    t, attend = 3, jax.jit(cached_attention)
    o = attend(q[:, :, :1], k, v, t)  # the query of position 3
    S = np.einsum("bhd,bhkd->bhk", q[:, :, 0], k[:, :, : t + 1]) / 2.0  # s = 1/√4
    P = np.exp(S - S.max(-1, keepdims=True))
    expected = np.einsum("bhk,bhkd->bhd", P / P.sum(-1, keepdims=True), v[:, :, : t + 1])
    np.testing.assert_allclose(o[:, :, 0], expected, rtol=1e-12)
    k[:, :, t + 1 :], v[:, :, t + 1 :] = 1e3, -1e3  # slots not yet written: never seen
    np.testing.assert_array_equal(attend(q[:, :, :1], k, v, t), o)


def in_top_k(forward, params, ids, k):
    """(B, STEPS) bool: is each generated token among the k largest logits before it?"""
    logits = forward(params, ids)[:, T0 - 1 : -1]  # (B, STEPS, V): the predictions of ids[T0:]
    top = jnp.argsort(-logits, axis=-1)[..., :k]
    return jnp.any(top == ids[:, T0:, None], axis=-1)


def test_sampling_is_reproducible_and_stays_in_the_top_k():
    model, params, prompt, forward = setup(jnp.float32)
    k = 3
    draw = jax.jit(
        lambda p, ids, key: jaxbp.generate(model, p, ids, STEPS, key=key, temperature=2.0, top_k=k)
    )
    a, b = draw(params, prompt, jax.random.key(5)), draw(params, prompt, jax.random.key(5))
    np.testing.assert_array_equal(a, b)  # one key, one sequence
    assert not np.array_equal(a, draw(params, prompt, jax.random.key(6)))
    assert bool(in_top_k(forward, params, a, k).all())
    assert not bool(in_top_k(forward, params, a, 1).all())  # it samples: not only the argmax


def test_refuses_more_tokens_than_max_len():
    model, params, prompt, _ = setup(jnp.float32)
    assert greedy(model)(params, prompt).shape == (3, MAX_LEN)  # exactly max_len is allowed
    with pytest.raises(ValueError, match=r"GPT.*max_len = 12.*prompt length 3.*steps = 10"):
        jaxbp.generate(model, params, prompt, STEPS + 1, key=None, temperature=0)


def test_bad_arguments_are_named():
    model, params, prompt, _ = setup(jnp.float32)
    with pytest.raises(TypeError, match="needs a GPT"):
        jaxbp.generate(jaxbp.Dense(3), params, prompt, 2, key=None, temperature=0)
    with pytest.raises(TypeError, match="integer prompt ids"):
        jaxbp.generate(model, params, prompt.astype(jnp.float32), 2, key=None, temperature=0)
    with pytest.raises(ValueError, match=r"prompt ids \(batch, time >= 1\)"):
        jaxbp.generate(model, params, prompt[0], 2, key=None, temperature=0)
    with pytest.raises(ValueError, match="needs a key"):
        jaxbp.generate(model, params, prompt, 2, key=None)
    with pytest.raises(ValueError, match="top_k = 14 exceeds vocab_size = 13"):
        jaxbp.generate(model, params, prompt, 2, key=jax.random.key(0), top_k=14)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        jaxbp.generate(model, params, prompt, 2, key=jax.random.key(0), temperature=-1.0)
