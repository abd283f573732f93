"""Recurrent layers: equations, masks, initial states, bidirectional, T = 1, and bad input.

The registry (jaxbp/cases/recurrent.py) checks every cell's backward against jax.vjp and finite
differences over random shapes; these tests pin down the forward equations and the semantics
the registry cannot see.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import check

B, T, F, H = 2, 4, 3, 5


def _x(seed=0, shape=(B, T, F)):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape))


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


# --------------------------------------------------------------- forward equations (NumPy)


def test_rnn_forward_matches_the_equations():
    layer = jaxbp.RNN(H)
    _, p, s = layer.init(jax.random.key(0), (T, F))
    x = _x()
    y, _, _ = layer.forward(p, s, x)
    W, U, b = (np.asarray(p[k]) for k in "WUb")
    h = np.zeros((B, H))
    for t in range(T):
        h = np.tanh(np.asarray(x[:, t]) @ W + h @ U + b)
        np.testing.assert_allclose(y[:, t], h, rtol=1e-12)


def test_lstm_forward_matches_the_equations():
    layer = jaxbp.LSTM(H)
    _, p, s = layer.init(jax.random.key(1), (T, F))
    x = _x(1)
    y, _, _ = layer.forward(p, s, x)
    W, U, b = (np.asarray(p[k]) for k in "WUb")
    h, c = np.zeros((B, H)), np.zeros((B, H))
    for t in range(T):
        z = np.asarray(x[:, t]) @ W + h @ U + b
        i, f, g, o = (
            _sigmoid(z[:, :H]),
            _sigmoid(z[:, H : 2 * H]),
            np.tanh(z[:, 2 * H : 3 * H]),
            _sigmoid(z[:, 3 * H :]),
        )
        c = f * c + i * g
        h = o * np.tanh(c)
        np.testing.assert_allclose(y[:, t], h, rtol=1e-12)


def test_gru_forward_matches_the_equations():
    layer = jaxbp.GRU(H)
    _, p, s = layer.init(jax.random.key(2), (T, F))
    p = {**p, "b_hn": jnp.linspace(-1, 1, H), "b": jnp.linspace(-0.5, 0.5, 3 * H)}
    x = _x(2)
    y, _, _ = layer.forward(p, s, x)
    W, U, b, bhn = (np.asarray(p[k]) for k in ("W", "U", "b", "b_hn"))
    h = np.zeros((B, H))
    for t in range(T):
        a, sh = np.asarray(x[:, t]) @ W + b, h @ U
        r = _sigmoid(a[:, :H] + sh[:, :H])
        u = _sigmoid(a[:, H : 2 * H] + sh[:, H : 2 * H])
        n = np.tanh(a[:, 2 * H :] + r * (sh[:, 2 * H :] + bhn))
        h = (1 - u) * n + u * h
        np.testing.assert_allclose(y[:, t], h, rtol=1e-12)


def test_lstm_forget_bias_init():
    _, p, _ = jaxbp.LSTM(H, forget_bias=1.0).init(jax.random.key(0), (T, F))
    np.testing.assert_array_equal(p["b"][H : 2 * H], 1.0)
    np.testing.assert_array_equal(p["b"][:H], 0.0)
    _, p, _ = jaxbp.LSTM(H, forget_bias=0.0).init(jax.random.key(0), (T, F))
    np.testing.assert_array_equal(p["b"], 0.0)


@pytest.mark.parametrize("make", [jaxbp.RNN, jaxbp.LSTM, jaxbp.GRU])
def test_last_state_is_the_last_output(make):
    seq, last = make(H), make(H, return_sequences=False)
    out_shape, p, s = seq.init(jax.random.key(0), (T, F))
    assert out_shape == (T, H) and last.init(jax.random.key(0), (T, F))[0] == (H,)
    x = _x()
    np.testing.assert_allclose(seq.forward(p, s, x)[0][:, -1], last.forward(p, s, x)[0])


# ---------------------------------------------------------------------------- masks


@pytest.mark.parametrize("make", [jaxbp.RNN, jaxbp.LSTM, jaxbp.GRU])
def test_padding_carries_the_state_and_gets_no_gradient(make):
    """A right-padded sequence ends in the same state as the unpadded one; padded steps output
    that carried state and their inputs get zero gradient."""
    layer = make(H, return_sequences=True)
    _, p, s = layer.init(jax.random.key(3), (T, F))
    x = _x(3)
    lengths = [2, 4]
    mask = jnp.arange(T)[None, :] < jnp.array(lengths)[:, None]
    y, res, _ = layer.forward(p, s, {"x": x, "mask": mask})
    for b, n in enumerate(lengths):
        y_short, _, _ = layer.forward(p, s, x[b : b + 1, :n])
        np.testing.assert_allclose(y[b, :n], y_short[0], rtol=1e-12)
        np.testing.assert_allclose(y[b, n:], jnp.broadcast_to(y_short[0, -1], (T - n, H)))
    _, dx = layer.backward(p, res, jnp.ones_like(y))
    assert dx["mask"] is None
    np.testing.assert_array_equal(dx["x"][0, 2:], 0.0)
    assert np.all(np.abs(dx["x"][0, :2]) > 0)


def test_bidirectional_with_padding_reads_each_sequence_backwards():
    layer = jaxbp.bidirectional(jaxbp.GRU(H, return_sequences=False))
    _, p, s = layer.init(jax.random.key(4), (T, F))
    x = _x(4)
    mask = jnp.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    y, _, _ = layer.forward(p, s, {"x": x, "mask": mask})
    assert y.shape == (B, 2 * H)
    y_short, _, _ = layer.forward(p, s, x[:1, :2])
    np.testing.assert_allclose(y[0], y_short[0], rtol=1e-12)


# ------------------------------------------------------------------- gradient checks


@pytest.mark.parametrize(
    "layer",
    [
        jaxbp.RNN(3),
        jaxbp.RNN(3, activation=jaxbp.Relu, return_sequences=False),
        jaxbp.LSTM(3, return_sequences=False),
        jaxbp.GRU(3),
        jaxbp.bidirectional(jaxbp.LSTM(2)),
        jaxbp.bidirectional(jaxbp.RNN(2, return_sequences=False)),
    ],
    ids=lambda layer: layer.name,
)
def test_single_step_sequences(layer):
    """T = 1: the scan has one step; the backward must still be exact."""
    check.check_layer(layer, (1, 2), batch=2, jit=True)


def test_initial_state_gradient_of_a_bidirectional_lstm():
    layer = jaxbp.bidirectional(jaxbp.LSTM(3, return_sequences=False))
    rng = np.random.default_rng(0)
    pair = lambda: (rng.normal(size=(2, 3)), rng.normal(size=(2, 3)))
    x = {"x": rng.normal(size=(2, 3, 2)), "h0": pair(), "c0": pair()}
    report = check.check_layer(layer, (3, 2), x=x, jit=True)
    assert {r.leaf for r in report.results} >= {"x['h0'][0]", "x['h0'][1]", "x['c0'][1]"}


def test_relu_rnn_has_finite_gradients_through_dead_units():
    layer = jaxbp.RNN(4, activation=jaxbp.Relu)
    _, p, s = layer.init(jax.random.key(0), (6, 2))
    y, res, _ = layer.forward(p, s, -10 * jnp.ones((2, 6, 2)))
    dp, dx = layer.backward(p, res, jnp.ones_like(y))
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves((dp, dx)))


# ----------------------------------------------------------------------- bad input


@pytest.mark.parametrize("make", [jaxbp.RNN, jaxbp.LSTM, jaxbp.GRU])
def test_bad_input_errors(make):
    layer = make(H)
    name = layer.name
    _, p, s = layer.init(jax.random.key(0), (T, F))
    with pytest.raises(ValueError, match=rf"{name.split('(')[0]}.*\(batch, time >= 1, 3\).*rank 2"):
        layer.forward(p, s, jnp.ones((B, F)))  # wrong rank
    with pytest.raises(ValueError, match=r"\(batch, time >= 1, 3\).*\(2, 4, 7\)"):
        layer.forward(p, s, jnp.ones((B, T, 7)))  # feature mismatch
    with pytest.raises(ValueError, match=r"mask of shape \(batch, time\) = \(2, 4\), got \(2, 3\)"):
        layer.forward(p, s, {"x": jnp.ones((B, T, F)), "mask": jnp.ones((B, 3), bool)})
    with pytest.raises(TypeError, match="mask must be bool or integer"):
        layer.forward(p, s, {"x": jnp.ones((B, T, F)), "mask": jnp.ones((B, T))})
    with pytest.raises(
        ValueError, match=r"'h0' of shape \(batch, hidden\) = \(2, 5\), got \(2, 4\)"
    ):
        layer.forward(p, s, {"x": jnp.ones((B, T, F)), "h0": jnp.ones((B, 4))})
    with pytest.raises(ValueError, match="dict input takes the keys"):
        layer.forward(p, s, {"x": jnp.ones((B, T, F)), "lengths": jnp.ones(B)})
    with pytest.raises(TypeError, match="floating-point"):
        layer.forward(p, s, jnp.ones((B, T, F), jnp.int32))
    with pytest.raises(ValueError, match=r"\(time, features\)"):
        layer.init(jax.random.key(0), (F,))


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="features"):
        jaxbp.LSTM(0)
    with pytest.raises(ValueError, match="activation"):
        jaxbp.RNN(4, activation=jaxbp.Sigmoid)
    with pytest.raises(ValueError, match="Layer constructor jaxbp.Tanh"):
        old_spelling = "tanh"
        jaxbp.RNN(4, activation=old_spelling)
    with pytest.raises(TypeError, match="return_sequences"):
        jaxbp.GRU(4, return_sequences="yes")
    with pytest.raises(TypeError, match="forget_bias"):
        jaxbp.LSTM(4, forget_bias="1")
    with pytest.raises(TypeError, match="bidirectional: expected a Layer"):
        jaxbp.bidirectional(jaxbp.LSTM)


def test_bidirectional_initial_state_must_be_a_pair():
    layer = jaxbp.bidirectional(jaxbp.GRU(H))
    _, p, s = layer.init(jax.random.key(0), (T, F))
    with pytest.raises(ValueError, match=r"'h0' must be a pair \(forward, backward\)"):
        layer.forward(p, s, {"x": jnp.ones((B, T, F)), "h0": jnp.ones((B, H))})


@pytest.mark.parametrize(
    "make, dtype",
    [
        (lambda: jaxbp.RNN(6), jnp.bfloat16),
        (lambda: jaxbp.GRU(6), jnp.float16),
        (lambda: jaxbp.LSTM(6), jnp.bfloat16),
    ],
)
def test_half_precision_bptt_over_a_long_sequence(make, dtype):
    """256 steps in half precision, the state gradients carried in float32: the manual
    backward stays within the half-precision rule (≤ 2 × jax.vjp's error + 4 ulp of the
    float64 truth; measured: well under jax.vjp's, which sums over time in half)."""
    report = check.check_layer(make(), (256, 3), dtype=dtype, jit=True, finite_diff=False)
    assert report.ok, str(report)
