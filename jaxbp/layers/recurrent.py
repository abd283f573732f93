"""Recurrent layers — vanilla RNN, LSTM, GRU — and backpropagation through time (BPTT) by hand.

Inputs are batches of sequences x of shape (batch, time, features) (per example (time,
features)); a cell maps the previous hidden state h_{t−1} (batch, H) and the input x_t to h_t.
jaxbp stores row vectors, so every product reads `x_t W + h_{t−1} U + b` with W (features, ·)
and U (H, ·). σ is the logistic sigmoid and ⊙ the elementwise product.

**Forward** (`lax.scan` over time). The input projection x W does not depend on the state, so it
is computed for all T steps at once — one (T·batch, F) × (F, G) matrix product — before the
scan; the scan only does the recurrent product h_{t−1} U, adds b, and the elementwise gate
algebra.

**Backward** (a reverse `lax.scan`). BPTT is the chain rule along time. With δ_t = ∂L/∂z_t the
gradient of the step's pre-activations, every parameter gradient is a sum over time of
outer products:

    ∂L/∂W = Σ_t x_tᵀ δ_t,    ∂L/∂U = Σ_t h_{t−1}ᵀ δ_t,    ∂L/∂b = Σ_t Σ_batch δ_t,
    ∂L/∂x_t = δ_t Wᵀ.

Only the state gradient ∂L/∂h_{t−1} = δ_t Uᵀ (+ the direct paths of the cell) depends on the
future, so the reverse scan carries just that (and ∂L/∂c for the LSTM) and emits δ_t. The sums
above are then single matrix products over all time × batch rows, after the scan — instead of
T small products accumulated step by step, as the autodiff of the scan does. The residuals kept
are the input x (for ∂W), the hidden states (the layer's output itself when it returns
sequences; they give h_{t−1} for ∂U), and per step only the activated gates the derivatives
need (σ′ and tanh′ are read from the gate outputs). ∂U reads h_{t−1} from one shifted copy
of the states; the GRU's scan emits only the 3H-wide δ of its input projection and rebuilds the
rest after it; the vanilla RNN writes δ_t over the output gradient at t in place.

**Initial state and mask.** A layer's input is either the array x, or a dict

    {"x": x (batch, time, F), "mask": (batch, time) bool/int,   # optional
     "h0": (batch, H), "c0": (batch, H) (LSTM only)}            # optional, default zeros

With a dict, the backward returns a dict with the same keys: "x" → ∂L/∂x, "h0" → ∂L/∂h0,
"c0" → ∂L/∂c0, "mask" → None (a mask gets no gradient). Where mask[b, t] is false the step is
skipped: the state (h, c) is carried through unchanged, h_t = h_{t−1}, and the output at t is that
carried state — so with return_sequences=False the output is the state after the last valid
step, whatever the padding. In the backward a skipped step passes ∂L/∂h_t straight to
∂L/∂h_{t−1} and has δ_t = 0. The layer accepts any sequence length T ≥ 1 at run time.

Example:
    >>> import jax, jax.numpy as jnp, jaxbp
    >>> layer = jaxbp.LSTM(8, return_sequences=False)
    >>> out_shape, params, state = layer.init(jax.random.key(0), (5, 3))
    >>> x = jnp.ones((2, 5, 3))
    >>> mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    >>> y, res, _ = layer.forward(params, state, {"x": x, "mask": mask})
    >>> dparams, dx = layer.backward(params, res, jnp.ones_like(y))
    >>> out_shape, y.shape, dx["x"].shape, dx["mask"] is None
    ((8,), (2, 8), (2, 5, 3), True)
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxbp import init as initializers
from jaxbp.activations import Relu, Tanh
from jaxbp.layer import Child, Layer, as_shape, check_float_input, positive_int
from jaxbp.precision import accumulation_dtype

# ------------------------------------------------------------------------------- helpers


def _time_major(a):
    """(batch, time, ...) -> (time, batch, ...)."""
    return jnp.swapaxes(a, 0, 1)


def _mask_time_major(mask):
    """(batch, time) -> (time, batch, 1) bool, or None."""
    return None if mask is None else jnp.swapaxes(mask, 0, 1)[..., None].astype(bool)


def _project(x, W):
    """x W for all steps at once, time-major: (batch, T, F) -> (T, batch, G), one matmul.

    The bias is added inside the scan, per step: added here, XLA would keep the product and
    the sum as two (T, B, G) buffers."""
    return _time_major(x) @ W


def _sum_outer(a, d):
    """Σ_t a_tᵀ d_t over all time × batch rows: (T, B, I), (T, B, G) -> (I, G), as one 2-D
    matrix product (XLA copies both operands of a dot with two contracting axes)."""
    return a.reshape(-1, a.shape[-1]).T @ d.reshape(-1, d.shape[-1])


def _input_gradients(x, deltas, W):
    """∂W = Σ_t x_tᵀ δ_t (F, G) and ∂x_t = δ_t Wᵀ (B, T, F), from time-major δ (T, B, G)."""
    dW = _sum_outer(_time_major(x), deltas)
    dx = _time_major(deltas @ W.T)
    return dW, dx


def _zeros_state(x, W, hidden):
    return jnp.zeros((x.shape[0], hidden), jnp.result_type(x, W))


def _states_out(hs_tm, return_sequences):
    """The states h_1..h_T from the scan, (T, B, H), kept as the `hs` residual.

    With return_sequences the layer's output is all states batch-major, (B, T, H), and the
    residual is that same array (no second copy); otherwise the output is h_T and the residual
    stays time-major. Returns (y, hs)."""
    if return_sequences:
        hs = _time_major(hs_tm)  # (B, T, H)
        return hs, hs
    return hs_tm[-1], hs_tm


def _states_time_major(hs, sequences):
    """The `hs` residual as (T, B, H) (XLA keeps the output time-major in memory, so this is
    usually free)."""
    return _time_major(hs) if sequences else hs


def _states_before(h0, hs_tm):
    """The states entering each step, [h_0, ..., h_{T−1}] (T, B, H), from h_0 and h_1..h_T.

    One shifted copy of the states: it is both what the BPTT step reads and the left operand of
    ∂U = Σ_t h_{t−1}ᵀ δ_t. (Summing h_0ᵀ δ_1 + Σ h_{1..T−1}ᵀ δ_{2..T} instead makes XLA copy
    both sliced operands, and δ can be 4H wide.)"""
    return jnp.concatenate([h0[None], hs_tm[:-1]], axis=0)


def _output_gradient(dy, like):
    """Split dy into the per-step gradient (T, B, H) or None, and the one at the last state."""
    if dy.ndim == 3:  # return_sequences=True: every h_t is an output
        return _time_major(dy), jnp.zeros_like(like)
    return None, dy  # only h_T is an output


# -------------------------------------------------------------------------- vanilla RNN


class RNNResiduals(NamedTuple):
    x: jax.Array  # the input, (B, T, F)
    h0: jax.Array  # initial state, (B, H)
    hs: jax.Array  # states h_1..h_T: the output (B, T, H), or (T, B, H) if only h_T is output
    mask: Any  # (T, B, 1) bool, or None


# The activations whose derivative can be read from their output h = f(z) (what BPTT keeps).
_RNN_ACTIVATIONS = {Tanh: "tanh", Relu: "relu"}


def _rnn_f(activation):
    return jnp.tanh if activation is Tanh else jax.nn.relu


def _rnn_f_prime_from_output(activation, h):
    """f′(z) read from h = f(z): tanh 1 − h², relu [h > 0] (ReLU′(0) = 0)."""
    if activation is Tanh:
        return 1 - h * h
    return (h > 0).astype(h.dtype)


def _check_activation(name, activation):
    if not any(activation is f for f in _RNN_ACTIVATIONS):
        raise ValueError(
            f"{name}: activation must be the Layer constructor jaxbp.Tanh or jaxbp.Relu (its "
            f"derivative is read from the stored output), got {activation!r}"
        )


def rnn_init(
    key, in_features, features, *, w_init="xavier_uniform", u_init="orthogonal", b_init="zeros"
):
    """{'W': (F, H), 'U': (H, H), 'b': (H,)}."""
    kw, ku, kb = jax.random.split(key, 3)
    return {
        "W": initializers.get(w_init)(kw, (in_features, features)),
        "U": initializers.get(u_init)(ku, (features, features)),
        "b": initializers.get(b_init)(kb, (features,)),
    }


@partial(jax.jit, static_argnames=("activation", "return_sequences"))
def rnn_forward(params, x, h0=None, mask=None, *, activation=Tanh, return_sequences=True):
    """h_t = f(z_t),  z_t = x_t W + h_{t−1} U + b,  f = tanh or relu (`activation=Tanh`/`Relu`).

    Returns (y, RNNResiduals): y = all states (B, T, H) or the last one (B, H).
    """
    W, U, b = params["W"], params["U"], params["b"]
    f = _rnn_f(activation)
    h0 = _zeros_state(x, W, U.shape[0]) if h0 is None else h0
    m = _mask_time_major(mask)
    xw = _project(x, W)  # (T, B, H): x_t W for every t, hoisted out of the scan

    def step(h_prev, inputs):
        xw_t, m_t = inputs
        h = f(xw_t + h_prev @ U + b)  # (B, H)
        if m_t is not None:
            h = jnp.where(m_t, h, h_prev)  # skipped step: carry the state through
        return h, h

    _, hs_tm = lax.scan(step, h0, (xw, m))  # (T, B, H)
    y, hs = _states_out(hs_tm, return_sequences)
    return y, RNNResiduals(x, h0, hs, m)


@partial(jax.jit, static_argnames=("activation",))
def rnn_backward(params, residuals, dy, *, activation=Tanh):
    """BPTT for the vanilla RNN. With g_t = ∂L/∂h_t (from the output and from step t + 1):

        δ_t = g_t ⊙ f′(z_t)                    (f′ read from h_t: 1 − h_t² or [h_t > 0])
        ∂L/∂h_{t−1} = δ_t Uᵀ                    (masked step: δ_t = 0, ∂L/∂h_{t−1} = g_t)

    then ∂W = Σ x_tᵀ δ_t, ∂U = Σ h_{t−1}ᵀ δ_t, ∂b = Σ δ_t, ∂x_t = δ_t Wᵀ as single matmuls.
    Returns (dparams, dx, dh0).
    """
    x, h0, hs, m = residuals
    W, U = params["W"], params["U"]
    dys, dh_T = _output_gradient(dy, h0)  # (T, B, H) or None; (B, H)
    hs_tm = _states_time_major(hs, dy.ndim == 3)  # (T, B, H)
    acc = accumulation_dtype(dh_T.dtype)  # half precision: carry ∂L/∂h in float32

    def step(carry, inputs):
        dh, buf = carry  # buf row s: the output gradient at s for s ≤ t, δ_s for s > t
        t, h_t, m_t = inputs
        g = dh + lax.dynamic_index_in_dim(buf, t, keepdims=False)  # ∂L/∂h_t, (B, H)
        delta = g * _rnn_f_prime_from_output(activation, h_t)  # ∂L/∂z_t, (B, H)
        dh_prev = delta @ U.T  # (B, H)
        if m_t is not None:
            delta = jnp.where(m_t, delta, 0)
            dh_prev = jnp.where(m_t, dh_prev, g)
        buf = lax.dynamic_update_index_in_dim(buf, delta.astype(buf.dtype), t, 0)
        return (dh_prev.astype(acc), buf), None

    # δ_t is written over the output gradient at t, which step t is the last to read: an update
    # in place of the carried buffer, so the deltas need no (T, B, H) array of their own. (The
    # LSTM and GRU emit their δ as scan outputs: with the gates read by several fusions per
    # step, XLA copies a carried buffer on every step.)
    buffer = jnp.zeros_like(hs_tm) if dys is None else dys  # (T, B, H)
    steps = jnp.arange(hs_tm.shape[0])
    (dh0, deltas), _ = lax.scan(step, (dh_T.astype(acc), buffer), (steps, hs_tm, m), reverse=True)
    dh0 = dh0.astype(dh_T.dtype)
    dW, dx = _input_gradients(x, deltas, W)  # Σ_t x_tᵀ δ_t; δ_t Wᵀ
    dparams = {
        "W": dW,  # (F, H) = Σ_t x_tᵀ δ_t
        "U": _sum_outer(_states_before(h0, hs_tm), deltas),  # (H, H) = Σ_t h_{t−1}ᵀ δ_t
        "b": deltas.sum(axis=(0, 1)),  # (H,)
    }
    return dparams, dx, dh0


# ---------------------------------------------------------------------------------- LSTM


class LSTMResiduals(NamedTuple):
    x: jax.Array  # the input, (B, T, F)
    h0: jax.Array  # initial hidden state, (B, H)
    hs: jax.Array  # h_1..h_T: the output (B, T, H), or (T, B, H) if only h_T is output
    c_prev: jax.Array  # cell states c_0..c_{T−1} entering each step, (T, B, H)
    c_T: jax.Array  # the last cell state, (B, H)
    gates: jax.Array  # activated gates [i, f, g, o] per step, (T, B, 4H)
    mask: Any  # (T, B, 1) bool, or None


def lstm_init(
    key,
    in_features,
    features,
    *,
    w_init="xavier_uniform",
    u_init="orthogonal",
    b_init="zeros",
    forget_bias=1.0,
):
    """{'W': (F, 4H), 'U': (H, 4H), 'b': (4H,)}, gate blocks in the order [i, f, g, o].

    The forget-gate block of `b` starts at `forget_bias` (1.0 by default, Gers et al. 2000 /
    Jozefowicz et al. 2015): σ(1) ≈ 0.73, so the cell remembers by default at the start.
    """
    kw, ku, kb = jax.random.split(key, 3)
    b = initializers.get(b_init)(kb, (4 * features,))
    b = b.at[features : 2 * features].add(forget_bias)
    return {
        "W": initializers.get(w_init)(kw, (in_features, 4 * features)),
        "U": initializers.get(u_init)(ku, (features, 4 * features)),
        "b": b,
    }


@partial(jax.jit, static_argnames=("return_sequences",))
def lstm_forward(params, x, h0=None, c0=None, mask=None, *, return_sequences=True):
    """LSTM (Hochreiter & Schmidhuber 1997, with forget gate):

        z_t = x_t W + h_{t−1} U + b = [z_i, z_f, z_g, z_o]      (B, 4H)
        i = σ(z_i),  f = σ(z_f),  g = tanh(z_g),  o = σ(z_o)
        c_t = f ⊙ c_{t−1} + i ⊙ g
        h_t = o ⊙ tanh(c_t)

    Returns (y, LSTMResiduals): y = all h_t (B, T, H) or the last (B, H).
    """
    W, U, b = params["W"], params["U"], params["b"]
    H = U.shape[0]
    h0 = _zeros_state(x, W, H) if h0 is None else h0
    c0 = _zeros_state(x, W, H) if c0 is None else c0
    m = _mask_time_major(mask)
    xw = _project(x, W)  # (T, B, 4H), hoisted

    def step(carry, inputs):
        h_prev, c_prev = carry
        xw_t, m_t = inputs
        z = xw_t + h_prev @ U + b  # (B, 4H)
        i = jax.nn.sigmoid(z[:, :H])
        f = jax.nn.sigmoid(z[:, H : 2 * H])
        g = jnp.tanh(z[:, 2 * H : 3 * H])
        o = jax.nn.sigmoid(z[:, 3 * H :])
        c = f * c_prev + i * g
        h = o * jnp.tanh(c)
        if m_t is not None:
            h = jnp.where(m_t, h, h_prev)
            c = jnp.where(m_t, c, c_prev)
        return (h, c), (h, c_prev, jnp.concatenate([i, f, g, o], axis=-1))

    (_, c_T), (hs_tm, c_prev, gates) = lax.scan(step, (h0, c0), (xw, m))
    y, hs = _states_out(hs_tm, return_sequences)
    return y, LSTMResiduals(x, h0, hs, c_prev, c_T, gates, m)


@jax.jit
def lstm_backward(params, residuals, dy, dc_T=None):
    """BPTT for the LSTM. The reverse scan carries (∂L/∂h_t, ∂L/∂c_t). With g_h = ∂L/∂h_t (from
    the output and step t + 1) and τ = tanh(c_t):

        ∂L/∂o = g_h ⊙ τ                       δ_o = ∂L/∂o ⊙ o(1 − o)
        g_c = ∂L/∂c_t + g_h ⊙ o ⊙ (1 − τ²)     (the total gradient of c_t)
        δ_i = g_c ⊙ g ⊙ i(1 − i)              δ_g = g_c ⊙ i ⊙ (1 − g²)
        δ_f = g_c ⊙ c_{t−1} ⊙ f(1 − f)
        ∂L/∂c_{t−1} = g_c ⊙ f                 ∂L/∂h_{t−1} = δ_t Uᵀ,  δ_t = [δ_i, δ_f, δ_g, δ_o]

    (masked step: δ_t = 0 and both state gradients pass through unchanged); the parameter and
    input gradients are single matmuls over all δ_t after the scan. The scan reads c_{t−1} and
    carries c_t down from step t + 1. `dc_T` is a gradient reaching c_T from later steps (BPTT
    by segments, `LSTM(remat_every=k)`); None means zero.
    Returns (dparams, dx, dh0, dc0).
    """
    x, h0, hs, c_prev_all, c_T, gates, m = residuals
    W, U = params["W"], params["U"]
    H = U.shape[0]
    dys, dh_T = _output_gradient(dy, h0)
    acc = accumulation_dtype(dh_T.dtype)  # half precision: carry ∂L/∂h, ∂L/∂c in float32

    def step(carry, inputs):
        dh, dc, c_t = carry
        gates_t, c_prev, dy_t, m_t = inputs
        i, f, g, o = (gates_t[:, k * H : (k + 1) * H] for k in range(4))
        gh = dh if dy_t is None else dh + dy_t  # ∂L/∂h_t, (B, H)
        tau = jnp.tanh(c_t)
        delta_o = gh * tau * o * (1 - o)
        gc = dc + gh * o * (1 - tau * tau)  # ∂L/∂c_t, total
        delta_i = gc * g * i * (1 - i)
        delta_f = gc * c_prev * f * (1 - f)
        delta_g = gc * i * (1 - g * g)
        delta = jnp.concatenate([delta_i, delta_f, delta_g, delta_o], axis=-1)  # (B, 4H)
        dh_prev = delta @ U.T  # (B, H)
        dc_prev = gc * f
        if m_t is not None:
            delta = jnp.where(m_t, delta, 0)
            dh_prev = jnp.where(m_t, dh_prev, gh)
            dc_prev = jnp.where(m_t, dc_prev, dc)
        return (dh_prev, dc_prev, c_prev), delta.astype(dh_T.dtype)

    dc_init = jnp.zeros_like(dh_T, acc) if dc_T is None else dc_T.astype(acc)
    init = (dh_T.astype(acc), dc_init, c_T)
    xs = (gates, c_prev_all, dys, m)
    (dh0, dc0, _), deltas = lax.scan(step, init, xs, reverse=True)  # deltas: (T, B, 4H)
    dh0, dc0 = dh0.astype(dh_T.dtype), dc0.astype(dh_T.dtype)
    hs_tm = _states_time_major(hs, dy.ndim == 3)  # (T, B, H)
    dW, dx = _input_gradients(x, deltas, W)  # Σ_t x_tᵀ δ_t; δ_t Wᵀ
    dparams = {
        "W": dW,  # (F, 4H)
        "U": _sum_outer(_states_before(h0, hs_tm), deltas),  # (H, 4H) = Σ_t h_{t−1}ᵀ δ_t
        "b": deltas.sum(axis=(0, 1)),  # (4H,)
    }
    return dparams, dx, dh0, dc0


# ----------------------------------------------------------------------------------- GRU


class GRUResiduals(NamedTuple):
    x: jax.Array  # the input, (B, T, F)
    h0: jax.Array  # initial state, (B, H)
    hs: jax.Array  # h_1..h_T: the output (B, T, H), or (T, B, H) if only h_T is output
    gates: jax.Array  # per step [r, u, n, q], q = h_{t−1} U_n + b_hn, (T, B, 4H)
    mask: Any  # (T, B, 1) bool, or None


def gru_init(
    key, in_features, features, *, w_init="xavier_uniform", u_init="orthogonal", b_init="zeros"
):
    """{'W': (F, 3H), 'U': (H, 3H), 'b': (3H,), 'b_hn': (H,)}, blocks in the order [r, u, n]."""
    kw, ku, kb, kc = jax.random.split(key, 4)
    return {
        "W": initializers.get(w_init)(kw, (in_features, 3 * features)),
        "U": initializers.get(u_init)(ku, (features, 3 * features)),
        "b": initializers.get(b_init)(kb, (3 * features,)),
        "b_hn": initializers.get(b_init)(kc, (features,)),
    }


@partial(jax.jit, static_argnames=("return_sequences",))
def gru_forward(params, x, h0=None, mask=None, *, return_sequences=True):
    """GRU (Cho et al. 2014), in the form of cuDNN / PyTorch (reset gate after the product):

        a = x_t W + b = [a_r, a_u, a_n],   s = h_{t−1} U = [s_r, s_u, s_n]     (B, 3H)
        r = σ(a_r + s_r),   u = σ(a_u + s_u)              (reset and update gates)
        q = s_n + b_hn,     n = tanh(a_n + r ⊙ q)         (candidate state)
        h_t = (1 − u) ⊙ n + u ⊙ h_{t−1}

    Returns (y, GRUResiduals): y = all h_t (B, T, H) or the last (B, H).
    """
    W, U, b, b_hn = params["W"], params["U"], params["b"], params["b_hn"]
    H = U.shape[0]
    h0 = _zeros_state(x, W, H) if h0 is None else h0
    m = _mask_time_major(mask)
    xw = _project(x, W)  # (T, B, 3H), hoisted

    def step(h_prev, inputs):
        xw_t, m_t = inputs
        a = xw_t + b  # (B, 3H)
        s = h_prev @ U  # (B, 3H)
        r = jax.nn.sigmoid(a[:, :H] + s[:, :H])
        u = jax.nn.sigmoid(a[:, H : 2 * H] + s[:, H : 2 * H])
        q = s[:, 2 * H :] + b_hn
        n = jnp.tanh(a[:, 2 * H :] + r * q)
        h = n + u * (h_prev - n)
        if m_t is not None:
            h = jnp.where(m_t, h, h_prev)
        return h, (h, jnp.concatenate([r, u, n, q], axis=-1))

    _, (hs_tm, gates) = lax.scan(step, h0, (xw, m))
    y, hs = _states_out(hs_tm, return_sequences)
    return y, GRUResiduals(x, h0, hs, gates, m)


@jax.jit
def gru_backward(params, residuals, dy):
    """BPTT for the GRU. With g = ∂L/∂h_t (from the output and step t + 1):

        δ_u = g ⊙ (h_{t−1} − n) ⊙ u(1 − u)          (∂L/∂a_u = ∂L/∂s_u)
        δ_n = g ⊙ (1 − u) ⊙ (1 − n²)                 (∂L/∂a_n)
        δ_r = δ_n ⊙ q ⊙ r(1 − r)                     (∂L/∂a_r = ∂L/∂s_r)
        δ_q = δ_n ⊙ r                                (∂L/∂s_n = ∂L/∂b_hn)
        ∂L/∂h_{t−1} = g ⊙ u + [δ_r, δ_u, δ_q] Uᵀ

    (masked step: all δ = 0 and ∂L/∂h_{t−1} = g). The scan emits δ_a = [δ_r, δ_u, δ_n] only;
    after it, δ_q = δ_n ⊙ r is rebuilt from the stored r, and as single matmuls:
    ∂W = Σ x_tᵀ δ_a, ∂x_t = δ_a Wᵀ, ∂b = Σ δ_a, ∂b_hn = Σ δ_q, ∂U = Σ h_{t−1}ᵀ [δ_r, δ_u, δ_q].
    Returns (dparams, dx, dh0).
    """
    x, h0, hs, gates, m = residuals
    W, U = params["W"], params["U"]
    H = U.shape[0]
    dys, dh_T = _output_gradient(dy, h0)
    hs_prev = _states_before(h0, _states_time_major(hs, dy.ndim == 3))  # h_{t−1}, (T, B, H)
    acc = accumulation_dtype(dh_T.dtype)  # half precision: carry ∂L/∂h in float32

    def step(dh, inputs):
        gates_t, h_prev, dy_t, m_t = inputs
        r, u, n, q = (gates_t[:, k * H : (k + 1) * H] for k in range(4))
        g = dh if dy_t is None else dh + dy_t  # ∂L/∂h_t, (B, H)
        delta_u = g * (h_prev - n) * u * (1 - u)
        delta_n = g * (1 - u) * (1 - n * n)
        delta_r = delta_n * q * r * (1 - r)
        delta_q = delta_n * r
        dh_prev = g * u + jnp.concatenate([delta_r, delta_u, delta_q], axis=-1) @ U.T
        delta_a = jnp.concatenate([delta_r, delta_u, delta_n], axis=-1)  # ∂L/∂a, (B, 3H)
        if m_t is not None:
            delta_a = jnp.where(m_t, delta_a, 0)
            dh_prev = jnp.where(m_t, dh_prev, g)
        return dh_prev.astype(acc), delta_a.astype(dh_T.dtype)

    xs = (gates, hs_prev, dys, m)
    dh0, delta_a = lax.scan(step, dh_T.astype(acc), xs, reverse=True)  # (T, B, 3H)
    dh0 = dh0.astype(dh_T.dtype)
    r = gates[..., :H]
    delta_s = jnp.concatenate([delta_a[..., : 2 * H], delta_a[..., 2 * H :] * r], -1)  # ∂L/∂s
    dW, dx = _input_gradients(x, delta_a, W)  # Σ_t x_tᵀ δ_a; δ_a Wᵀ
    dparams = {
        "W": dW,  # (F, 3H)
        "U": _sum_outer(hs_prev, delta_s),  # (H, 3H) = Σ_t h_{t−1}ᵀ [δ_r, δ_u, δ_q]
        "b": delta_a.sum(axis=(0, 1)),  # (3H,)
        "b_hn": delta_s[..., 2 * H :].sum(axis=(0, 1)),  # (H,) = Σ δ_q
    }
    return dparams, dx, dh0


# ------------------------------------------------- BPTT by segments (remat_every=k)


class SegmentResiduals(NamedTuple):
    x: jax.Array  # the input, (B, T, F)
    mask: Any  # (B, T) bool, or None
    starts: tuple  # the states entering each full segment, each (T // k, B, H)
    tail_start: tuple  # the states entering the last T mod k steps, each (B, H)


def _zero_states(x, params, n_states):
    return tuple(_zeros_state(x, params["W"], params["U"].shape[0]) for _ in range(n_states))


@partial(jax.jit, static_argnums=(0, 1, 6, 7))
def segments_forward(cell_forward, last_states, params, x, states, mask, k, sequences):
    """Run a cell over T steps in segments of k, keeping only the states entering each
    segment: memory (T/k)·(B, H) per state instead of T steps of residuals.

    `cell_forward(params, x, *states, mask, return_sequences=True) -> (hs, residuals)` is the
    cell's plain forward op, run on each segment; `last_states(hs, residuals)` reads the
    states after it. Returns (y, SegmentResiduals).
    """
    B, T, _ = x.shape
    n = T // k
    states = tuple(
        s if s is not None else z for s, z in zip(states, _zero_states(x, params, len(states)))
    )

    def run(x_seg, start, m_seg):
        hs, res = cell_forward(params, x_seg, *start, m_seg, return_sequences=True)
        return hs, last_states(hs, res)

    def step(carry, s):
        start, out = carry
        x_seg = lax.dynamic_slice_in_dim(x, s * k, k, axis=1)  # (B, k, F)
        m_seg = None if mask is None else lax.dynamic_slice_in_dim(mask, s * k, k, axis=1)
        hs, end = run(x_seg, start, m_seg)
        if sequences:
            out = lax.dynamic_update_slice_in_dim(out, hs, s * k, axis=1)
        return (end, out), start

    out = jnp.zeros((B, T, params["U"].shape[0]), states[0].dtype) if sequences else None
    if n:
        (tail_start, out), starts = lax.scan(step, (states, out), jnp.arange(n))
    else:  # T < k: a single (short) segment
        tail_start, starts = states, tuple(s[None][:0] for s in states)
    y = out if sequences else tail_start[0]
    if n * k < T:  # the last T mod k steps, outside the scan
        m_tail = None if mask is None else mask[:, n * k :]
        hs, end = run(x[:, n * k :], tail_start, m_tail)
        y = jnp.concatenate([out[:, : n * k], hs], axis=1) if sequences else end[0]
    return y, SegmentResiduals(x, mask, starts, tail_start)


@partial(jax.jit, static_argnums=(0, 1, 5))
def segments_backward(cell_forward, cell_backward, params, res, dy, k):
    """BPTT by segments, last to first: rerun the segment's forward from its stored start
    states (now keeping the residuals), then the cell's backward on it, with the gradients
    reaching its last states from the later segments (∂L/∂h_end is added to the gradient of
    the segment's last output, ∂L/∂c_end is passed as `dc_T`). Parameter gradients are summed
    over segments. Returns (dparams, dx, *dstates0).
    """
    x, mask, starts, tail_start = res
    B, T, F = x.shape
    n = T // k
    sequences = dy.ndim == 3
    H = params["U"].shape[0]

    def reverse(x_seg, start, m_seg, dy_seg, dstates):
        _, seg_res = cell_forward(params, x_seg, *start, m_seg, return_sequences=True)
        dy_seg = dy_seg.at[:, -1].add(dstates[0])  # h_end is the segment's last output
        dparams, dx_seg, *d_start = cell_backward(params, seg_res, dy_seg, *dstates[1:])
        return dparams, dx_seg, tuple(d_start)

    dstates = (jnp.zeros((B, H), dy.dtype) if sequences else dy,)
    dstates += tuple(jnp.zeros_like(s) for s in tail_start[1:])
    dx = jnp.zeros_like(x)
    dparams = jax.tree.map(jnp.zeros_like, params)
    if n * k < T:
        m_tail = None if mask is None else mask[:, n * k :]
        dy_tail = dy[:, n * k :] if sequences else jnp.zeros((B, T - n * k, H), dy.dtype)
        dparams, dx_tail, dstates = reverse(x[:, n * k :], tail_start, m_tail, dy_tail, dstates)
        dx = dx.at[:, n * k :].set(dx_tail)

    def step(carry, s):
        dstates, dparams, dx = carry
        x_seg = lax.dynamic_slice_in_dim(x, s * k, k, axis=1)
        m_seg = None if mask is None else lax.dynamic_slice_in_dim(mask, s * k, k, axis=1)
        start = jax.tree.map(lambda a: a[s], starts)
        dy_seg = (
            lax.dynamic_slice_in_dim(dy, s * k, k, axis=1)
            if sequences
            else jnp.zeros((B, k, H), dy.dtype)
        )
        dp, dx_seg, dstates = reverse(x_seg, start, m_seg, dy_seg, dstates)
        dparams = jax.tree.map(jnp.add, dparams, dp)
        dx = lax.dynamic_update_slice_in_dim(dx, dx_seg, s * k, axis=1)
        return (dstates, dparams, dx), None

    if n:
        init = (dstates, dparams, dx)
        (dstates, dparams, dx), _ = lax.scan(step, init, jnp.arange(n), reverse=True)
    return (dparams, dx, *dstates)


# ------------------------------------------------------------------------------- layers


def _in_shape(name, in_shape):
    if isinstance(in_shape, dict):
        if "x" not in in_shape:
            raise ValueError(f"{name}: a dict in_shape needs the key 'x', got {sorted(in_shape)}")
        in_shape = in_shape["x"]
    in_shape = as_shape(in_shape)
    if len(in_shape) != 2:
        raise ValueError(
            f"{name}: expected a per-example input shape (time, features), got {in_shape} "
            f"[rank {len(in_shape)}]"
        )
    return in_shape


def _unpack(name, inputs, state_keys, in_dim, hidden):
    """Validate the layer input; return (x, [initial states or None], mask, given keys)."""
    if isinstance(inputs, dict):
        allowed = ("x", "mask", *state_keys)
        unknown = sorted(set(inputs) - set(allowed))
        if unknown or "x" not in inputs:
            raise ValueError(
                f"{name}: a dict input takes the keys {allowed} ('x' required), got "
                f"{sorted(inputs)}"
            )
        x = inputs["x"]
        given = {k: None for k in inputs}  # remembers the input's form for the backward
    else:
        x, given = inputs, None
        inputs = {}
    check_float_input(name, x)
    shape = tuple(jnp.shape(x))
    if len(shape) != 3 or shape[-1] != in_dim or shape[1] < 1:
        raise ValueError(
            f"{name}: expected input of shape (batch, time >= 1, {in_dim}) [rank 3], got "
            f"{shape} [rank {len(shape)}]"
        )
    batch, time = shape[:2]
    mask = inputs.get("mask")
    if mask is not None:
        dtype = jnp.result_type(mask)
        if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_)):
            raise TypeError(
                f"{name}: the mask must be bool or integer (true = a real step), got dtype "
                f"{dtype}; use mask.astype(bool)"
            )
        if tuple(jnp.shape(mask)) != (batch, time):
            raise ValueError(
                f"{name}: expected a mask of shape (batch, time) = {(batch, time)}, got "
                f"{tuple(jnp.shape(mask))}"
            )
    states = []
    for k in state_keys:
        s = inputs.get(k)
        if s is not None:
            check_float_input(f"{name} ({k})", s)
            if tuple(jnp.shape(s)) != (batch, hidden):
                raise ValueError(
                    f"{name}: expected the initial state '{k}' of shape (batch, hidden) = "
                    f"{(batch, hidden)}, got {tuple(jnp.shape(s))}"
                )
        states.append(s)
    return x, states, mask, given


def _recurrent_layer(
    name, hidden, return_sequences, init_fn, forward_fn, backward_fn, keys, segments=None
):
    """A Layer around a cell's ops; `keys` names its initial states ('h0', maybe 'c0').

    `segments = (k, cell_forward, cell_backward, last_states)` switches to BPTT by segments
    of k steps (`segments_forward` / `segments_backward`)."""

    init_params = jax.jit(init_fn, static_argnums=1)  # one compiled call, not one per op
    if segments is not None:
        k, cell_forward, cell_backward, last_states = segments

        def forward_fn(params, x, *rest, return_sequences):
            *states, mask = rest
            return segments_forward(
                cell_forward, last_states, params, x, states, mask, k, return_sequences
            )

        def backward_fn(params, res, dy):
            return segments_backward(cell_forward, cell_backward, params, res, dy, k)

    def init(key, in_shape):
        time, features = _in_shape(name, in_shape)
        params = init_params(key, features)
        return ((time, hidden) if return_sequences else (hidden,)), params, ()

    def forward(params, state, x, *, key=None, train=False):
        x, states, mask, given = _unpack(name, x, keys, params["W"].shape[0], hidden)
        y, res = forward_fn(params, x, *states, mask, return_sequences=return_sequences)
        return y, (res, given), state

    def backward(params, residuals, dy):
        res, given = residuals
        dparams, dx, *dstates = backward_fn(params, res, dy)
        if given is None:
            return dparams, dx
        grads = {"x": dx, **{k: d for k, d in zip(keys, dstates, strict=True) if k in given}}
        if "mask" in given:
            grads["mask"] = None
        return dparams, grads

    return Layer(init, forward, backward, name)


def _last_h(hs, res):
    return (hs[:, -1],)


def _last_h_c(hs, res):
    return (hs[:, -1], res.c_T)


def _segments(name, k, cell_forward, cell_backward, last_states):
    if k is None:
        return None
    k = positive_int(name, "remat_every", k)
    return k, cell_forward, cell_backward, last_states


def _check_bool(name, what, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name}: {what} must be True or False, got {value!r}")


def RNN(
    features: int,
    *,
    activation=Tanh,
    return_sequences: bool = True,
    w_init="xavier_uniform",
    u_init="orthogonal",
    b_init="zeros",
    remat_every: int | None = None,
) -> Layer:
    """Vanilla (Elman) RNN h_t = f(x_t W + h_{t−1} U + b); `activation` is the Layer
    constructor `jaxbp.Tanh` (default) or `jaxbp.Relu`.

    Input (batch, time, F) or a dict {"x", "mask", "h0"} (see the module docstring); output all
    states (batch, time, features) or, with `return_sequences=False`, the last one.
    `remat_every=k`: BPTT by segments (see `LSTM`).
    """
    _check_activation(f"RNN({features})", activation)
    name = f"RNN({features}, {_RNN_ACTIVATIONS[activation]})"
    features = positive_int(name, "features", features)
    _check_bool(name, "return_sequences", return_sequences)

    def forward(p, x, h0, mask, **kw):
        return rnn_forward(p, x, h0, mask, activation=activation, **kw)

    def backward(p, res, dy):
        return rnn_backward(p, res, dy, activation=activation)

    return _recurrent_layer(
        name,
        features,
        return_sequences,
        lambda key, f: rnn_init(key, f, features, w_init=w_init, u_init=u_init, b_init=b_init),
        forward,
        backward,
        ("h0",),
        _segments(name, remat_every, forward, backward, _last_h),
    )


def LSTM(
    features: int,
    *,
    return_sequences: bool = True,
    forget_bias: float = 1.0,
    w_init="xavier_uniform",
    u_init="orthogonal",
    b_init="zeros",
    remat_every: int | None = None,
) -> Layer:
    """Long short-term memory layer (gates [i, f, g, o]; equations in `lstm_forward`).

    Input (batch, time, F) or a dict {"x", "mask", "h0", "c0"}; output all hidden states
    (batch, time, features) or the last one. The forget-gate bias starts at
    `forget_bias` (default 1.0).

    `remat_every=k`: BPTT with checkpoints (`segments_forward`/`segments_backward`). The
    forward keeps only the states (h, c) entering each segment of k steps; the backward
    reruns each segment's forward from them, last segment first, and backpropagates through
    it. Memory ∝ T/k (stored states) + k (one segment's residuals) instead of T — least at
    k ≈ √T — for one more forward of the sequence. Outputs and gradients equal the plain
    layer's up to rounding: the input projection runs per segment and the parameter gradients
    are summed per segment (other summation orders; float64 differences ~1e-16).
    """
    name = f"LSTM({features})"
    features = positive_int(name, "features", features)
    _check_bool(name, "return_sequences", return_sequences)
    if isinstance(forget_bias, bool) or not isinstance(forget_bias, int | float):
        raise TypeError(f"{name}: forget_bias must be a number, got {forget_bias!r}")
    opts = dict(w_init=w_init, u_init=u_init, b_init=b_init, forget_bias=forget_bias)
    return _recurrent_layer(
        name,
        features,
        return_sequences,
        lambda key, f: lstm_init(key, f, features, **opts),
        lstm_forward,
        lstm_backward,
        ("h0", "c0"),
        _segments(name, remat_every, lstm_forward, lstm_backward, _last_h_c),
    )


def GRU(
    features: int,
    *,
    return_sequences: bool = True,
    w_init="xavier_uniform",
    u_init="orthogonal",
    b_init="zeros",
    remat_every: int | None = None,
) -> Layer:
    """Gated recurrent unit (reset gate after the product, as cuDNN; equations in
    `gru_forward`). Input (batch, time, F) or a dict {"x", "mask", "h0"}; output all states
    (batch, time, features) or the last one. `remat_every=k`: BPTT by segments (see
    `LSTM`)."""
    name = f"GRU({features})"
    features = positive_int(name, "features", features)
    _check_bool(name, "return_sequences", return_sequences)
    return _recurrent_layer(
        name,
        features,
        return_sequences,
        lambda key, f: gru_init(key, f, features, w_init=w_init, u_init=u_init, b_init=b_init),
        gru_forward,
        gru_backward,
        ("h0",),
        _segments(name, remat_every, gru_forward, gru_backward, _last_h),
    )


# ------------------------------------------------------------------------- bidirectional


def _flip(a):
    """Reverse the time axis (axis 1) of a (batch, time, ...) array."""
    return a[:, ::-1]


def _split_directions(name, x):
    """The forward copy's input, the backward copy's (x and mask reversed in time, each
    initial state's second half), and the input dict's keys (None for an array)."""
    if not isinstance(x, dict):
        return x, x if jnp.ndim(x) < 2 else _flip(x), None
    fwd, bwd = {}, {}
    for k, v in x.items():
        if k in ("x", "mask"):
            fwd[k], bwd[k] = v, (v if v is None or jnp.ndim(v) < 2 else _flip(v))
        else:
            if not (isinstance(v, tuple | list) and len(v) == 2):
                raise ValueError(
                    f"{name}: the initial state '{k}' must be a pair (forward, backward), "
                    f"got {type(v).__name__}"
                )
            fwd[k], bwd[k] = v
    return fwd, bwd, {k: None for k in x}


def _join_directions(given, dx_fwd, dx_bwd):
    """The input gradient in the input's form: dx_fwd + flip(dx_bwd) for x, a pair for each
    initial state, None for the mask."""
    if given is None:
        return dx_fwd + _flip(dx_bwd)
    dx = {"x": dx_fwd["x"] + _flip(dx_bwd["x"])}
    for k in given:
        if k == "mask":
            dx[k] = None
        elif k != "x":
            dx[k] = (dx_fwd[k], dx_bwd[k])
    return dx


def bidirectional(layer: Layer) -> Layer:
    """Run `layer` forward in time and a second copy (own parameters) on the time-reversed
    sequence; concatenate their outputs on the feature axis:

        y = [y_fwd, flip(y_bwd(flip(x)))]      (batch, time, 2H), or (batch, 2H) for last states

    Backward: dx = dx_fwd + flip(dx_bwd(flip(dy_bwd))), dy split at H. The input is an array or a
    dict {"x", "mask", "h0", "c0"} where each initial state is a pair (forward, backward) and gets
    a pair of gradients. The mask is reversed with x, so with right-padded sequences the
    backward copy carries its initial state through the padding and starts at the last valid
    step; its last state (return_sequences=False) is the state after reading back to t = 0.
    params = {'forward': ..., 'backward': ...}.
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"bidirectional: expected a Layer, got {type(layer).__name__}")
    name = f"bidirectional({layer.name})"

    def init(key, in_shape):
        k_fwd, k_bwd = jax.random.split(key)
        out_shape, p_fwd, s_fwd = layer.init(k_fwd, in_shape)
        _, p_bwd, s_bwd = layer.init(k_bwd, in_shape)
        out_shape = (*out_shape[:-1], 2 * out_shape[-1])
        return (
            out_shape,
            {"forward": p_fwd, "backward": p_bwd},
            {"forward": s_fwd, "backward": s_bwd},
        )

    def forward(params, state, x, *, key=None, train=False):
        x_fwd, x_bwd, given = _split_directions(name, x)
        k_fwd, k_bwd = (None, None) if key is None else tuple(jax.random.split(key))
        y_fwd, r_fwd, s_fwd = layer.forward(
            params["forward"], state["forward"], x_fwd, key=k_fwd, train=train
        )
        y_bwd, r_bwd, s_bwd = layer.forward(
            params["backward"], state["backward"], x_bwd, key=k_bwd, train=train
        )
        if y_bwd.ndim == 3:  # sequences: align the backward outputs with the input time axis
            y_bwd = _flip(y_bwd)
        y = jnp.concatenate([y_fwd, y_bwd], axis=-1)
        return y, (r_fwd, r_bwd, given), {"forward": s_fwd, "backward": s_bwd}

    def backward(params, residuals, dy):
        r_fwd, r_bwd, given = residuals
        H = dy.shape[-1] // 2
        dy_fwd, dy_bwd = dy[..., :H], dy[..., H:]
        if dy.ndim == 3:
            dy_bwd = _flip(dy_bwd)
        dp_fwd, dx_fwd = layer.backward(params["forward"], r_fwd, dy_fwd)
        dp_bwd, dx_bwd = layer.backward(params["backward"], r_bwd, dy_bwd)
        return {"forward": dp_fwd, "backward": dp_bwd}, _join_directions(given, dx_fwd, dx_bwd)

    def children(params, state, x, *, key=None, train=False):
        x_fwd, x_bwd, _ = _split_directions(name, x)
        k_fwd, k_bwd = (None, None) if key is None else tuple(jax.random.split(key))
        return (
            Child("bidirectional[0]", layer, params["forward"], state["forward"], x_fwd, k_fwd),
            Child("bidirectional[1]", layer, params["backward"], state["backward"], x_bwd, k_bwd),
        )

    return Layer(init, forward, backward, name, children)
