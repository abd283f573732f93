"""Embedding: lookup, scatter-add backward, no gradient for ids, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp


def test_lookup_and_scatter_add():
    emb = jaxbp.Embedding(6, 2)
    out_shape, params, _ = emb.init(jax.random.key(0), (3,))
    ids = jnp.array([[0, 4, 4], [5, 0, 4]])
    y, res, _ = emb.forward(params, (), ids)
    assert out_shape == (3, 2)
    np.testing.assert_array_equal(y, params["W"][ids])
    dy = jax.random.normal(jax.random.key(1), y.shape)
    dparams, dx = emb.backward(params, res, dy)
    assert dx is None
    expected = np.zeros((6, 2))
    for (b, t), v in np.ndenumerate(np.asarray(ids)):
        expected[v] += np.asarray(dy[b, t])
    np.testing.assert_allclose(dparams["W"], expected)


def test_out_of_range_ids_are_refused_eagerly_and_read_zeros_under_unchecked_jit():
    emb = jaxbp.Embedding(3, 2)
    _, params, _ = emb.init(jax.random.key(0), (2,))
    with pytest.raises(ValueError, match=r"Embedding\(3, 2\): id 7 at index \(0, 1\)"):
        emb.forward(params, (), jnp.array([[1, 7]]))

    def forward_backward(ids):
        y, res, _ = emb.forward(params, (), ids)
        return y, emb.backward(params, res, jnp.ones_like(y))[0]

    y, dparams = jax.jit(forward_backward)(jnp.array([[1, 7]]))  # jit without checks
    np.testing.assert_array_equal(y[0, 1], 0.0)
    np.testing.assert_array_equal(dparams["W"].sum(1), [0.0, 2.0, 0.0])


def test_errors():
    emb = jaxbp.Embedding(3, 2)
    _, params, _ = emb.init(jax.random.key(0), (2,))
    with pytest.raises(TypeError, match=r"Embedding\(3, 2\).*integer ids.*float"):
        emb.forward(params, (), jnp.ones((1, 2)))
    with pytest.raises(ValueError, match="vocab_size"):
        jaxbp.Embedding(0, 2)
