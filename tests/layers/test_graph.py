"""Graph layers: structure errors, jit behaviour, batching, sparse = dense formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp.layers import graph

EDGES = np.array([[0, 1], [1, 0], [1, 2], [2, 1], [1, 2]])  # a repeated edge, node 3 isolated


def _graph():
    return {"x": jnp.asarray(np.random.default_rng(0).normal(size=(4, 3))), "edges": EDGES}


def test_gcn_equals_the_dense_normalized_adjacency():
    g = _graph()
    A = np.zeros((4, 4))
    for s, d in EDGES:
        A[d, s] += 1
    A_tilde = A + np.eye(4)
    d_inv = 1 / np.sqrt(A_tilde.sum(1))
    params = graph.gcn_init(jax.random.key(0), 3, 2)
    y, _ = graph.gcn_forward(params, g["x"], jnp.asarray(EDGES))
    expected = (d_inv[:, None] * A_tilde * d_inv[None]) @ g["x"] @ params["W"] + params["b"]
    np.testing.assert_allclose(y, expected, atol=1e-12)


def test_gat_rows_of_attention_sum_to_one_and_isolated_node_attends_to_itself():
    g = _graph()
    params = graph.gat_init(jax.random.key(1), 3, 2, heads=2)
    y, res = graph.gat_forward(params, g["x"], jnp.asarray(EDGES))
    sums = jax.ops.segment_sum(res.alpha, res.dst, 4)
    np.testing.assert_allclose(sums, 1.0, atol=1e-12)
    z = (g["x"] @ params["W"])[3]  # node 3 has only its self-loop: α = 1
    np.testing.assert_allclose(y[3], z + params["b"], atol=1e-12)


@pytest.mark.parametrize("make", [lambda: jaxbp.GCN(2), lambda: jaxbp.GAT(2, heads=2)])
def test_bad_edges_raise_outside_jit(make):
    layer = make()
    _, params, state = layer.init(jax.random.key(0), (3,))
    g = _graph()
    message = r"edges 4 at index \(1, 1\) is outside the valid range \[0, 4\)"
    with pytest.raises(ValueError, match=message):
        layer.forward(params, state, {**g, "edges": np.array([[0, 1], [2, 4]])})
    with pytest.raises(ValueError, match=r"edges -1 at index \(0, 0\)"):
        layer.forward(params, state, {**g, "edges": np.array([[-1, 1]])})
    with pytest.raises(TypeError, match="edges must be integers"):
        layer.forward(params, state, {**g, "edges": EDGES.astype(float)})
    with pytest.raises(ValueError, match=r"\(E, 2\)"):
        layer.forward(params, state, {**g, "edges": EDGES[:, :1]})
    with pytest.raises(ValueError, match="node features"):
        layer.forward(params, state, {**g, "x": jnp.ones((4, 5))})


def test_out_of_range_edge_under_jit_is_dropped_as_documented():
    layer = jaxbp.serial(jaxbp.GCN(2, self_loops=False), jaxbp.Nodes())
    _, params, state = layer.init(jax.random.key(0), (3,))
    g = _graph()
    run = jax.jit(lambda g: layer.forward(params, state, g)[0])
    bad = run({**g, "edges": np.array([[0, 1], [9, 2], [-3, 3]])})
    assert np.all(np.isfinite(bad))
    np.testing.assert_allclose(bad[2], params[0]["b"])  # the message from "node 9" read zeros


def test_batch_graphs_and_readout_match_per_graph_means():
    rng = np.random.default_rng(0)
    graphs = [(rng.normal(size=(n, 3)), rng.integers(0, n, size=(2 * n, 2))) for n in (1, 4, 2)]
    batch = graph.batch_graphs(graphs, np.float64)
    assert batch["sizes"].tolist() == [1, 4, 2]
    assert batch["graph"].tolist() == [0, 1, 1, 1, 1, 2, 2]
    net = jaxbp.serial(jaxbp.GCN(2), jaxbp.GraphReadout(mode="mean"))
    _, params, state = net.init(jax.random.key(0), (3,))
    pooled = net.forward(params, state, batch)[0]
    for i, (x, e) in enumerate(graphs):
        one = jaxbp.serial(jaxbp.GCN(2), jaxbp.Nodes()).forward(
            params[:1] + ((),), state, {"x": x, "edges": e}
        )
        np.testing.assert_allclose(pooled[i], one[0].mean(0), atol=1e-12)


def test_readout_needs_graph_index():
    layer = jaxbp.GraphReadout(mode="sum")
    with pytest.raises(TypeError, match="batch_graphs"):
        layer.forward((), (), _graph())
    with pytest.raises(ValueError, match="mode"):
        jaxbp.GraphReadout(mode="max")


def test_half_precision_accumulates_in_float32():
    x = jnp.full((3000, 1), 1.0, jnp.bfloat16)
    total = graph.segment_sum(x, jnp.zeros(3000, jnp.int32), 1)
    assert total.dtype == jnp.bfloat16
    assert float(total[0, 0]) == 3008.0  # 3000 in bfloat16; a bfloat16 running sum stops at 256
