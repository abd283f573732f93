"""Child-Sum Tree-LSTM (Tai et al. 2015), batched level by level over trees of any shape.

For a node j with input x_j and children C(j) (leaves have none):

    h̃_j  = Σ_{k∈C(j)} h_k
    i_j  = σ(W_i x_j + U_i h̃_j + b_i),   o_j = σ(W_o x_j + U_o h̃_j + b_o)
    u_j  = tanh(W_u x_j + U_u h̃_j + b_u)
    f_jk = σ(W_f x_j + U_f h_k + b_f)                      (one forget gate per child)
    c_j  = i_j ⊙ u_j + Σ_k f_jk ⊙ c_k,    h_j = o_j ⊙ tanh(c_j)

A batch of trees is a dict of arrays grouped by depth (level 0 holds the roots; every child of
a node at level ℓ sits at level ℓ + 1), padded to a common width M and arity A::

    {"x":        (L, M, F) float   node inputs, zeros at padding slots
     "children": (L, M, A) int     index of each child in level ℓ + 1, −1 for "no child"
     "roots":    (B,)      int     the position of each tree's root in level 0
     "sizes":    (L,)      int     real nodes per level (optional; used by the checks)}

`batch_trees` builds it from nested (x, [children]) tuples. The output is the roots' states
h, (B, H), or with `all_nodes=True` every node's h, (L, M, H), for a loss on every subtree
(Tai et al. supervise every node); padding slots there hold the state of a node with zero
input and no children, so a loss masks them out. The forward runs the levels bottom-up in
one `lax.scan` (all nodes of a level at once, their children gathered from the level below),
so a batch of different trees is one compiled call; the input projections W x of all nodes
are one matrix product before the scan.

The backward is the same walk top-down. With δh_j, δc_j arriving from the parent plus the
output's own gradient (dy at the roots; with `all_nodes`, dy[ℓ, j] at every node) and
τ = tanh(c_j):

    δc̄_j = δc_j + δh_j ⊙ o_j ⊙ (1 − τ²),          δz_o = δh_j ⊙ τ ⊙ o_j(1 − o_j)
    δz_i = δc̄_j ⊙ u_j ⊙ i_j(1 − i_j),  δz_u = δc̄_j ⊙ i_j ⊙ (1 − u_j²)
    δz_fk = δc̄_j ⊙ c_k ⊙ f_jk(1 − f_jk)
    δh_k = U_{iou}ᵀ δz_{iou} + U_fᵀ δz_fk,   δc_k = δc̄_j ⊙ f_jk      (scattered into level ℓ+1)

and the weight gradients are summed once over all levels after the scan:
∂L/∂W = Σ_j x_jᵀ [δz_iou, Σ_k δz_fk], ∂L/∂U_iou = Σ_j h̃_jᵀ δz_iou, ∂L/∂U_f = Σ_jk h_kᵀ δz_fk.
The structure ("children", "roots", "sizes") gets no gradient: the backward returns None there.

Bad structure raises outside `jit`: float indices (TypeError), a child index < −1, one that
points outside the level below (≥ its width), any child at the deepest level, a root outside
level 0 (ValueError naming the layer, the position and the value). Under `jit` they are not
checked: a child index outside [0, M) reads a zero state and receives no gradient.

Example:
    >>> import jax, jax.numpy as jnp, numpy as np, jaxbp
    >>> leaf = lambda v: (np.array([v, 1.0]), [])
    >>> trees = [(np.zeros(2), [leaf(1.0), leaf(2.0), leaf(3.0)]), leaf(4.0)]
    >>> batch = jaxbp.layers.batch_trees(trees)
    >>> batch["x"].shape, batch["children"].shape, batch["roots"].tolist()
    ((2, 3, 2), (2, 3, 3), [0, 1])
    >>> lstm = jaxbp.TreeLSTM(5)
    >>> out_shape, params, _ = lstm.init(jax.random.key(0), (2,))
    >>> h, res, _ = lstm.forward(params, (), batch)
    >>> dparams, dbatch = lstm.backward(params, res, jnp.ones_like(h))
    >>> out_shape, h.shape, dbatch["x"].shape, dbatch["children"]
    ((5,), (2, 5), (2, 3, 2), None)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxbp import init as initializers
from jaxbp.layer import Layer, as_shape, check_float_input, positive_int
from jaxbp.layers.graph import check_index_array


def _sigmoid(z):
    return jax.nn.sigmoid(z)


class LevelResiduals(NamedTuple):
    """What one level's backward needs, stacked over levels by the scan: (L, M, ...)."""

    mask: jax.Array  # (M, A) bool, child slot is used
    h_kids: jax.Array  # (M, A, H) children's h (0 at unused slots)
    c_kids: jax.Array  # (M, A, H) children's c
    i: jax.Array  # (M, H) input gate
    o: jax.Array  # (M, H) output gate
    u: jax.Array  # (M, H) candidate
    f: jax.Array  # (M, A, H) forget gate per child
    tanh_c: jax.Array  # (M, H) tanh(c_j)


