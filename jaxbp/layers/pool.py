"""Pooling (max, average, global average) in 1-D and 2-D, and the Flatten/Reshape layers.

Channels-last like `conv`: x is (batch, *spatial, C) and each channel is pooled on its own.
A window of size k slides with stride s (default s = k) over the input padded by (lo, hi) per
spatial axis ('VALID', 'SAME', an int or explicit pairs, as for convolutions):

    max:      y[n, t, c] = max_{j < k} x̃[n, t·s + j, c]         (x̃ padded with −∞)
    average:  y[n, t, c] = (1 / m_t) Σ_{j < k} x̃[n, t·s + j, c]  (x̃ padded with 0)

where m_t counts the window's positions that lie inside the input: padding is not counted in
the average (TensorFlow's 'SAME' convention; with 'VALID' every m_t = k).

Backward, with δ = ∂L/∂y:

    max:      ∂L/∂x[n, i, c] = Σ_t δ[n, t, c] · [i = argmax of window t]
    average:  ∂L/∂x[n, i, c] = Σ_{t : i ∈ window t} δ[n, t, c] / m_t

**Tie rule (max pool):** when several positions of a window hold the maximum, the whole
gradient of that window goes to the *first* of them in row-major window order (smallest j;
in 2-D smallest row, then smallest column) — `jnp.argmax`'s rule. The forward stores that
index (not the input), so the backward needs no comparison. Padding never wins: each pad must
be smaller than the window, so every window holds at least one input position.

Example:
    >>> import jax.numpy as jnp
    >>> from jaxbp.layers import pool
    >>> x = jnp.array([[[1.0], [3.0], [3.0], [2.0]]])          # (1, 4, 1), a tie in window 0
    >>> y, res = pool.max_forward(x, window=(3,), stride=(1,))
    >>> dx = pool.max_backward(res, jnp.ones_like(y), window=(3,), stride=(1,))
    >>> y[0, :, 0].tolist(), dx[0, :, 0].tolist()
    ([3.0, 3.0], [0.0, 2.0, 0.0, 0.0])
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxbp.layer import Layer, as_shape, check_float_input
from jaxbp.layers.conv import _tuple, explicit_padding, normalize_padding, output_size
from jaxbp.precision import acc_mean

# ------------------------------------------------------------------------------- geometry


def _window_offsets(window):
    """All offsets j of a window in row-major order (the order of the tie rule)."""
    return list(itertools.product(*(range(k) for k in window)))


def _strided_slice(xp, offset, out, stride):
    """x̃[:, j + t·s for t < out, :] for every spatial axis: the window entries at offset j."""
    nd = len(out)
    start = (0, *offset, 0)
    limit = (
        xp.shape[0],
        *(j + (o - 1) * s + 1 for j, o, s in zip(offset, out, stride, strict=True)),
        xp.shape[-1],
    )
    return lax.slice(xp, start, limit, (1, *stride, 1)) if nd else xp


def _scatter_back(values, offset, stride, padded_shape):
    """The transpose of `_strided_slice`: put values[t] at position j + t·s of a zero array of
    the padded shape (interior padding of s − 1 zeros, then edge padding)."""
    cfg = [(0, 0, 0)]
    for j, s, o, p in zip(offset, stride, values.shape[1:-1], padded_shape[1:-1], strict=True):
        cfg.append((j, p - j - (o - 1) * s - 1, s - 1))
    cfg.append((0, 0, 0))
    return lax.pad(values, jnp.zeros((), values.dtype), cfg)


def _crop(xp, pads):
    """Drop the padding: x̃ → x."""
    idx = (
        slice(None),
        *(slice(lo, xp.shape[i + 1] - hi) for i, (lo, hi) in enumerate(pads)),
        slice(None),
    )
    return xp[idx]


def _geometry(x, window, stride, padding):
    spatial = x.shape[1:-1]
    pads = explicit_padding(padding, spatial, window, stride, (1,) * len(window))
    out = output_size(spatial, window, stride, (1,) * len(window), pads)
    return pads, out


# ------------------------------------------------------------------------------- max pool


class MaxPoolResiduals(NamedTuple):
    argmax: jax.Array  # (N, *spatial_out, C) int32: index of the winner in row-major window order
    in_shape: tuple  # static: the input shape (N, *spatial, C)
    pads: tuple  # static: ((lo, hi), ...) per spatial axis


jax.tree_util.register_pytree_node(
    MaxPoolResiduals,
    lambda r: ((r.argmax,), (r.in_shape, r.pads)),
    lambda aux, children: MaxPoolResiduals(children[0], *aux),
)


def max_forward(x, *, window, stride=None, padding="VALID"):
    """y = max over each window; also returns the arg-max (first index on ties)."""
    nd = x.ndim - 2
    stride = tuple(window) if stride is None else tuple(stride)
    padding = normalize_padding("max_pool", padding, nd)
    pads, out = _geometry(x, window, stride, padding)
    xp = jnp.pad(x, [(0, 0), *pads, (0, 0)], constant_values=-jnp.inf)  # (N, *padded, C)
    # Stack the k₁·k₂… window entries: (K, N, *out, C), K in row-major window order.
    entries = jnp.stack([_strided_slice(xp, j, out, stride) for j in _window_offsets(window)])
    argmax = jnp.argmax(entries, axis=0).astype(jnp.int32)  # first maximum on ties
    y = jnp.max(entries, axis=0)  # (N, *out, C)
    return y, MaxPoolResiduals(argmax, tuple(x.shape), tuple(pads))


def max_backward(residuals, dy, *, window, stride=None):
    """dx: each window's δ goes to its arg-max; windows that overlap add up."""
    stride = tuple(window) if stride is None else tuple(stride)
    in_shape, pads = residuals.in_shape, residuals.pads
    padded = (
        in_shape[0],
        *(n + lo + hi for n, (lo, hi) in zip(in_shape[1:-1], pads, strict=True)),
        in_shape[-1],
    )
    dxp = jnp.zeros(padded, dy.dtype)
    for k, j in enumerate(_window_offsets(window)):
        won = jnp.where(residuals.argmax == k, dy, jnp.zeros((), dy.dtype))  # (N, *out, C)
        dxp = dxp + _scatter_back(won, j, stride, padded)
    return _crop(dxp, pads)  # (N, *spatial, C)


