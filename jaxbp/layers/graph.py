"""Graph layers: GCN, GAT, and a readout for graph classification — over an edge list.

A graph (or a batch of graphs, as one disjoint union) is a dict::

    {"x":     (N, F) float   node features, one row per node (the "batch" axis is the node axis)
     "edges": (E, 2) int     one row (src, dst) per directed edge; a message flows src -> dst
     "graph": (N,)   int     which graph each node belongs to   (only the readout needs it)
     "sizes": (G,)   int     nodes per graph                    (only the readout needs it)}

An undirected graph lists both directions (`edges_from_networkx` does). Repeated edges count
with their multiplicity (A[i, j] = number of rows (j, i)); isolated nodes are allowed. Graph
layers map such a dict to the same dict with new "x" (so they compose in `serial`); `node_map`
applies a per-node layer (Dense, Relu, Dropout, ...) to "x", `Nodes()` ends a network with the
node features (N, F') and `GraphReadout` with one row per graph (G, F'). The integer leaves are
structure, not values: they get no gradient, and each backward returns None in their place
(dx = {"x": dX, "edges": None, ...}), the way `Embedding` treats its ids.

The backward of a gather along edges is a scatter-add (segment sum) into the nodes: a node that
sends several messages sums their gradients.

**GCN** (Kipf & Welling 2017), with Ã = A + I (self-loops unless `self_loops=False`) and
d̃_i = Σ_j Ã_ij (the in-degree, self-loop included):

    Z = H W,   H'_i = Σ_{e=(j→i)} n_e Z_j + b,   n_e = d̃_j^(−1/2) d̃_i^(−1/2)   (H' = Â H W + b)
    δZ_j = Σ_{e=(j→i)} n_e δH'_i    (Âᵀ δ),   ∂L/∂W = Hᵀ δZ,   ∂L/∂b = Σ_i δH'_i,   ∂L/∂H = δZ Wᵀ

A node of in-degree 0 (possible only without self-loops) gets n = 0: it receives nothing.

**GAT** (Veličković et al. 2018), per head k, over each node's in-edges e = (j → i):

    Z = H W  (N, K, F'),   s_j = a_srcᵀ Z_j,   t_i = a_dstᵀ Z_i
    e = LeakyReLU(s_j + t_i),   α_e = exp(e − m_i) / Σ_{e' → i} exp(e' − m_i),   m_i = max_{e'→i} e'
    H'_i = Σ_{e → i} α_e Z_j   (heads concatenated, or averaged with `concat=False`) + b

and its backward, with g_e = ⟨δH'_i, Z_j⟩:

    δα_e = g_e,   δe = α_e (g_e − Σ_{e'→i} α_e' g_e')        (softmax backward, per node)
    δpre = δe · (1 if pre > 0 else slope),   δs_j = Σ_{e from j} δpre,   δt_i = Σ_{e → i} δpre
    δZ_j = Σ_{e from j} α_e δH'_i + δs_j a_src + [j's own] δt_j a_dst,   ∂L/∂a_src = Σ_j δs_j Z_j

LeakyReLU's derivative at 0 is taken as `slope` (the pre > 0 branch is strict).

**Readout**: r_g = Σ_{i in g} H_i (sum) or that sum / |g| (mean); ∂L/∂H_i = δr_{g(i)} (/ |g(i)|).

Half precision: segment sums and the softmax's max / sum run in float32 when the inputs are
bfloat16 or float16, and the results are cast back.

Bad structure raises outside `jit`: a float edge list (TypeError), an edge index < 0 or ≥ N
(ValueError naming the layer, the first offending edges and N). Under `jit` the indices are
tracers and are not checked: an out-of-range endpoint reads zeros and its messages are dropped
(no error, no NaN, but not the graph you meant) — validate batches once outside `jit`
(`check_graph`), or use a checked mode.

Example:
    >>> import jax, jax.numpy as jnp, numpy as np, jaxbp
    >>> g = {"x": jnp.eye(3), "edges": jnp.array([[0, 1], [1, 0], [1, 2], [2, 1]])}
    >>> net = jaxbp.serial(jaxbp.GCN(4), jaxbp.node_map(jaxbp.Tanh()), jaxbp.GCN(2), jaxbp.Nodes())
    >>> out_shape, params, state = net.init(jax.random.key(0), (3,))
    >>> y, res, _ = net.forward(params, state, g)
    >>> dparams, dg = net.backward(params, res, jnp.ones_like(y))
    >>> out_shape, y.shape, dg["x"].shape, dg["edges"]
    ((2,), (3, 2), (3, 3), None)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import init as initializers
from jaxbp.indices import check_range
from jaxbp.layer import Child, Layer, as_shape, check_float_input, positive_int

# ------------------------------------------------------------------ sparse building blocks


def _accumulate_dtype(dtype):
    """float32 for half-precision inputs (bfloat16, float16), the input's dtype otherwise."""
    return jnp.float32 if jnp.dtype(dtype).itemsize < 4 else dtype


