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


# ------------------------------------------- every integer input, outside jit and under checked
# Each entry: (forward of the integer input, a good input, bad inputs with their messages).
# docs/checking.md "Integer inputs" lists the same inputs.


def _layer_fn(layer, in_shape):
    _, params, state = layer.init(jax.random.key(0), in_shape)
    return lambda inp: layer.forward(params, state, inp)[0]


def _gpt():
    f = _layer_fn(jaxbp.GPT(5, features=4, depth=1, heads=1, max_len=4), (3,))
    good = jnp.array([[0, 4, 1]])
    bad = [
        (jnp.array([[0, 7, 1]]), r"GPT\(vocab=5.*\): token id 7 at index \(0, 1\).*\[0, 5\)"),
        (jnp.array([[0, 1, -1]]), r"GPT\(vocab=5.*\): token id -1 at index \(0, 2\).*\[0, 5\)"),
    ]
    return f, good, bad


def _generate_prompt():
    model = jaxbp.GPT(5, features=4, depth=1, heads=1, max_len=4)
    _, params, _ = model.init(jax.random.key(0), (3,))
    f = lambda ids: jaxbp.generate(model, params, ids, 1, key=None, temperature=0.0)  # noqa: E731
    bad = [(jnp.array([[0, 5, 1]]), r"generate\(GPT\(vocab=5.*\)\): prompt id 5 at index \(0, 1\)")]
    return f, jnp.array([[0, 4, 1]]), bad


def _embedding():
    f = _layer_fn(jaxbp.Embedding(4, 2), (2,))
    bad = [
        (jnp.array([[0, 4]]), r"Embedding\(4, 2\): id 4 at index \(0, 1\)"),
        (jnp.array([[-3, 0]]), r"Embedding\(4, 2\): id -3 at index \(0, 0\)"),
    ]
    return f, jnp.array([[0, 3]]), bad


def _graph(make, readout=False):
    layer = jaxbp.serial(make(), jaxbp.GraphReadout()) if readout else make()
    f = _layer_fn(layer, (2,))
    good = {
        k: jnp.asarray(v)
        for k, v in jaxbp.layers.batch_graphs(
            [(np.ones((2, 2)), [[0, 1], [1, 0]]), (np.ones((1, 2)), [[0, 0]])], np.float64
        ).items()
    }
    if not readout:
        good = {"x": good["x"], "edges": good["edges"]}
    return f, good


def _gcn_edges():
    f, good = _graph(lambda: jaxbp.GCN(2))
    bad = [
        ({**good, "edges": good["edges"].at[1, 1].set(3)}, r"GCN\(2\): edges 3 at index \(1, 1\)"),
        ({**good, "edges": good["edges"].at[0, 0].set(-1)}, r"edges -1 at index \(0, 0\)"),
    ]
    return f, good, bad


def _gat_edges():
    f, good = _graph(lambda: jaxbp.GAT(2, heads=1))
    bad = [({**good, "edges": good["edges"].at[2, 0].set(5)}, r"edges 5 at index \(2, 0\)")]
    return f, good, bad


def _readout_segments():
    f, good = _graph(lambda: jaxbp.GCN(2), readout=True)
    bad = [
        ({**good, "graph": good["graph"].at[2].set(2)}, r"graph 2 at index \(2,\).*\[0, 2\)"),
        ({**good, "graph": good["graph"].at[0].set(-1)}, r"graph -1 at index \(0,\)"),
        ({**good, "sizes": good["sizes"].at[1].set(4)}, r"sizes 4 at index \(1,\).*\[0, 4\)"),
    ]
    return f, good, bad


