"""Tree-LSTM: batching by level, one tree at a time = the batch, structure errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.layers import tree


def _leaf(rng):
    return (rng.normal(size=2), [])


def _trees(rng):
    uneven = (rng.normal(size=2), [_leaf(rng), (rng.normal(size=2), [_leaf(rng)]), _leaf(rng)])
    return [uneven, _leaf(rng), (rng.normal(size=2), [_leaf(rng), _leaf(rng)])]


def _single(params, node):
    """The recursive definition, one node at a time (the reference for the batched scan)."""
    x, kids = node
    H = params["U_f"].shape[0]
    states = [_single(params, k) for k in kids]
    wx = x @ params["W"] + params["b"]
    h_sum = sum((h for h, _ in states), np.zeros(H))
    z = wx[: 3 * H] + h_sum @ params["U_iou"]
    i, o, u = jax.nn.sigmoid(z[:H]), jax.nn.sigmoid(z[H : 2 * H]), jnp.tanh(z[2 * H :])
    c = i * u
    for h_k, c_k in states:
        c = c + jax.nn.sigmoid(wx[3 * H :] + h_k @ params["U_f"]) * c_k
    return o * jnp.tanh(c), c


def test_batched_levels_equal_the_recursive_definition():
    rng = np.random.default_rng(0)
    trees = _trees(rng)
    layer = jaxbp.TreeLSTM(3)
    _, params, _ = layer.init(jax.random.key(0), (2,))
    batch = tree.batch_trees(trees, np.float64, levels=4, width=7, arity=4)
    h = jax.jit(lambda b: layer.forward(params, (), b)[0])(batch)
    for b, t in enumerate(trees):
        np.testing.assert_allclose(h[b], _single(params, t)[0], atol=1e-12)


def _nodes_by_level(trees):
    levels = [list(trees)]
    while any(kids for _, kids in levels[-1]):
        levels.append([k for _, kids in levels[-1] for k in kids])
    return levels


def test_all_nodes_gives_every_subtree_its_own_state():
    rng = np.random.default_rng(3)
    trees = _trees(rng)
    layer = jaxbp.TreeLSTM(3, all_nodes=True)
    _, params, _ = layer.init(jax.random.key(0), (2,))
    batch = tree.batch_trees(trees, np.float64, levels=4, width=7, arity=4)
    h = jax.jit(lambda b: layer.forward(params, (), b)[0])(batch)
    assert h.shape == (4, 7, 3)
    for lv, nodes in enumerate(_nodes_by_level(trees)):
        for m, node in enumerate(nodes):
            np.testing.assert_allclose(h[lv, m], _single(params, node)[0], atol=1e-12)
    roots = jaxbp.TreeLSTM(3).forward(params, (), batch)[0]
    np.testing.assert_allclose(h[0, batch["roots"]], roots, atol=0)


def test_bad_children_raise_outside_jit():
    rng = np.random.default_rng(1)
    layer = jaxbp.TreeLSTM(3)
    _, params, _ = layer.init(jax.random.key(0), (2,))
    batch = tree.batch_trees(_trees(rng), np.float64)
    kids = batch["children"].copy()
    kids[1, 0, 0] = 3  # level 2 has 1 node (the width is 5): index 3 is outside it
    with pytest.raises(ValueError, match=r"children\[1, 0, 0\] = 3 points outside the level below"):
        layer.forward(params, (), {**batch, "children": kids})
    kids = batch["children"].copy()
    kids[-1, 0, 0] = 0  # the deepest level has no level below
    with pytest.raises(ValueError, match="outside the level below"):
        layer.forward(params, (), {**batch, "children": kids})
    with pytest.raises(ValueError, match=r"children .* is outside the valid range \[-1"):
        layer.forward(params, (), {**batch, "children": batch["children"] - 2})
    with pytest.raises(TypeError, match="children must be integers"):
        layer.forward(params, (), {**batch, "children": batch["children"].astype(float)})
    with pytest.raises(ValueError, match="roots"):
        layer.forward(params, (), {**batch, "roots": np.array([0, 9])})


def test_batch_trees_rejects_a_shape_too_small():
    with pytest.raises(ValueError, match="need"):
        tree.batch_trees(_trees(np.random.default_rng(2)), levels=2)