# --------------------------------------------------------------------------- average pool


class AvgPoolResiduals(NamedTuple):
    in_shape: tuple  # static: the input shape
    pads: tuple  # static: ((lo, hi), ...)


jax.tree_util.register_pytree_node(
    AvgPoolResiduals,
    lambda r: ((), (r.in_shape, r.pads)),
    lambda aux, children: AvgPoolResiduals(*aux),
)


def _window_counts(spatial, window, stride, pads, out):
    """m_t: how many input (non-padding) positions each window covers, as a NumPy array."""
    counts = np.ones(out)
    for axis, (n, k, s, (lo, _), o) in enumerate(
        zip(spatial, window, stride, pads, out, strict=True)
    ):
        start = np.arange(o) * s - lo
        m = np.minimum(start + k, n) - np.maximum(start, 0)
        shape = [1] * len(out)
        shape[axis] = o
        counts = counts * m.reshape(shape)
    return counts


def avg_forward(x, *, window, stride=None, padding="VALID"):
    """y = (window sum of x̃) / m_t, padding not counted."""
    nd = x.ndim - 2
    stride = tuple(window) if stride is None else tuple(stride)
    padding = normalize_padding("avg_pool", padding, nd)
    pads, out = _geometry(x, window, stride, padding)
    sums = lax.reduce_window(
        x,
        np.zeros((), x.dtype),  # a concrete 0 makes XLA use its window-sum op
        lax.add,
        (1, *window, 1),
        (1, *stride, 1),
        [(0, 0), *pads, (0, 0)],
    )  # (N, *out, C)
    counts = _window_counts(x.shape[1:-1], window, stride, pads, out)
    y = sums / jnp.asarray(counts[None, ..., None], x.dtype)
    return y, AvgPoolResiduals(tuple(x.shape), tuple(pads))