class TreeLSTMResiduals(NamedTuple):
    x: jax.Array  # (L, M, F) node inputs
    children: jax.Array  # (L, M, A) child indices into the level below
    roots: jax.Array  # (B,) root positions in level 0
    levels: LevelResiduals  # each field stacked over levels: (L, M, ...)
    keys: dict  # the input dict's keys, values None


def tree_lstm_init(
    key, in_features: int, features: int, *, w_init="xavier_uniform", u_init="orthogonal"
):
    """{'W': (F, 4H) for [i, o, u, f], 'U_iou': (H, 3H), 'U_f': (H, H), 'b': (4H,)}.

    The forget gate's bias starts at 1 (keep the children's cells by default)."""
    kw, ku, kf = jax.random.split(key, 3)
    u = initializers.get(u_init)
    U_iou = jnp.concatenate([u(k, (features, features)) for k in jax.random.split(ku, 3)], axis=1)
    b = jnp.concatenate([jnp.zeros(3 * features), jnp.ones(features)])
    return {
        "W": initializers.get(w_init)(kw, (in_features, 4 * features)),
        "U_iou": U_iou,
        "U_f": u(kf, (features, features)),
        "b": b,
    }


def _level_forward(params, carry, level):
    """One level: children's (h, c) from the level below (M, H) -> this level's (h, c)."""
    h_below, c_below = carry
    wx, children = level  # (M, 4H), (M, A)
    hidden = h_below.shape[-1]
    mask = children >= 0
    idx = jnp.where(mask, children, 0)
    keep = mask[..., None].astype(wx.dtype)
    h_kids = jnp.take(h_below, idx, axis=0, mode="clip") * keep  # (M, A, H)
    c_kids = jnp.take(c_below, idx, axis=0, mode="clip") * keep
    z_iou = wx[:, : 3 * hidden] + h_kids.sum(axis=1) @ params["U_iou"]  # (M, 3H)
    i = _sigmoid(z_iou[:, :hidden])
    o = _sigmoid(z_iou[:, hidden : 2 * hidden])
    u = jnp.tanh(z_iou[:, 2 * hidden :])
    f = _sigmoid(wx[:, None, 3 * hidden :] + h_kids @ params["U_f"])  # (M, A, H)
    c = i * u + (f * c_kids).sum(axis=1)  # (M, H)
    tanh_c = jnp.tanh(c)
    h = o * tanh_c
    return (h, c), (h, LevelResiduals(mask, h_kids, c_kids, i, o, u, f, tanh_c))


def tree_lstm_forward(params, x, children, roots, *, all_nodes=False):
    """Roots' h, (B, H), or every node's h, (L, M, H), from level-grouped trees (L, M, F),
    (L, M, A), (B,)."""
    L, M, _ = x.shape
    hidden = params["U_f"].shape[0]
    wx = x @ params["W"] + params["b"]  # (L, M, 4H): every node's input projection at once
    zeros = jnp.zeros((M, hidden), wx.dtype)
    _, (hs, levels) = jax.lax.scan(
        lambda carry, lv: _level_forward(params, carry, lv),
        (zeros, zeros),
        (wx, children),
        reverse=True,  # deepest level first
    )
    y = hs if all_nodes else jnp.take(hs[0], roots, axis=0, mode="clip")  # (L, M, H) | (B, H)
    return y, TreeLSTMResiduals(x, children, roots, levels, {})


