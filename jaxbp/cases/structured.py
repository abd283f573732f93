"""Registry cases for structured data: graph layers (GCN, GAT, readouts) and the Tree-LSTM.

Graphs are random disjoint unions (one graph per batch element) with isolated nodes, repeated
edges and self-edges; one case is a single-node graph. Trees have uneven arity (0 to 3
children) and some are a single node.
"""

from __future__ import annotations

import numpy as np

import jaxbp
from jaxbp.cases.base import layer_case, size
from jaxbp.layers.graph import batch_graphs
from jaxbp.layers.tree import batch_trees


def _random_graph(rng, dim, max_nodes=5):
    n = size(rng, 1, max_nodes)
    e = int(rng.integers(0, 2 * n + 1))  # may be 0: every node isolated
    edges = rng.integers(0, n, size=(e, 2))
    if e >= 2:
        edges[-1] = edges[0]  # a repeated edge
    return rng.normal(size=(n, dim)), edges


def _attention_graph(rng, dim):
    """Three nodes, node 2 hearing from 0 and 1, with x_1 = −x_0 and x_2 ≈ 0.

    GAT's destination score t_i is shared by all of node i's in-edges, so it cancels in their
    softmax except through the LeakyReLU: ∂L/∂a_dst is exactly 0 unless some node's in-edge
    scores straddle 0, and a relative comparison of rounding noise is meaningless. Here the
    scores into node 2 are ±s_0 + t_2 with |t_2| mostly < |s_0|: one on each side of 0 (as long as
    GAT is the first layer). Likewise a node whose in-edges all share one source has α ≡ 1."""
    v = rng.normal(size=dim)
    x = np.stack([v, -v, 0.1 * rng.normal(size=dim)])
    edges = np.concatenate([[[0, 2], [1, 2]], rng.integers(0, 3, size=(2, 2))])
    return x, edges


def _graphs(dim, max_nodes=5):
    """A batch of random graphs, the first one an `_attention_graph`."""

    def x(rng, batch):
        graphs = [_random_graph(rng, dim, max_nodes) for _ in range(batch - 1)]
        return batch_graphs([_attention_graph(rng, dim), *graphs], np.float64)

    return x


def _gcn(rng):
    dim = size(rng, 1, 4)
    layer = jaxbp.GCN(size(rng, 1, 4), self_loops=bool(rng.integers(0, 2)))
    return jaxbp.serial(layer, jaxbp.Nodes()), (dim,), {"x": _graphs(dim)}


def _gat(rng):
    dim = size(rng, 1, 4)
    layer = jaxbp.GAT(
        size(rng, 1, 3),
        heads=size(rng, 1, 3),
        concat=bool(rng.integers(0, 2)),
        self_loops=bool(rng.integers(0, 2)),
    )
    return jaxbp.serial(layer, jaxbp.Nodes()), (dim,), {"x": _graphs(dim)}


def _single_node(rng):
    """Single-node graphs (isolated or with self-edges) beside one three-node graph."""
    dim = size(rng, 1, 4)
    net = jaxbp.serial(jaxbp.GAT(2, heads=2), jaxbp.GCN(3), jaxbp.Nodes())
    return net, (dim,), {"x": _graphs(dim, max_nodes=1)}


def _readout(rng):
    dim, mode = size(rng, 1, 4), ("mean", "sum")[int(rng.integers(0, 2))]
    net = jaxbp.serial(
        jaxbp.GAT(size(rng, 1, 3), heads=2, concat=False),
        jaxbp.node_map(jaxbp.Tanh()),
        jaxbp.GCN(size(rng, 1, 5)),
        jaxbp.node_map(jaxbp.Dense(size(rng, 1, 3))),
        jaxbp.GraphReadout(mode=mode),
    )
    return net, (dim,), {"x": _graphs(dim)}


def _random_tree(rng, dim, depth):
    arity = int(rng.integers(0, 4)) if depth > 0 else 0  # 0..3 children: uneven arity
    return (rng.normal(size=dim), [_random_tree(rng, dim, depth - 1) for _ in range(arity)])


def _trees(dim, max_depth):
    def x(rng, batch):
        depth = int(rng.integers(0, max_depth + 1))
        trees = [_random_tree(rng, dim, depth) for _ in range(batch)]
        if max_depth > 0:  # one child at least: a batch of leaves sends nothing to U
            x0, kids = trees[0]
            trees[0] = (x0, [*kids, _random_tree(rng, dim, max(depth, 1) - 1)])
        return batch_trees(trees, np.float64)

    return x


def _tree_lstm(max_depth, all_nodes=False):
    def build(rng):
        dim, hidden = size(rng, 1, 4), size(rng, 1, 5)
        layer = jaxbp.TreeLSTM(hidden, all_nodes=all_nodes)
        return layer, (dim,), {"x": _trees(dim, max_depth)}

    return build


CASES = [
    layer_case("GCN", _gcn),
    layer_case("GAT", _gat),
    layer_case("GCN+GAT(single node)", _single_node),
    layer_case("GAT+GCN+GraphReadout", _readout),
    layer_case("TreeLSTM", _tree_lstm(3)),
    layer_case("TreeLSTM(all_nodes)", _tree_lstm(3, all_nodes=True)),
    layer_case(
        "TreeLSTM(single node)", _tree_lstm(0), zero_leaves=("params['U_f']", "params['U_iou']")
    ),
]