def segment_sum(data, ids, n: int):
    """out[s] = Σ_{r: ids[r] = s} data[r], (R, ...) -> (n, ...); ids outside [0, n) are dropped.

    Accumulates in float32 when `data` is half precision."""
    acc = jax.ops.segment_sum(data.astype(_accumulate_dtype(data.dtype)), ids, num_segments=n)
    return acc.astype(data.dtype)


def segment_max(data, ids, n: int):
    """out[s] = max_{r: ids[r] = s} data[r]; an empty segment gets 0 (not −inf)."""
    m = jax.ops.segment_max(data, ids, num_segments=n)
    return jnp.where(jnp.isfinite(m), m, 0).astype(data.dtype)


def gather(h, ids):
    """h[ids] along axis 0, with zeros for ids outside [0, len(h)) (negative ids included)."""
    n = h.shape[0]
    ids = jnp.where(ids < 0, n, ids)
    return jnp.take(h, ids, axis=0, mode="fill", fill_value=0)


def with_self_loops(edges, n: int, self_loops: bool):
    """(src, dst), each (E',), with the n pairs (i, i) appended when `self_loops`."""
    src, dst = edges[:, 0], edges[:, 1]
    if self_loops:
        loop = jnp.arange(n, dtype=edges.dtype)
        src, dst = jnp.concatenate([src, loop]), jnp.concatenate([dst, loop])
    return src, dst


def gcn_norm(src, dst, n: int, dtype):
    """n_e = d̃_src^(−1/2) d̃_dst^(−1/2) with d̃ the in-degree; 0 at in-degree 0."""
    deg = segment_sum(jnp.ones(src.shape, dtype), dst, n)
    inv_sqrt = jnp.where(deg > 0, jax.lax.rsqrt(jnp.maximum(deg, 1)), 0)
    return gather(inv_sqrt, src) * gather(inv_sqrt, dst)


# ------------------------------------------------------------------------ structure checks


def check_index_array(name: str, what: str, ids, upper: int, lower: int = 0) -> None:
    """TypeError unless `ids` is integer; ValueError unless lower ≤ ids < upper (outside jit;
    under `jaxbp.indices.checked` a checkify error)."""
    dtype = jnp.result_type(ids)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(
            f"{name}: {what} must be integers, got dtype {dtype} with shape {jnp.shape(ids)}; "
            f"cast them, e.g. edges.astype(jnp.int32)"
        )
    check_range(name, what, ids, lower, upper)