def _level_backward(params, carry, level):
    """One level top-down: (δh, δc) of its nodes -> gate pre-activation gradients, and the
    (δh, δc) it scatters into the level below."""
    dh_parent, dc = carry  # (M, H), from the level above
    children, r, dh_out = level
    dh = dh_parent + dh_out  # the parent's share plus the output's own gradient
    keep = r.mask[..., None].astype(dh.dtype)
    dc_bar = dc + dh * r.o * (1 - r.tanh_c**2)
    dz_i = dc_bar * r.u * r.i * (1 - r.i)
    dz_o = dh * r.tanh_c * r.o * (1 - r.o)
    dz_u = dc_bar * r.i * (1 - r.u**2)
    dz_iou = jnp.concatenate([dz_i, dz_o, dz_u], axis=1)  # (M, 3H)
    dz_f = dc_bar[:, None] * r.c_kids * r.f * (1 - r.f) * keep  # (M, A, H)
    dh_kids = (dz_iou @ params["U_iou"].T)[:, None] + dz_f @ params["U_f"].T  # (M, A, H)
    dc_kids = dc_bar[:, None] * r.f
    below = jnp.where(r.mask, children, dh.shape[0])  # unused slots scatter out of range
    scatter = lambda v: jnp.zeros_like(dh).at[below].add(v * keep, mode="drop")
    return (scatter(dh_kids), scatter(dc_kids)), (dz_iou, dz_f)


def tree_lstm_backward(params, residuals, dy, *, all_nodes=False):
    """The chain rule of `tree_lstm_forward`, level by level from the roots down, weights
    summed after."""
    x, children, roots, levels, _ = residuals
    L, M, _ = x.shape
    H = dy.shape[-1]
    if all_nodes:
        dh_out = dy  # (L, M, H)
    else:  # only the roots (level 0) have an output
        dh_out = jnp.zeros((L, M, H), dy.dtype).at[0, roots].add(dy, mode="drop")
    zeros = jnp.zeros((M, H), dy.dtype)
    # Level ℓ's carry goes to level ℓ+1; the deepest level's scatter has no children to reach.
    _, (dz_iou, dz_f) = jax.lax.scan(
        lambda carry, lv: _level_backward(params, carry, lv),
        (zeros, zeros),
        (children, levels, dh_out),
    )
    dwx = jnp.concatenate([dz_iou, dz_f.sum(axis=2)], axis=-1)  # (L, M, 4H)
    rows = lambda a: a.reshape(-1, a.shape[-1])
    dparams = {
        "W": rows(x).T @ rows(dwx),
        "U_iou": rows(levels.h_kids.sum(axis=2)).T @ rows(dz_iou),
        "U_f": rows(levels.h_kids).T @ rows(dz_f),
        "b": rows(dwx).sum(axis=0),
    }
    return dparams, dwx @ params["W"].T  # (L, M, F)


def check_trees(name: str, t, in_dim: int) -> None:
    """Validate a level-grouped tree batch (see module doc)."""
    if not isinstance(t, dict) or not {"x", "children", "roots"} <= set(t):
        got = sorted(t) if isinstance(t, dict) else type(t).__name__
        raise TypeError(f'{name}: expected a dict with "x", "children", "roots", got {got}')
    x, children, roots = t["x"], t["children"], t["roots"]
    check_float_input(name, x)
    if jnp.ndim(x) != 3 or x.shape[2] != in_dim:
        raise ValueError(f"{name}: expected x of shape (levels, width, {in_dim}), got {x.shape}")
    if jnp.ndim(children) != 3 or jnp.shape(children)[:2] != x.shape[:2]:
        shape = jnp.shape(children)
        raise ValueError(
            f"{name}: expected children of shape {x.shape[:2]} + (arity,), got {shape}"
        )
    check_index_array(name, "roots", roots, x.shape[1])
    check_index_array(name, "children", children, x.shape[1], lower=-1)
    sizes = t.get("sizes")
    if sizes is None or not all(map(_concrete, (children, sizes))) or x.shape[0] == 0:
        return
    kids, sizes = np.asarray(children), np.asarray(sizes)
    width_below = np.append(sizes[1:], 0)[:, None, None]  # the deepest level has none below
    bad = np.argwhere(kids >= width_below)
    if bad.size:
        lv, m, a = (int(v) for v in bad[0])
        raise ValueError(
            f"{name}: children[{lv}, {m}, {a}] = {kids[lv, m, a]} points outside the level "
            f"below (level {lv + 1} has {int(width_below[lv, 0, 0])} nodes)"
        )