def avg_backward(residuals, dy, *, window, stride=None):
    """dx[i] = Σ_{windows t ∋ i} δ_t / m_t: spread δ/m over each window (the transposed window
    sum: δ/m dilated by s, then a stride-1 window sum), then drop the padding."""
    stride = tuple(window) if stride is None else tuple(stride)
    in_shape, pads = residuals.in_shape, residuals.pads
    spatial, out = in_shape[1:-1], dy.shape[1:-1]
    counts = _window_counts(spatial, window, stride, pads, out)
    g = dy / jnp.asarray(counts[None, ..., None], dy.dtype)  # δ / m: (N, *out, C)
    # Position p of the padded input receives Σ g[t] over t·s ≤ p < t·s + k.
    padded = [n + lo + hi for n, (lo, hi) in zip(spatial, pads, strict=True)]
    cfg = [(0, 0, 0)]
    for k, s, o, p in zip(window, stride, out, padded, strict=True):
        cfg.append((k - 1, p - (o - 1) * s - 1, s - 1))  # dilate by s, pad to p + k − 1
    cfg.append((0, 0, 0))
    spread = lax.pad(g, jnp.zeros((), g.dtype), cfg)
    dxp = lax.reduce_window(
        spread, np.zeros((), g.dtype), lax.add, (1, *window, 1), (1,) * (len(window) + 2), "VALID"
    )  # (N, *padded, C)
    return _crop(dxp, pads)


# ------------------------------------------------------------------------------ the layers


def _pool_layer(kind: str, nd: int, window, stride, padding) -> Layer:
    name = f"{kind}Pool{nd}D({window})"
    window = _tuple(name, "window", window, nd)
    stride = window if stride is None else _tuple(name, "stride", stride, nd)
    padding = normalize_padding(name, padding, nd)
    if not isinstance(padding, str):
        for (lo, hi), k in zip(padding, window, strict=True):
            if lo >= k or hi >= k:
                raise ValueError(
                    f"{name}: each padding must be smaller than the window {window}, got "
                    f"{padding} (a window of padding alone has no input to pool)"
                )
    fwd, bwd = (max_forward, max_backward) if kind == "Max" else (avg_forward, avg_backward)
    layout = "(batch, width, channels)" if nd == 1 else "(batch, height, width, channels)"

    def check_spatial(spatial, got):
        pads = explicit_padding(padding, spatial, window, stride, (1,) * nd)
        for n, k, (lo, hi) in zip(spatial, window, pads, strict=True):
            if k > n + lo + hi:
                raise ValueError(
                    f"{name}: the window {window} is larger than the padded input "
                    f"(input shape {got}, padding {pads})"
                )
        return pads

    def init(key, in_shape):
        in_shape = as_shape(in_shape)
        if len(in_shape) != nd + 1:
            raise ValueError(
                f"{name}: expects per-example input {layout[8:]} (rank {nd + 1} without the "
                f"batch axis), got shape {in_shape}"
            )
        pads = check_spatial(in_shape[:-1], in_shape)
        out = output_size(in_shape[:-1], window, stride, (1,) * nd, pads)
        return (*out, in_shape[-1]), (), ()

    def forward(params, state, x, *, key=None, train=False):
        check_float_input(name, x)
        if x.ndim != nd + 2:
            raise ValueError(
                f"{name}: expected input {layout} of rank {nd + 2}, got {tuple(x.shape)}"
            )
        check_spatial(x.shape[1:-1], tuple(x.shape))
        y, res = fwd(x, window=window, stride=stride, padding=padding)
        return y, res, state

    def backward(params, residuals, dy):
        return (), bwd(residuals, dy, window=window, stride=stride)

    return Layer(init, forward, backward, name)


def MaxPool1D(window, *, stride=None, padding="VALID") -> Layer:
    """Max pooling over (batch, width, channels); `stride=None` means stride = window.

    The gradient of each window goes to its first maximum (see the module docstring).

    Example:
        >>> import jax, jaxbp
        >>> jaxbp.MaxPool1D(2).init(jax.random.key(0), (9, 4))[0]
        (4, 4)
    """
    return _pool_layer("Max", 1, window, stride, padding)


def MaxPool2D(window, *, stride=None, padding="VALID") -> Layer:
    """Max pooling over (batch, height, width, channels); sizes an int or (h, w).

    Example:
        >>> import jax, jaxbp
        >>> jaxbp.MaxPool2D(2).init(jax.random.key(0), (8, 8, 16))[0]
        (4, 4, 16)
    """
    return _pool_layer("Max", 2, window, stride, padding)


def AvgPool1D(window, *, stride=None, padding="VALID") -> Layer:
    """Average pooling over (batch, width, channels); padding is not counted in the mean.

    Example:
        >>> import jax, jaxbp
        >>> jaxbp.AvgPool1D(3, stride=2, padding="SAME").init(jax.random.key(0), (9, 2))[0]
        (5, 2)
    """
    return _pool_layer("Avg", 1, window, stride, padding)


