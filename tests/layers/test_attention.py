"""Attention: the op against jax.vjp of the plain formula (every form, mask and length), fully
masked rows, no T×T array in the blocked form, half precision, the PyTorch layout, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import check
from jaxbp.layers import attention


def plain_attention(q, k, v, key_mask, causal):
    """softmax(QKᵀ/√d + mask) V written the obvious way; fully masked rows give 0."""
    T, d = q.shape[-2:]
    S = jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(d)
    allowed = jnp.ones((1, 1, T, T), bool) if key_mask is None else key_mask[:, None, None, :]
    if causal:
        allowed = allowed & jnp.tril(jnp.ones((T, T), bool))
    P = jax.nn.softmax(jnp.where(allowed, S, -1e30), axis=-1) * allowed.any(-1, keepdims=True)
    return jnp.einsum("bhqk,bhkd->bhqd", P, v)


def random_qkv(rng, shape, dtype=jnp.float64):
    return tuple(jnp.asarray(rng.normal(size=shape), dtype) for _ in range(3))


def padding_mask(rng, B, T):
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0] = 0  # the first example: every key is padding
    return jnp.asarray(np.arange(T)[None, :] < lengths[:, None])


COMBOS = [  # (T, block size, causal, key mask): T = 1, odd T, T not a multiple of the block
    (1, None, True, True),
    (1, 2, True, False),
    (7, None, False, True),
    (7, 3, True, True),
    (6, 3, True, True),
    (5, 2, False, True),
]


@pytest.mark.parametrize("T, block, causal, masked", COMBOS)
def test_op_matches_vjp_of_the_plain_formula(T, block, causal, masked):
    rng = np.random.default_rng(T * 7 + (block or 0))
    B, H, d = 3, 2, 4
    with jax.enable_x64(True):
        q, k, v = random_qkv(rng, (B, H, T, d))
        mask = padding_mask(rng, B, T) if masked else None
        opts = dict(key_mask=mask, causal=causal, block_size=block)

        def f(args):
            return plain_attention(args["q"], args["k"], args["v"], mask, causal)

        def manual_vjp(args, dout):
            o, res = attention.attention_forward(args["q"], args["k"], args["v"], **opts)
            dq, dk, dv = attention.attention_backward(res, dout, causal=causal, block_size=block)
            return {"q": dq, "k": dk, "v": dv}

        o, _ = jax.jit(lambda q, k, v: attention.attention_forward(q, k, v, **opts))(q, k, v)
        np.testing.assert_allclose(o, f({"q": q, "k": k, "v": v}), atol=1e-13)
        report = check.check_vjp(
            "attention", f, manual_vjp, {"q": q, "k": k, "v": v}, jit=True, finite_diff=False
        )
        assert report.ok and report.max_rel_err["jax.vjp"] <= 1e-10


@pytest.mark.parametrize("block", [None, 2])
def test_fully_masked_rows_are_zero_with_zero_gradient_and_no_nan(block):
    # left padding + causal: query 0 of example 1 sees only padded keys; example 0 sees none
    rng = np.random.default_rng(0)
    q, k, v = random_qkv(rng, (2, 1, 5, 3), jnp.float32)
    q = 1e3 * q  # large scores: a naive exp would overflow
    mask = jnp.array([[False] * 5, [False, True, True, True, True]])
    o, res = attention.attention_forward(q, k, v, key_mask=mask, causal=True, block_size=block)
    dq, dk, dv = attention.attention_backward(res, jnp.ones_like(o), causal=True, block_size=block)
    for a in (o, res.lse, dq, dk, dv):
        assert bool(jnp.isfinite(a).all())
    np.testing.assert_array_equal(o[0], 0.0)
    np.testing.assert_array_equal(o[1, :, 0], 0.0)
    np.testing.assert_array_equal(dq[0], 0.0)
    np.testing.assert_array_equal(dq[1, :, 0], 0.0)
    np.testing.assert_array_equal(dk[:, :, 0], 0.0)  # padded keys get no gradient
    np.testing.assert_array_equal(dv[0], 0.0)


def test_blocked_form_has_no_T_by_T_array():
    """Every intermediate of the blocked forward+backward has at most one axis of length T."""
    T, b = 96, 16
    q, k, v = random_qkv(np.random.default_rng(1), (1, 2, T, 8), jnp.float32)

    def step(q, k, v):
        o, res = attention.attention_forward(q, k, v, causal=True, block_size=b)
        return attention.attention_backward(res, o, causal=True, block_size=b)

    def shapes(jaxpr):
        """The shape of every value computed in `jaxpr`, inside scans and conds too."""
        for eqn in jaxpr.eqns:
            for var in eqn.outvars:
                yield tuple(getattr(var.aval, "shape", ()))
            for param in eqn.params.values():
                for sub in param if isinstance(param, tuple) else (param,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        yield from shapes(inner)

    blocked = list(shapes(jax.make_jaxpr(step)(q, k, v).jaxpr))
    assert max(s.count(T) for s in blocked) == 1
    assert any(s[-2:] == (b, b) for s in blocked)  # the b×b tiles are there
    whole = jax.make_jaxpr(
        lambda q, k, v: attention.attention_backward(attention.attention_forward(q, k, v)[1], q)
    )(q, k, v)
    assert max(s.count(T) for s in shapes(whole.jaxpr)) == 2  # and the test can fail


def test_the_automatic_form_is_whole_up_to_256_and_blocked_beyond():
    """block_size=None picks the form from T; a block_size ≥ T is the whole-matrix form."""
    assert attention.choose_block_size(256, 32) is None
    assert attention.choose_block_size(257, 32) == attention.AUTO_BLOCK
    assert attention.choose_block_size(300, 32, 300) is None
    assert attention.choose_block_size(300, 32, 64) == 64
    T = 300
    q = jnp.ones((1, 1, T, 2))

    def widest(**opts):  # the most T-long axes of any value in the traced forward+backward
        def step(q):
            o, res = attention.attention_forward(q, q, q, causal=True, **opts)
            return attention.attention_backward(res, o, causal=True, **opts)

        return max(len([n for n in v.aval.shape if n >= T]) for e in
                   jax.make_jaxpr(step)(q).jaxpr.eqns for v in e.outvars)  # fmt: skip

    assert widest() == 1 and widest(block_size=T) == 2


def test_residuals_keep_O_of_T_per_row():
    q, k, v = random_qkv(np.random.default_rng(2), (2, 3, 9, 4), jnp.float32)
    _, res = attention.attention_forward(q, k, v, causal=True)
    assert [tuple(a.shape) for a in jax.tree.leaves(res)] == [(2, 3, 9, 4)] * 4 + [(2, 3, 9)]


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("block", [None, 4])
def test_half_precision_error_within_twice_autodiffs(dtype, block):
    """Manual error vs float64 truth ≤ 2× that of jax.vjp of the plain formula in the same
    dtype (+ 4 ulps of the largest gradient): the sums accumulate in float32."""
    rng = np.random.default_rng(3)
    shape, mask = (2, 2, 10, 8), jnp.arange(10)[None, :] < jnp.array([[10], [6]])
    q64, k64, v64 = random_qkv(rng, shape, np.float64)
    do64 = jnp.asarray(rng.normal(size=shape))
    with jax.enable_x64(True):
        truth = jax.vjp(lambda *a: plain_attention(*a, mask, True), q64, k64, v64)[1](do64)
    q, k, v, do = (a.astype(dtype) for a in (q64, k64, v64, do64))
    o, res = attention.attention_forward(q, k, v, key_mask=mask, causal=True, block_size=block)
    assert o.dtype == dtype and res.lse.dtype == jnp.float32
    manual = attention.attention_backward(res, do, causal=True, block_size=block)
    auto = jax.vjp(lambda *a: plain_attention(*a, mask, True), q, k, v)[1](do)
    ulp = float(jnp.finfo(dtype).eps)
    for m, a, t in zip(manual, auto, truth):
        assert m.dtype == dtype
        t = np.asarray(t)
        err_m = np.abs(np.asarray(m, np.float64) - t).max()
        err_a = np.abs(np.asarray(a, np.float64) - t).max()
        assert err_m <= 2 * err_a + 4 * ulp * np.abs(t).max()


def test_mha_is_pytorch_layout_transposed():
    """W_qkv = in_proj_weight.T, W_o = out_proj.weight.T: compute y as PyTorch does, per head."""
    rng = np.random.default_rng(4)
    B, T, C, H = 2, 5, 6, 3
    d = C // H
    in_w, in_b = rng.normal(size=(3 * C, C)), rng.normal(size=3 * C)
    out_w, out_b = rng.normal(size=(C, C)), rng.normal(size=C)
    x = rng.normal(size=(B, T, C))
    qkv = x @ in_w.T + in_b  # PyTorch: F.linear(x, in_proj_weight, in_proj_bias)
    heads = []
    for h in range(H):
        q, k, v = (qkv[..., i * C + h * d : i * C + (h + 1) * d] for i in range(3))
        s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        p = np.exp(s - s.max(-1, keepdims=True))
        heads.append((p / p.sum(-1, keepdims=True)) @ v)
    expected = np.concatenate(heads, -1) @ out_w.T + out_b
    with jax.enable_x64(True):
        params = {"W_qkv": in_w.T, "b_qkv": in_b, "W_o": out_w.T, "b_o": out_b}
        params = jax.tree.map(jnp.asarray, params)
        y, _, _ = jaxbp.MultiHeadAttention(H).forward(params, (), jnp.asarray(x))
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_blocked_mha_gives_the_same_numbers():
    mha, blocked = (
        jaxbp.MultiHeadAttention(2, causal=True),
        jaxbp.MultiHeadAttention(2, causal=True, block_size=3),
    )
    with jax.enable_x64(True):
        _, params, _ = mha.init(jax.random.key(0), (7, 4))
        x = jax.random.normal(jax.random.key(1), (2, 7, 4))

        def run(layer):
            y, res, _ = layer.forward(params, (), x)
            return y, layer.backward(params, res, jnp.sin(y))

        (y1, g1), (y2, g2) = jax.jit(lambda: run(mha))(), jax.jit(lambda: run(blocked))()
    np.testing.assert_allclose(y1, y2, rtol=1e-12, atol=1e-14)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


def test_positional_embedding_backward_sums_over_the_batch():
    pos = jaxbp.PositionalEmbedding(6)
    _, params, _ = pos.init(jax.random.key(0), (4, 3))
    dy = jax.random.normal(jax.random.key(1), (2, 4, 3))
    y, res, _ = pos.forward(params, (), jnp.zeros((2, 4, 3)))
    dparams, dx = pos.backward(params, res, dy)
    np.testing.assert_array_equal(y[1], params["P"][:4])
    np.testing.assert_allclose(dparams["P"][:4], dy.sum(0), rtol=1e-6)
    np.testing.assert_array_equal(dparams["P"][4:], 0.0)
    np.testing.assert_array_equal(dx, dy)


def test_errors_name_the_layer_and_the_shapes():
    mha = jaxbp.MultiHeadAttention(3)
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(3.*dim 8.*\(5, 8\).*heads = 3"):
        mha.init(jax.random.key(0), (5, 8))
    _, params, _ = jaxbp.MultiHeadAttention(2).init(jax.random.key(0), (5, 8))
    mha = jaxbp.MultiHeadAttention(2)
    x = jnp.ones((2, 5, 8))
    with pytest.raises(
        ValueError, match=r"MultiHeadAttention.*\(batch, time\) = \(2, 5\).*\(2, 4\)"
    ):
        mha.forward(params, (), {"x": x, "mask": jnp.ones((2, 4), bool)})
    with pytest.raises(TypeError, match=r"MultiHeadAttention.*mask.*float"):
        mha.forward(params, (), {"x": x, "mask": jnp.ones((2, 5))})
    with pytest.raises(TypeError, match=r"MultiHeadAttention.*floating-point.*int32.*\(2, 5, 8\)"):
        mha.forward(params, (), jnp.ones((2, 5, 8), jnp.int32))
    with pytest.raises(
        ValueError, match=r"MultiHeadAttention.*\(batch, time >= 1, 8\).*\(2, 5, 6\)"
    ):
        mha.forward(params, (), jnp.ones((2, 5, 6)))
    with pytest.raises(ValueError, match="heads"):
        jaxbp.MultiHeadAttention(0)
    pos = jaxbp.PositionalEmbedding(4)
    with pytest.raises(ValueError, match=r"PositionalEmbedding\(4\).*T = 5.*max_len = 4"):
        pos.init(jax.random.key(0), (5, 3))
    _, p, _ = pos.init(jax.random.key(0), (4, 3))
    with pytest.raises(ValueError, match=r"PositionalEmbedding\(4\).*T = 6.*\(1, 6, 3\)"):
        pos.forward(p, (), jnp.ones((1, 6, 3)))


@pytest.mark.parametrize("block", [None, 2])
def test_half_precision_residual_output_stays_in_float32(block):
    """D = rowsum(dO ⊙ O) is formed from O in the accumulation dtype, as P is: from the
    bfloat16-rounded O it differs from rowsum(P ⊙ dP) by u·Σ|dO ⊙ O|, which dS = P(dP − D)
    carries into dQ and dK. The bfloat16 gradients are the float32 op's, rounded once."""
    rng = np.random.default_rng(0)
    q, k, v, dout = (jnp.asarray(rng.normal(size=(1, 2, 5, 3)), jnp.bfloat16) for _ in range(4))
    o, res = attention.attention_forward(q, k, v, causal=True, block_size=block)
    assert o.dtype == jnp.bfloat16 and res.out.dtype == jnp.float32
    np.testing.assert_array_equal(
        np.asarray(o, np.float32), np.asarray(res.out.astype(jnp.bfloat16), np.float32)
    )
    half = attention.attention_backward(res, dout, causal=True, block_size=block)
    up = [a.astype(jnp.float32) for a in (q, k, v, dout)]
    _, res32 = attention.attention_forward(*up[:3], causal=True, block_size=block)
    wide = attention.attention_backward(res32, up[3], causal=True, block_size=block)
    for h, w in zip(half, wide):
        np.testing.assert_array_equal(
            np.asarray(h, np.float32), np.asarray(w.astype(jnp.bfloat16), np.float32)
        )