def _concrete(a) -> bool:
    return not isinstance(a, jax.core.Tracer)


def TreeLSTM(
    features: int, *, w_init="xavier_uniform", u_init="orthogonal", all_nodes: bool = False
) -> Layer:
    """Child-Sum Tree-LSTM: a batch of trees (dict, see module doc) -> roots' h, (B, features),
    or with `all_nodes=True` every node's h, (levels, width, features).

    `init(key, (F,))` takes the per-node input size F."""
    name = f"TreeLSTM({features}{', all_nodes' if all_nodes else ''})"
    features = positive_int(name, "features", features)

    def init_layer(key, in_shape):
        in_shape = as_shape(in_shape)
        if len(in_shape) != 1:
            raise ValueError(f"{name}: per-node inputs must have shape (F,), got {in_shape}")
        params = tree_lstm_init(key, in_shape[0], features, w_init=w_init, u_init=u_init)
        return (features,), params, ()

    def forward_layer(params, state, t, *, key=None, train=False):
        check_trees(name, t, params["W"].shape[0])
        y, res = tree_lstm_forward(params, t["x"], t["children"], t["roots"], all_nodes=all_nodes)
        return y, res._replace(keys={k: None for k in t}), state

    def backward_layer(params, residuals, dy):
        dparams, dx = tree_lstm_backward(params, residuals, dy, all_nodes=all_nodes)
        return dparams, {k: (dx if k == "x" else None) for k in residuals.keys}

    return Layer(init_layer, forward_layer, backward_layer, name)


def batch_trees(trees, dtype=np.float32, levels=None, width=None, arity=None) -> dict:
    """Level-grouped arrays from trees written as nested (x, [child, ...]) tuples.

    Node inputs x are 1-D, all of the same length F. Returns NumPy arrays "x" (L, M, F),
    "children" (L, M, A), "roots" (B,) and "sizes" (L,), where L is the deepest level + 1,
    M the widest level and A the largest number of children — or the `levels`, `width` and
    `arity` given, to pad every batch to one shape (one compilation)."""
    by_level = [list(trees)]  # nodes per level, in order
    while True:
        below = [kid for node in by_level[-1] for kid in node[1]]
        if not below:
            break
        by_level.append(below)
    need = (len(by_level), max(len(lv) for lv in by_level))
    need += (max([len(node[1]) for lv in by_level for node in lv] + [1]),)
    shape = tuple(n if g is None else g for n, g in zip(need, (levels, width, arity)))
    if any(s < n for s, n in zip(shape, need)):
        raise ValueError(
            f"batch_trees: the trees need (levels, width, arity) >= {need}, got {shape}"
        )
    x = np.zeros((*shape[:2], len(np.asarray(trees[0][0]))), dtype)
    children = np.full(shape, -1, np.int32)
    for d, lv in enumerate(by_level):
        first_kid = 0
        for m, (features, kids) in enumerate(lv):
            x[d, m] = np.asarray(features, dtype)
            children[d, m, : len(kids)] = np.arange(first_kid, first_kid + len(kids))
            first_kid += len(kids)
    sizes = np.zeros(shape[0], np.int32)
    sizes[: len(by_level)] = [len(lv) for lv in by_level]
    return {
        "x": x,
        "children": children,
        "roots": np.arange(len(trees), dtype=np.int32),
        "sizes": sizes,
    }
