"""Convolution in 1-D and 2-D, channels-last, with its backward written out.

Layout (channels-last, as flax and TensorFlow):

    x: (batch, *spatial, C_in)        W: (*window, C_in / groups, C_out)        b: (C_out,)
    y: (batch, *spatial_out, C_out)

so a Conv1D sees (N, W, C) and a Conv2D sees (N, H, W, C). The kernel layout
`(*window, fan_in, fan_out)` is the one `jaxbp.init` computes fans for.

The forward is a cross-correlation (no kernel flip, as in every deep-learning library). In one
spatial dimension, with stride s, dilation d, left padding p and the padded input x̃:

    y[n, t, o] = b[o] + Σ_k Σ_i x̃[n, t·s + k·d, g(o)·C_in/G + i] · W[k, i, o]

where g(o) is the group of output channel o (G = `groups`; G = C_in is a depthwise conv).
With δ = ∂L/∂y the chain rule gives two convolutions:

    ∂L/∂b = Σ_{n,t} δ[n, t, :]
    ∂L/∂W = x ⋆ δ       a convolution of x with δ (δ dilated by s, taps spaced by d),
                        summed over the batch:  dW[k, i, o] = Σ_{n,t} x̃[n, t·s + k·d, ·] δ[n, t, o]
    ∂L/∂x = δ ⋆ W↺      the transposed convolution: δ dilated by s (s − 1 zeros between its
                        entries: "lhs dilation"), padded by (k_eff − 1 − p), convolved with the
                        spatially flipped kernel with input and output channels swapped.

Both are `lax.conv_general_dilated` calls (`grads_by_convs`). Padded positions that the strided
windows never reach (when (n + p_lo + p_hi − k_eff) is not a multiple of s) get zero gradient:
the padding of the dx convolution is widened and the padding of the dW convolution is cut by
that remainder. The same gradients, as one matrix product per kernel tap (`grads_by_taps`), are
what large convolutions use on CPU, where XLA runs these two convolutions slowly (see
`conv_backward`).

Padding: 'VALID' (none), 'SAME' (output size ⌈n/s⌉, the extra pixel on the right as in
TensorFlow), an int (the same on both sides of every spatial axis), a sequence of ints (one per
spatial axis, both sides), or explicit `(lo, hi)` pairs, one per spatial axis (a single pair is
accepted for 1-D).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxbp.layers import conv
    >>> params = conv.conv_init(jax.random.key(0), in_channels=3, features=8, kernel_size=(3, 3))
    >>> x = jnp.ones((2, 9, 9, 3))
    >>> y, res = conv.conv_forward(params, x, stride=2, padding="SAME")
    >>> dparams, dx = conv.conv_backward(params, res, jnp.ones_like(y), stride=2, padding="SAME")
    >>> y.shape, dparams["W"].shape, dx.shape
    ((2, 5, 5, 8), (3, 3, 3, 8), (2, 9, 9, 3))
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxbp import init as initializers
from jaxbp.layer import Layer, as_shape, check_float_input, positive_int
from jaxbp.precision import acc_sum

# Dimension numbers (lhs, rhs, out) per number of spatial axes.
_FORWARD_DN = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}
# For dW: the input's channels play the batch, its batch plays the features; δ is the kernel.
_WEIGHT_DN = {1: ("CWN", "IWO", "WNC"), 2: ("CHWN", "IHWO", "HWNC")}


# On CPU, the backward goes by taps from this many multiply-adds per kernel tap (M·C_in·C_out/G,
# M the number of output positions in the batch). Measured on a 2-core CPU: the 2-D CNN of
# experiments/bench_cnn.py (2²³–2²⁶ per tap) runs its backward 1.6× faster by taps; the MNIST-1D
# CNN (2¹⁵–2²⁰) runs 10 % slower by taps than by convolutions.
TAPS_MIN_WORK = 2**21


class ConvResiduals(NamedTuple):
    x: jax.Array  # the input, (batch, *spatial, C_in)


# ------------------------------------------------------------------------------- geometry


def _tuple(name: str, what: str, value, nd: int) -> tuple[int, ...]:
    values = (value,) * nd if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        values = tuple(values)
    except TypeError:
        raise TypeError(f"{name}: {what} must be an int or {nd} ints, got {value!r}") from None
    if len(values) != nd:
        raise ValueError(f"{name}: {what} must be an int or {nd} ints, got {value!r}")
    return tuple(positive_int(name, what, v) for v in values)


def normalize_padding(name: str, padding, nd: int):
    """'SAME'/'VALID' (upper case), or a tuple of nd (lo, hi) pairs of non-negative ints."""
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(
                f"{name}: padding must be 'SAME', 'VALID', an int or pairs, got {padding!r}"
            )
        return padding.upper()
    if isinstance(padding, int) and not isinstance(padding, bool):
        pairs = ((padding, padding),) * nd
    else:
        try:
            items = tuple(padding)
        except TypeError:
            raise TypeError(
                f"{name}: padding must be 'SAME', 'VALID', an int or pairs, got {padding!r}"
            ) from None
        if nd == 1 and len(items) == 2 and all(isinstance(p, int) for p in items):
            pairs = (items,)  # Conv1D(..., padding=(lo, hi))
        elif len(items) == nd and all(isinstance(p, int) for p in items):
            pairs = tuple((p, p) for p in items)
        else:
            pairs = tuple(tuple(p) if not isinstance(p, int) else (p, p) for p in items)
    if len(pairs) != nd or any(len(p) != 2 for p in pairs):
        raise ValueError(f"{name}: padding needs {nd} (lo, hi) pairs, got {padding!r}")
    for lo, hi in pairs:
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in (lo, hi)):
            raise ValueError(f"{name}: padding must be non-negative ints, got {padding!r}")
    return tuple((int(lo), int(hi)) for lo, hi in pairs)


def effective_kernel(kernel: tuple, dilation: tuple) -> tuple[int, ...]:
    """k_eff = (k − 1)·d + 1: the span of a dilated kernel."""
    return tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True))


def explicit_padding(padding, spatial, kernel, stride, dilation) -> tuple[tuple[int, int], ...]:
    """Resolve 'SAME'/'VALID' against the input's spatial size into (lo, hi) pairs."""
    if padding == "VALID":
        return tuple((0, 0) for _ in spatial)
    if padding == "SAME":
        pairs = []
        for n, ke, s in zip(spatial, effective_kernel(kernel, dilation), stride, strict=True):
            total = max((-(-n // s) - 1) * s + ke - n, 0)  # out = ⌈n/s⌉
            pairs.append((total // 2, total - total // 2))
        return tuple(pairs)
    return tuple(padding)


def output_size(spatial, kernel, stride, dilation, pads) -> tuple[int, ...]:
    """⌊(n + lo + hi − k_eff) / s⌋ + 1 per spatial axis (≤ 0 when the kernel does not fit)."""
    ke = effective_kernel(kernel, dilation)
    return tuple(
        (n + lo + hi - k) // s + 1
        for n, k, s, (lo, hi) in zip(spatial, ke, stride, pads, strict=True)
    )


def _check_fits(name, spatial, kernel, stride, dilation, pads):
    ke = effective_kernel(kernel, dilation)
    for n, k, (lo, hi) in zip(spatial, ke, pads, strict=True):
        if k > n + lo + hi:
            raise ValueError(
                f"{name}: the kernel (span {ke} with dilation {dilation}) is larger than the "
                f"padded input (spatial {tuple(spatial)} + padding {pads}); pad more or use a "
                "smaller kernel"
            )


def _resolve(W, x, stride, padding, dilation):
    nd = W.ndim - 2
    kernel = tuple(W.shape[:nd])
    stride = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    dilation = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
    padding = normalize_padding("conv", padding, nd)
    pads = explicit_padding(padding, x.shape[1:-1], kernel, stride, dilation)
    return nd, kernel, stride, dilation, pads


# ------------------------------------------------------------------------------------ ops


def conv_init(
    key,
    in_channels: int,
    features: int,
    kernel_size: tuple[int, ...],
    *,
    groups: int = 1,
    w_init="xavier_uniform",
    b_init="zeros",
    bias: bool = True,
):
    """{'W': (*kernel_size, in_channels / groups, features), 'b': (features,)}."""
    kw, kb = jax.random.split(key)
    shape = (*tuple(kernel_size), in_channels // groups, features)
    params = {"W": initializers.get(w_init)(kw, shape)}
    if bias:
        params["b"] = initializers.get(b_init)(kb, (features,))
    return params


def conv_forward(params, x, *, stride=1, padding="VALID", dilation=1, groups: int = 1):
    """y = x ⋆ W + b (cross-correlation), x: (N, *spatial, C_in) -> y: (N, *spatial_out, C_out)."""
    W = params["W"]  # (*window, C_in/G, C_out)
    nd, _, stride, dilation, pads = _resolve(W, x, stride, padding, dilation)
    dtype = jnp.result_type(x, W)  # mixed float32/float64 promotes, as x @ W would
    y = lax.conv_general_dilated(
        x.astype(dtype),
        W.astype(dtype),
        window_strides=stride,
        padding=pads,
        rhs_dilation=dilation,
        dimension_numbers=_FORWARD_DN[nd],
        feature_group_count=groups,
    )  # (N, *spatial_out, C_out)
    if "b" in params:
        y = y + params["b"]
    return y, ConvResiduals(x)


def conv_backward(params, residuals, dy, *, stride=1, padding="VALID", dilation=1, groups: int = 1):
    """(dparams, dx) for `conv_forward` with the same hyperparameters; dy: (N, *spatial_out, C_out).

    The same gradients are computed two ways: by convolutions (`grads_by_convs`; cuDNN on GPU,
    the convolution units of a TPU) and by taps (`grads_by_taps`; matrix products). XLA:CPU runs
    the weight-gradient convolution and the transposed convolution of a strided layer on slow
    generic paths, 3–7× the forward's time on a 32×32 image batch, so on CPU a convolution with
    at least `TAPS_MIN_WORK` multiply-adds per tap goes by taps; smaller ones, where the K
    separate products cost more than they save, and every other platform go by convolutions
    (chosen when the program is lowered). The tests hold both to JAX's own vector-Jacobian
    product.
    """
    x_dtype, W_dtype = residuals.x.dtype, params["W"].dtype
    x = residuals.x.astype(dy.dtype)  # (N, *spatial, C_in), in the forward's (promoted) dtype
    W = params["W"].astype(dy.dtype)  # (*window, C_in/G, C_out)
    nd, kernel, stride, dilation, pads = _resolve(W, x, stride, padding, dilation)
    geometry = dict(stride=stride, dilation=dilation, pads=pads, groups=groups)
    c_in = x.shape[-1]

    # ∂L/∂b = Σ over batch and positions of δ: (C_out,)
    dparams = {}
    if "b" in params:
        dparams["b"] = acc_sum(dy, axis=tuple(range(nd + 1))).astype(params["b"].dtype)
    per_tap = dy[..., 0].size * c_in * W.shape[-1] // groups  # multiply-adds of one tap
    on_cpu = grads_by_taps if per_tap >= TAPS_MIN_WORK else grads_by_convs
    dW, dx = lax.platform_dependent(
        x, W, dy, cpu=partial(on_cpu, **geometry), default=partial(grads_by_convs, **geometry)
    )
    dparams["W"] = dW.astype(W_dtype)  # (*window, C_in/G, C_out)
    return dparams, dx.astype(x_dtype)


def grads_by_taps(x, W, dy, *, stride, dilation, pads, groups):
    """(∂L/∂W, ∂L/∂x) from the forward written as a sum over the kernel's taps k:

        y = Σ_k v_k W_k + b,      v_k[n, t, :] = x̃[n, t·s + k·d, :]      (N, *out, C_in)

    with W_k = W[k] (C_in/G, C_out) and x̃ the padded input. Each term is a matrix product over
    the M = N·Π(out) output positions (block-diagonal over the G groups), so

        ∂L/∂W_k = v_kᵀ δ        ∂L/∂v_k = δ W_kᵀ        ∂L/∂x̃ = Σ_k (∂L/∂v_k placed back at
                                                                    t·s + k·d, zeros between)

    and ∂L/∂x is ∂L/∂x̃ without its padding. Placing back is `lax.pad` with interior padding
    s − 1: the transposed convolution as K shifted, dilated copies. Padded positions no window
    reaches get no gradient by construction.
    """
    nd = W.ndim - 2
    kernel, c_in, c_out = W.shape[:nd], x.shape[-1], W.shape[-1]
    out, n = dy.shape[1:-1], x.shape[0]
    x_pad = jnp.pad(x, ((0, 0), *pads, (0, 0)))  # x̃: (N, *padded, C_in)
    padded = x_pad.shape[1:-1]
    delta = dy.reshape(-1, c_out)  # δ: (M, C_out)
    dW, dx_pad = [], jnp.zeros_like(x_pad)
    for tap in itertools.product(*(range(k) for k in kernel)):
        first = [k * d for k, d in zip(tap, dilation, strict=True)]  # x̃ index of t = 0
        last = [a + s * (o - 1) for a, s, o in zip(first, stride, out, strict=True)]
        v = lax.slice(x_pad, (0, *first, 0), (n, *(e + 1 for e in last), c_in), (1, *stride, 1))
        dW_k, dv = _tap_products(v.reshape(-1, c_in), delta, W[tap], groups)
        dW.append(dW_k)  # (C_in/G, C_out)
        dv = dv.reshape(v.shape)  # (N, *out, C_in)
        place = [(a, p - 1 - e, s - 1) for a, e, p, s in zip(first, last, padded, stride)]
        dx_pad = dx_pad + lax.pad(dv, jnp.zeros((), dv.dtype), [(0, 0, 0), *place, (0, 0, 0)])
    inside = tuple(slice(lo, p - hi) for (lo, hi), p in zip(pads, padded, strict=True))
    return jnp.stack(dW).reshape(W.shape), dx_pad[(slice(None), *inside, slice(None))]


def _tap_products(v, delta, W_k, groups):
    """v_kᵀ δ (C_in/G, C_out) and δ W_kᵀ (M, C_in) for one tap; v (M, C_in), δ (M, C_out),
    W_k (C_in/G, C_out). With groups the products are block-diagonal: group g pairs input
    channels g·C_in/G… with output channels g·C_out/G…"""
    if groups == 1:  # plain products: the einsum with a size-1 group axis ran 1.8× slower on CPU
        return v.T @ delta, delta @ W_k.T
    m, c_in, c_out = v.shape[0], v.shape[1], delta.shape[1]
    v_g = v.reshape(m, groups, c_in // groups)  # (M, G, C_in/G)
    delta_g = delta.reshape(m, groups, c_out // groups)  # (M, G, C_out/G)
    W_g = W_k.reshape(c_in // groups, groups, c_out // groups)  # (C_in/G, G, C_out/G)
    dW_k = jnp.einsum("mgi,mgo->igo", v_g, delta_g).reshape(c_in // groups, c_out)
    return dW_k, jnp.einsum("mgo,igo->mgi", delta_g, W_g).reshape(m, c_in)


def grads_by_convs(x, W, dy, *, stride, dilation, pads, groups):
    """(∂L/∂W, ∂L/∂x) as the two convolutions of the chain rule (see the module docstring)."""
    nd = W.ndim - 2
    kernel, c_in, c_out = W.shape[:nd], x.shape[-1], W.shape[-1]
    spatial, out = x.shape[1:-1], dy.shape[1:-1]
    ke = effective_kernel(kernel, dilation)
    # Padded input positions past the last window: r = (n + lo + hi) − ((o − 1)·s + k_eff).
    rest = [
        n + lo + hi - ((o - 1) * s + k)
        for n, (lo, hi), o, s, k in zip(spatial, pads, out, stride, ke, strict=True)
    ]

    # ∂L/∂W[k, i, o] = Σ_{n,t} x̃[n, t·s + k·d, i] δ[n, t, o]: a convolution whose "batch" is
    # C_in, whose features are N, whose kernel is δ dilated by s, with taps spaced by d. With
    # groups, batch_group_count pairs input-channel group g with output-channel group g.
    dW = lax.conv_general_dilated(
        x,
        dy,
        window_strides=dilation,
        padding=[(lo, hi - r) for (lo, hi), r in zip(pads, rest, strict=True)],
        rhs_dilation=stride,
        dimension_numbers=_WEIGHT_DN[nd],
        batch_group_count=groups,
    )  # (*window, C_in/G, C_out)

    # ∂L/∂x = δ (dilated by s) ⋆ W flipped in space, channels swapped within each group:
    # W↺[k, o', g·C_in/G + i] = W[K − 1 − k, i, g·C_out/G + o'].
    W_t = W.reshape(*kernel, c_in // groups, groups, c_out // groups)
    W_t = jnp.swapaxes(W_t, -1, -3).reshape(*kernel, c_out // groups, c_in)
    W_t = jnp.flip(W_t, axis=tuple(range(nd)))  # (*window, C_out/G, C_in)
    dx = lax.conv_general_dilated(
        dy,
        W_t,
        window_strides=(1,) * nd,
        padding=[
            (k - 1 - lo, k - 1 - hi + r) for k, (lo, hi), r in zip(ke, pads, rest, strict=True)
        ],
        lhs_dilation=stride,
        rhs_dilation=dilation,
        dimension_numbers=_FORWARD_DN[nd],
        feature_group_count=groups,
    )  # (N, *spatial, C_in)
    return dW, dx


# --------------------------------------------------------------------------------- layers


def _conv_layer(
    nd: int, features, kernel_size, stride, padding, dilation, groups, w_init, b_init, bias
) -> Layer:
    cls = f"Conv{nd}D"
    name = f"{cls}({features}, {kernel_size})"
    features = positive_int(name, "features", features)
    kernel = _tuple(name, "kernel_size", kernel_size, nd)
    stride = _tuple(name, "stride", stride, nd)
    dilation = _tuple(name, "dilation", dilation, nd)
    groups = positive_int(name, "groups", groups)
    padding = normalize_padding(name, padding, nd)
    if features % groups:
        raise ValueError(f"{name}: features ({features}) must be divisible by groups ({groups})")
    w_init, b_init = initializers.get(w_init), initializers.get(b_init)
    hyper = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    layout = "(batch, width, channels)" if nd == 1 else "(batch, height, width, channels)"

    def check_spatial(spatial, c_in, got):
        if c_in % groups:
            raise ValueError(
                f"{name}: input channels ({c_in}) must be divisible by groups ({groups}); "
                f"input shape {got}"
            )
        pads = explicit_padding(padding, spatial, kernel, stride, dilation)
        _check_fits(name, spatial, kernel, stride, dilation, pads)
        return pads

    def init_layer(key, in_shape):
        in_shape = as_shape(in_shape)
        if len(in_shape) != nd + 1:
            raise ValueError(
                f"{name}: expects per-example input {layout[8:]}, i.e. rank {nd + 1} without "
                f"the batch axis, got shape {in_shape}"
            )
        spatial, c_in = in_shape[:-1], in_shape[-1]
        pads = check_spatial(spatial, c_in, in_shape)
        out = output_size(spatial, kernel, stride, dilation, pads)
        params = conv_init(
            key, c_in, features, kernel, groups=groups, w_init=w_init, b_init=b_init, bias=bias
        )
        return (*out, features), params, ()

    def forward_layer(params, state, x, *, key=None, train=False):
        check_float_input(name, x)
        c_in = params["W"].shape[-2] * groups
        if x.ndim != nd + 2 or x.shape[-1] != c_in:
            raise ValueError(
                f"{name}: expected input {layout} with {c_in} channels, i.e. shape "
                f"(batch, {', '.join(['*'] * nd)}, {c_in}), got {tuple(x.shape)}"
            )
        check_spatial(x.shape[1:-1], c_in, tuple(x.shape))
        y, res = conv_forward(params, x, **hyper)
        return y, res, state

    def backward_layer(params, residuals, dy):
        return conv_backward(params, residuals, dy, **hyper)

    return Layer(init_layer, forward_layer, backward_layer, name)


def Conv1D(
    features: int,
    kernel_size,
    *,
    stride=1,
    padding="VALID",
    dilation=1,
    groups: int = 1,
    w_init="xavier_uniform",
    b_init="zeros",
    bias: bool = True,
) -> Layer:
    """1-D convolution over (batch, width, channels); kernel W: (k, C_in/groups, features).

    Args:
        features: output channels.
        kernel_size, stride, dilation: an int or a 1-tuple.
        padding: 'VALID', 'SAME', an int, or a (lo, hi) pair.
        groups: feature groups; C_in and features must be divisible by it (groups = C_in is a
            depthwise convolution).
        w_init, b_init: initializers (names or functions from `jaxbp.init`); bias: add `b`.

    Example:
        >>> import jax, jaxbp
        >>> layer = jaxbp.Conv1D(25, 5, stride=2, padding=1)
        >>> layer.init(jax.random.key(0), (40, 1))[0]
        (19, 25)
    """
    return _conv_layer(
        1, features, kernel_size, stride, padding, dilation, groups, w_init, b_init, bias
    )


def Conv2D(
    features: int,
    kernel_size,
    *,
    stride=1,
    padding="VALID",
    dilation=1,
    groups: int = 1,
    w_init="xavier_uniform",
    b_init="zeros",
    bias: bool = True,
) -> Layer:
    """2-D convolution over (batch, height, width, channels); W: (kh, kw, C_in/groups, features).

    Sizes are an int or an (h, w) pair; padding is 'VALID', 'SAME', an int, a pair of ints
    (per axis) or two (lo, hi) pairs. See `Conv1D` for the other arguments.

    Example:
        >>> import jax, jaxbp
        >>> layer = jaxbp.Conv2D(16, (3, 3), stride=2, padding="SAME")
        >>> layer.init(jax.random.key(0), (32, 32, 3))[0]
        (16, 16, 16)
    """
    return _conv_layer(
        2, features, kernel_size, stride, padding, dilation, groups, w_init, b_init, bias
    )


__all__ = ["Conv1D", "Conv2D", "ConvResiduals", "conv_backward", "conv_forward", "conv_init"]
