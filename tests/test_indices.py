"""jaxbp.indices: out-of-range integer inputs are refused, eagerly and under jit (checkify)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxbp
from jaxbp import indices, losses, train


@pytest.fixture
def embedding():
    emb = jaxbp.Embedding(10, 4)
    _, params, _ = emb.init(jax.random.key(0), (3,))
    return emb, params


@pytest.mark.parametrize("bad, where", [(12, "(0, 1)"), (-1, "(0, 1)"), (10, "(0, 1)")])
def test_embedding_refuses_out_of_range_ids_outside_jit(embedding, bad, where):
    emb, params = embedding
    message = rf"Embedding\(10, 4\): id {bad} at index {re.escape(where)} .*range \[0, 10\)"
    with pytest.raises(ValueError, match=message):
        emb.forward(params, (), jnp.array([[1, bad, 3]]))


def test_embedding_accepts_the_whole_valid_range(embedding):
    emb, params = embedding
    y, _, _ = emb.forward(params, (), jnp.arange(10).reshape(2, 5))
    np.testing.assert_array_equal(y[1, 4], params["W"][9])


def test_cross_entropy_and_accuracy_refuse_out_of_range_labels():
    logits = jnp.zeros((2, 3))
    with pytest.raises(
        ValueError, match=r"softmax_cross_entropy: label 7 at index \(1,\).*\[0, 3\)"
    ):
        losses.softmax_cross_entropy().forward(logits, jnp.array([0, 7]))
    with pytest.raises(ValueError, match=r"accuracy: label -2 at index \(0,\).*\[0, 3\)"):
        train.accuracy(logits, jnp.array([-2, 1]))


def test_under_jit_checked_mode_reports_the_same_error(embedding):
    emb, params = embedding
    loss = losses.softmax_cross_entropy()

    def objective(ids, labels):
        y = emb.forward(params, (), ids)[0].sum(axis=1)  # (batch, 4) logits
        return loss.forward(y, labels)[0]

    run = jax.jit(indices.checked(objective))
    err, value = run(jnp.array([[1, 2, 3]]), jnp.array([2]))
    assert err.get() is None and np.isfinite(value)
    err, _ = run(jnp.array([[1, 2, 12]]), jnp.array([2]))
    with pytest.raises(
        checkify.JaxRuntimeError, match=r"Embedding\(10, 4\): id 12 at index \(0, 2\)"
    ):
        err.throw()
    err, _ = run(jnp.array([[1, 2, 3]]), jnp.array([4]))
    assert "softmax_cross_entropy: label 4 at index (0,) is outside the valid range [0, 4)" in (
        err.get()
    )


def test_under_plain_jit_nothing_is_checked_and_the_documented_fallback_holds(embedding):
    emb, params = embedding
    y = jax.jit(lambda ids: emb.forward(params, (), ids)[0])(jnp.array([[1, 12]]))
    np.testing.assert_array_equal(y[0, 1], jnp.zeros(4))  # an out-of-range id reads zeros
    loss = losses.softmax_cross_entropy()
    value = jax.jit(lambda z, t: loss.forward(z, t)[0])(jnp.zeros((2, 3)), jnp.array([1, 7]))
    np.testing.assert_allclose(value, np.log(3) / 2)  # the bad row adds nothing


def test_check_range_is_the_helper_other_layers_call():
    indices.check_range("GraphConv", "edge source", np.array([[0, 1], [2, 0]]), 0, 3)
    with pytest.raises(ValueError, match=r"GraphConv: edge source 3 at index \(1, 0\)"):
        indices.check_range("GraphConv", "edge source", np.array([[0, 1], [3, 0]]), 0, 3)
    indices.check_range("Tree", "child", np.zeros((0,), int), 0, 1)  # empty is fine