def check_graph(name: str, g, in_dim: int | None = None, readout: bool = False) -> None:
    """Validate a graph dict: keys, float (N, F) features, int (E, 2) edges in [0, N)."""
    if not isinstance(g, dict) or "x" not in g or "edges" not in g:
        got = sorted(g) if isinstance(g, dict) else type(g).__name__
        raise TypeError(
            f'{name}: expected a graph dict {{"x": (N, F), "edges": (E, 2)}}, got {got}'
        )
    x, edges = g["x"], g["edges"]
    check_float_input(name, x)
    if jnp.ndim(x) != 2 or (in_dim is not None and x.shape[1] != in_dim):
        raise ValueError(f"{name}: expected node features (N, {in_dim or 'F'}), got {x.shape}")
    if jnp.ndim(edges) != 2 or edges.shape[1] != 2:
        raise ValueError(f"{name}: expected an edge list of shape (E, 2), got {jnp.shape(edges)}")
    check_index_array(name, "edges", edges, x.shape[0])
    if readout:
        if "graph" not in g or "sizes" not in g:
            raise TypeError(
                f'{name}: the readout needs "graph" (N,) and "sizes" (G,): batch_graphs'
            )
        if jnp.shape(g["graph"]) != (x.shape[0],):
            raise ValueError(
                f'{name}: "graph" must have shape ({x.shape[0]},), got {g["graph"].shape}'
            )
        check_index_array(name, "graph", g["graph"], jnp.shape(g["sizes"])[0])
        check_index_array(name, "sizes", g["sizes"], x.shape[0] + 1)


def _with_x(g, x):
    return {**g, "x": x}


def _graph_cotangent(g, dx):
    """{"x": dx, every integer field: None}."""
    return {k: (dx if k == "x" else None) for k in g}


# -------------------------------------------------------------------------------------- GCN


class GCNResiduals(NamedTuple):
    h: jax.Array  # (N, F) input node features
    src: jax.Array  # (E',) edge sources, self-loops included
    dst: jax.Array  # (E',) edge destinations
    norm: jax.Array  # (E',) n_e = d̃_src^(−1/2) d̃_dst^(−1/2)


def gcn_init(key, in_features: int, features: int, *, w_init="xavier_uniform"):
    """{'W': (in, out), 'b': (out,)}."""
    W = initializers.get(w_init)(key, (in_features, features))
    return {"W": W, "b": jnp.zeros((features,))}


def gcn_forward(params, h, edges, *, self_loops=True):
    """H' = Â H W + b, computed along the edges: (N, F) -> (N, F')."""
    n = h.shape[0]
    src, dst = with_self_loops(edges, n, self_loops)
    norm = gcn_norm(src, dst, n, h.dtype)  # (E',)
    z = h @ params["W"]  # (N, F')
    y = segment_sum(norm[:, None] * gather(z, src), dst, n) + params["b"]  # (N, F')
    return y, GCNResiduals(h, src, dst, norm)


def gcn_backward(params, residuals, dy):
    """δZ = Âᵀ δ (gather at dst, scatter-add at src), ∂W = Hᵀ δZ, ∂b = Σ δ, ∂H = δZ Wᵀ."""
    h, src, dst, norm = residuals
    dz = segment_sum(norm[:, None] * gather(dy, dst), src, h.shape[0])  # (N, F')
    dparams = {"W": h.T @ dz, "b": dy.sum(axis=0)}
    return dparams, dz @ params["W"].T  # (N, F)


def GCN(features: int, *, self_loops: bool = True, w_init="xavier_uniform") -> Layer:
    """Graph convolution H' = D̃^(−1/2)(A + I)D̃^(−1/2) H W + b on a graph dict (see module doc).

    Args:
        features: output features per node.
        self_loops: add A + I (Kipf & Welling's renormalization); False uses A alone.
    """
    name = f"GCN({features})"
    features = positive_int(name, "features", features)

    def init_layer(key, in_shape):
        (in_dim,) = _node_shape(name, in_shape)
        return (features,), gcn_init(key, in_dim, features, w_init=w_init), ()

    def forward_layer(params, state, g, *, key=None, train=False):
        check_graph(name, g, params["W"].shape[0])
        y, res = gcn_forward(params, g["x"], g["edges"], self_loops=self_loops)
        return _with_x(g, y), res, state

    def backward_layer(params, residuals, dg):
        dparams, dh = gcn_backward(params, residuals, dg["x"])
        return dparams, _graph_cotangent(dg, dh)

    return Layer(init_layer, forward_layer, backward_layer, name)