def _tree():
    layer = jaxbp.TreeLSTM(2)
    f = _layer_fn(layer, (2,))
    leaf = (np.ones(2), [])
    batch = jaxbp.layers.batch_trees([(np.zeros(2), [leaf, leaf]), leaf], np.float64)
    good = {k: jnp.asarray(v) for k, v in batch.items()}
    children, roots = good["children"], good["roots"]
    bad = [
        ({**good, "children": children.at[0, 0, 1].set(-2)}, r"children -2 at index \(0, 0, 1\)"),
        ({**good, "children": children.at[0, 1, 0].set(3)}, r"children 3 at index \(0, 1, 0\)"),
        ({**good, "roots": roots.at[1].set(9)}, r"roots 9 at index \(1,\)"),
    ]
    return f, good, bad


def _labels(loss_name):
    if loss_name == "accuracy":
        f = lambda t: train.accuracy(jnp.zeros((2, 3)), t)  # noqa: E731
    else:
        loss = losses.softmax_cross_entropy()
        f = lambda t: loss.forward(jnp.zeros((2, 3)), t)[0]  # noqa: E731
    bad = [
        (jnp.array([0, 3]), rf"{loss_name}: label 3 at index \(1,\).*\[0, 3\)"),
        (jnp.array([-1, 0]), rf"{loss_name}: label -1 at index \(0,\)"),
    ]
    return f, jnp.array([0, 2]), bad


def _token_targets():
    loss = jaxbp.losses.token_cross_entropy()
    f = lambda t: loss.forward(jnp.zeros((1, 2, 3)), t)[0]  # noqa: E731
    bad = [(jnp.array([[0, 3]]), r"label 3 at index \(0, 1\).*\[0, 3\)")]
    return f, jnp.array([[0, 2]]), bad


INTEGER_INPUTS = {
    "GPT token ids": _gpt,
    "generate prompt ids": _generate_prompt,
    "Embedding ids": _embedding,
    "GCN edges": _gcn_edges,
    "GAT edges": _gat_edges,
    "GraphReadout segment ids and sizes": _readout_segments,
    "TreeLSTM children and roots": _tree,
    "softmax_cross_entropy labels": lambda: _labels("softmax_cross_entropy"),
    "token_cross_entropy targets": _token_targets,
    "accuracy labels": lambda: _labels("accuracy"),
}


@pytest.mark.parametrize("which", INTEGER_INPUTS)
def test_every_integer_input_is_refused_outside_jit_and_under_checked(which):
    f, good, bad = INTEGER_INPUTS[which]()
    f(good)  # the valid input passes outside jit
    checked = jax.jit(indices.checked(f))
    err, _ = checked(good)
    assert err.get() is None
    for inp, message in bad:
        with pytest.raises(ValueError, match=message):
            f(inp)
        err, _ = checked(inp)
        assert err.get() is not None and re.search(message, err.get()), (which, err.get())


def test_batch_graphs_refuses_an_edge_past_its_own_graph():
    with pytest.raises(ValueError, match=r"batch_graphs: node of graph 1's edges 1 at index"):
        jaxbp.layers.batch_graphs([(np.ones((2, 1)), [[0, 1]]), (np.ones((1, 1)), [[0, 1]])])


# ------------------------------------------------ `checked` whatever the function did before


def test_checked_reports_on_a_step_that_already_ran_without_it():
    model = jaxbp.Dense(10)
    _, params, state = model.init(jax.random.key(0), (3,))
    step = jaxbp.loss_and_grad(model, losses.softmax_cross_entropy())  # jit-compiled
    x = jnp.ones((2, 3))
    step(params, state, x, jnp.array([1, 2]))  # traced and cached without the checks
    err, _ = indices.checked(step)(params, state, x, jnp.array([1, 10]))
    assert "label 10 at index (1,) is outside the valid range [0, 10)" in err.get()
    err, _ = jax.jit(indices.checked(step))(params, state, x, jnp.array([1, 10]))
    assert "label 10 at index (1,)" in err.get()
    # and the other way round: the checked trace is not reused by a plain call
    value, _, _ = step(params, state, x, jnp.array([1, 10]))
    assert np.isfinite(value)