def AvgPool2D(window, *, stride=None, padding="VALID") -> Layer:
    """Average pooling over (batch, height, width, channels); padding is not counted.

    Example:
        >>> import jax, jaxbp
        >>> jaxbp.AvgPool2D(2).init(jax.random.key(0), (8, 8, 3))[0]
        (4, 4, 3)
    """
    return _pool_layer("Avg", 2, window, stride, padding)


# ----------------------------------------------------------------- global average, reshape


class ShapeResiduals(NamedTuple):
    in_shape: tuple  # static: the input shape (N, ...)


jax.tree_util.register_pytree_node(
    ShapeResiduals, lambda r: ((), (r.in_shape,)), lambda aux, children: ShapeResiduals(*aux)
)


def GlobalAvgPool() -> Layer:
    """Mean over every spatial axis: (batch, *spatial, C) -> (batch, C).

    y[n, c] = (1/S) Σ_i x[n, i, c] with S the number of spatial positions; dx = δ/S broadcast.

    Example:
        >>> import jax, jaxbp
        >>> jaxbp.GlobalAvgPool().init(jax.random.key(0), (7, 7, 32))[0]
        (32,)
    """
    name = "GlobalAvgPool"

    def init(key, in_shape):
        in_shape = as_shape(in_shape)
        if len(in_shape) < 2:
            raise ValueError(
                f"{name}: expects per-example input (*spatial, channels) of rank >= 2, got "
                f"shape {in_shape}"
            )
        return (in_shape[-1],), (), ()

    def forward(params, state, x, *, key=None, train=False):
        check_float_input(name, x)
        if x.ndim < 3:
            raise ValueError(
                f"{name}: expected input (batch, *spatial, channels) of rank >= 3, got "
                f"{tuple(x.shape)}"
            )
        y = acc_mean(x, axis=tuple(range(1, x.ndim - 1)))  # (N, C), float32 sums for halves
        return y, ShapeResiduals(tuple(x.shape)), state

    def backward(params, residuals, dy):
        shape = residuals.in_shape
        size = math.prod(shape[1:-1])
        dx = jnp.broadcast_to(
            (dy / size).reshape(shape[0], *([1] * (len(shape) - 2)), shape[-1]), shape
        )
        return (), dx

    return Layer(init, forward, backward, name)


def Reshape(shape) -> Layer:
    """Reshape each example to `shape` (no batch axis; one entry may be -1); dx = reshape back.

    Example:
        >>> import jax, jaxbp
        >>> jaxbp.Reshape((40, 1)).init(jax.random.key(0), (40,))[0]
        (40, 1)
    """
    return _reshape(as_shape(shape), f"Reshape({as_shape(shape)})")


def _reshape(target, name: str) -> Layer:
    if sum(d == -1 for d in target) > 1 or any(d == 0 or d < -1 for d in target):
        raise ValueError(f"{name}: the shape may hold one -1 and positive sizes, got {target}")

    def resolve(in_shape):
        size = math.prod(in_shape)
        known = math.prod(d for d in target if d != -1)
        if (-1 in target and size % known) or (-1 not in target and known != size):
            raise ValueError(
                f"{name}: cannot reshape per-example shape {tuple(in_shape)} ({size} elements) "
                f"to {target}"
            )
        return tuple(size // known if d == -1 else d for d in target)

    def init(key, in_shape):
        return resolve(as_shape(in_shape)), (), ()

    def forward(params, state, x, *, key=None, train=False):
        if x.ndim < 1:
            raise ValueError(f"{name}: expected a batch axis, got a scalar")
        y = x.reshape(x.shape[0], *resolve(x.shape[1:]))
        return y, ShapeResiduals(tuple(x.shape)), state

    def backward(params, residuals, dy):
        return (), dy.reshape(residuals.in_shape)

    return Layer(init, forward, backward, name)


def Flatten() -> Layer:
    """(batch, d₁, d₂, …) -> (batch, d₁·d₂·…); dx = δ reshaped back.

    Example:
        >>> import jax, jaxbp
        >>> jaxbp.Flatten().init(jax.random.key(0), (5, 25))[0]
        (125,)
    """
    return _reshape((-1,), "Flatten")


__all__ = [
    "AvgPool1D",
    "AvgPool2D",
    "Flatten",
    "GlobalAvgPool",
    "MaxPool1D",
    "MaxPool2D",
    "Reshape",
    "avg_backward",
    "avg_forward",
    "max_backward",
    "max_forward",
]