def _node_shape(name, in_shape):
    """The per-node feature shape (F,): given as (F,), or as a graph dict of per-example
    shapes whose "x" entry is (F,) (what `jaxbp.pipeline.example_shape` gives for a graph)."""
    if isinstance(in_shape, dict):
        if "x" not in in_shape:
            raise ValueError(
                f"{name}: a dict in_shape must hold the per-node feature shape under 'x', "
                f"got keys {sorted(in_shape)}; pass (F,) or {{'x': (F,), ...}}"
            )
        in_shape = in_shape["x"]
    in_shape = as_shape(in_shape)
    if len(in_shape) != 1:
        raise ValueError(f"{name}: per-node features must have shape (F,), got {in_shape}")
    return in_shape


# -------------------------------------------------------------------------------------- GAT


def edge_softmax(scores, dst, n: int):
    """α_e = exp(s_e − m_i) / Σ_{e'→i} exp(s_e' − m_i) over the in-edges of each node i.

    scores: (E, K) -> α: (E, K); max and sum in float32 for half-precision scores."""
    s = scores.astype(_accumulate_dtype(scores.dtype))
    p = jnp.exp(s - gather(segment_max(s, dst, n), dst))  # (E, K), ≤ 1
    return (p / gather(segment_sum(p, dst, n), dst)).astype(scores.dtype)


def edge_softmax_backward(alpha, dalpha, dst, n: int):
    """δs_e = α_e (δα_e − Σ_{e'→i} α_e' δα_e'), the softmax Jacobian per destination node."""
    acc = _accumulate_dtype(alpha.dtype)
    a, da = alpha.astype(acc), dalpha.astype(acc)
    return (a * (da - gather(segment_sum(a * da, dst, n), dst))).astype(alpha.dtype)


class GATResiduals(NamedTuple):
    h: jax.Array  # (N, F) input node features
    z: jax.Array  # (N, K, F') per-head transformed features Z = H W
    src: jax.Array  # (E',) edge sources, self-loops included
    dst: jax.Array  # (E',) edge destinations
    alpha: jax.Array  # (E', K) attention weights
    positive: jax.Array  # (E', K) bool, pre-activation score > 0


def gat_init(
    key, in_features: int, features: int, heads: int, *, concat=True, w_init="xavier_uniform"
):
    """{'W': (in, K·F'), 'a_src': (K, F'), 'a_dst': (K, F'), 'b': (K·F',) or (F',)}."""
    kw, ks, kd = jax.random.split(key, 3)
    a_init = initializers.get("xavier_uniform")
    return {
        "W": initializers.get(w_init)(kw, (in_features, heads * features)),
        "a_src": a_init(ks, (heads, features)),
        "a_dst": a_init(kd, (heads, features)),
        "b": jnp.zeros((heads * features if concat else features,)),
    }


def gat_forward(params, h, edges, *, self_loops=True, concat=True, negative_slope=0.2):
    """Attention over in-edges: (N, F) -> (N, K·F') (concat) or (N, F') (mean of heads)."""
    n = h.shape[0]
    heads, out_dim = params["a_src"].shape
    src, dst = with_self_loops(edges, n, self_loops)
    z = (h @ params["W"]).reshape(n, heads, out_dim)  # (N, K, F')
    s = jnp.einsum("nkf,kf->nk", z, params["a_src"])  # (N, K) source scores
    t = jnp.einsum("nkf,kf->nk", z, params["a_dst"])  # (N, K) destination scores
    pre = gather(s, src) + gather(t, dst)  # (E', K)
    positive = pre > 0
    alpha = edge_softmax(jnp.where(positive, pre, negative_slope * pre), dst, n)  # (E', K)
    out = segment_sum(alpha[:, :, None] * gather(z, src), dst, n)  # (N, K, F')
    out = out.reshape(n, heads * out_dim) if concat else out.mean(axis=1)
    return out + params["b"], GATResiduals(h, z, src, dst, alpha, positive)


def gat_backward(params, residuals, dy, *, concat=True, negative_slope=0.2):
    """The chain rule of `gat_forward`, from the output back through the softmax to W, a, H."""
    h, z, src, dst, alpha, positive = residuals
    n, heads, out_dim = z.shape
    db = dy.sum(axis=0)
    if concat:
        dout = dy.reshape(n, heads, out_dim)  # (N, K, F')
    else:
        dout = jnp.broadcast_to(dy[:, None, :] / heads, (n, heads, out_dim))
    dout_dst = gather(dout, dst)  # (E', K, F') δH'_i at each edge's destination
    dalpha = jnp.einsum("ekf,ekf->ek", dout_dst, gather(z, src))  # (E', K) g_e = ⟨δH'_i, Z_j⟩
    dz = segment_sum(alpha[:, :, None] * dout_dst, src, n)  # messages' share of δZ
    de = edge_softmax_backward(alpha, dalpha, dst, n)  # (E', K)
    dpre = jnp.where(positive, de, negative_slope * de)  # LeakyReLU'
    ds = segment_sum(dpre, src, n)  # (N, K)
    dt = segment_sum(dpre, dst, n)  # (N, K)
    dz = dz + ds[:, :, None] * params["a_src"] + dt[:, :, None] * params["a_dst"]
    dz_flat = dz.reshape(n, heads * out_dim)  # (N, K·F')
    dparams = {
        "W": h.T @ dz_flat,
        "a_src": jnp.einsum("nk,nkf->kf", ds, z),
        "a_dst": jnp.einsum("nk,nkf->kf", dt, z),
        "b": db,
    }
    return dparams, dz_flat @ params["W"].T  # (N, F)


def GAT(
    features: int,
    *,
    heads: int = 1,
    concat: bool = True,
    self_loops: bool = True,
    negative_slope: float = 0.2,
    w_init="xavier_uniform",
) -> Layer:
    """Graph attention: each node averages its in-neighbours' Z_j = H_j W with weights α from
    a softmax over its in-edges (see module doc), `heads` times.

    Args:
        features: output features per head.
        heads: attention heads K; their outputs are concatenated (K·features) or, with
            `concat=False`, averaged (features).
        self_loops: let every node attend to itself (the paper's choice).
        negative_slope: LeakyReLU slope of the attention scores.
    """
    name = f"GAT({features}, heads={heads})"
    features = positive_int(name, "features", features)
    heads = positive_int(name, "heads", heads)
    opts = dict(concat=concat, negative_slope=negative_slope)

    def init_layer(key, in_shape):
        (in_dim,) = _node_shape(name, in_shape)
        params = gat_init(key, in_dim, features, heads, concat=concat, w_init=w_init)
        return (heads * features if concat else features,), params, ()

    def forward_layer(params, state, g, *, key=None, train=False):
        check_graph(name, g, params["W"].shape[0])
        y, res = gat_forward(params, g["x"], g["edges"], self_loops=self_loops, **opts)
        return _with_x(g, y), res, state

    def backward_layer(params, residuals, dg):
        dparams, dh = gat_backward(params, residuals, dg["x"], **opts)
        return dparams, _graph_cotangent(dg, dh)

    return Layer(init_layer, forward_layer, backward_layer, name)


# ---------------------------------------------------- per-node layers, outputs and readouts


def node_map(layer: Layer) -> Layer:
    """Apply a per-node layer (Dense, Relu, Dropout, ...) to a graph's "x", keep its structure."""
    if not isinstance(layer, Layer):
        raise TypeError(f"node_map: expected a Layer, got {type(layer).__name__}")
    name = f"node_map({layer.name})"

    def init_layer(key, in_shape):
        return layer.init(key, _node_shape(name, in_shape))

    def forward_layer(params, state, g, *, key=None, train=False):
        check_graph(name, g)
        y, res, state = layer.forward(params, state, g["x"], key=key, train=train)
        return _with_x(g, y), res, state

    def backward_layer(params, residuals, dg):
        dparams, dh = layer.backward(params, residuals, dg["x"])
        return dparams, _graph_cotangent(dg, dh)

    def children(params, state, g, *, key=None, train=False):
        return (Child("node_map[0]", layer, params, state, g["x"], key),)

    return Layer(init_layer, forward_layer, backward_layer, name, children)


def Nodes() -> Layer:
    """End a graph network with its node features: graph dict -> (N, F) array."""
    name = "Nodes()"

    def init_layer(key, in_shape):
        return _node_shape(name, in_shape), (), ()

    def forward_layer(params, state, g, *, key=None, train=False):
        check_graph(name, g)
        return g["x"], {k: None for k in g}, state  # residuals: the dict's keys only

    def backward_layer(params, residuals, dy):
        return (), _graph_cotangent(residuals, dy)

    return Layer(init_layer, forward_layer, backward_layer, name)


class ReadoutResiduals(NamedTuple):
    graph: jax.Array  # (N,) node -> graph index
    scale: jax.Array  # (G,) 1 for "sum", 1/|g| for "mean"
    keys: dict | None = None  # the layer's input dict's keys, values None (the op leaves None)


def readout_forward(x, graph, sizes, *, mode="mean"):
    """r_g = Σ_{i in g} x_i (· 1/|g| for "mean"): (N, F) -> (G, F); an empty graph reads 0.

    `graph` (N,) is each node's graph index and `sizes` (G,) each graph's node count."""
    if mode == "sum":
        scale = jnp.ones(sizes.shape, x.dtype)
    else:
        scale = (1.0 / jnp.maximum(sizes, 1)).astype(x.dtype)
    r = segment_sum(x, graph, sizes.shape[0]) * scale[:, None]
    return r, ReadoutResiduals(graph, scale)


def readout_backward(residuals, dy):
    """∂L/∂x_i = scale_{g(i)} δr_{g(i)}: a gather of the graph rows back to their nodes."""
    return gather(dy * residuals.scale[:, None], residuals.graph)


def GraphReadout(*, mode: str = "mean") -> Layer:
    """Pool node features per graph (mean or sum): graph dict with "graph", "sizes" -> (G, F)."""
    if mode not in ("mean", "sum"):
        raise ValueError(f'GraphReadout: mode must be "mean" or "sum", got {mode!r}')
    name = f'GraphReadout("{mode}")'

    def init_layer(key, in_shape):
        return _node_shape(name, in_shape), (), ()

    def forward_layer(params, state, g, *, key=None, train=False):
        check_graph(name, g, readout=True)
        r, res = readout_forward(g["x"], g["graph"], g["sizes"], mode=mode)
        return r, res._replace(keys={k: None for k in g}), state

    def backward_layer(params, residuals, dr):
        dh = readout_backward(residuals, dr)
        return (), _graph_cotangent(residuals.keys, dh)

    return Layer(init_layer, forward_layer, backward_layer, name)


# ------------------------------------------------------------------------------ batching


def batch_graphs(graphs, dtype=np.float32) -> dict:
    """Disjoint union of graphs given as (x (n_i, F), edges (e_i, 2)) pairs, as NumPy arrays.

    Node indices of graph i are offset by n_0 + ... + n_(i−1); "graph" says which graph each
    node came from and "sizes" how many nodes each has (the readout's G and |g|). Each graph's
    edges must lie in [0, n_i) (ValueError otherwise: an edge past its own graph would join
    two graphs of the batch).
    """
    xs, edges, graph, offset = [], [], [], 0
    for i, (x, e) in enumerate(graphs):
        x = np.asarray(x, dtype)
        e = np.asarray(e, np.int32).reshape(-1, 2)
        check_range("batch_graphs", f"node of graph {i}'s edges", e, 0, x.shape[0])
        xs.append(x)
        edges.append(e + offset)
        graph.append(np.full(x.shape[0], i, np.int32))
        offset += x.shape[0]
    return {
        "x": np.concatenate(xs),
        "edges": np.concatenate(edges).astype(np.int32),
        "graph": np.concatenate(graph),
        "sizes": np.array([x.shape[0] for x in xs], np.int32),
    }


def edges_from_networkx(nx_graph) -> np.ndarray:
    """(E, 2) int32 edge list of a networkx graph with nodes 0..n−1; an undirected graph gets
    both directions of each edge."""
    pairs = [(int(u), int(v)) for u, v in nx_graph.edges()]
    if not nx_graph.is_directed():
        pairs += [(v, u) for u, v in pairs]
    return np.array(pairs, np.int32).reshape(-1, 2)
