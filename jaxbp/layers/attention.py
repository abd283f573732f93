"""Scaled dot-product attention and multi-head self-attention, with the backward written out;
the blocked form never holds a T×T array.

For one head with queries Q, keys K, values V (rows of width d), the scale s = 1/√d and a mask
A (A_ij = 1 when query i may see key j: key padding and, with `causal`, j ≤ i):

    S = s Q Kᵀ                                  (T, T) scores
    L_i = log Σ_j A_ij exp(S_ij)                (T,)   row log-sum-exp
    P_ij = A_ij exp(S_ij − L_i)                 (T, T) weights; each row sums to 1
    O = P V                                     (T, d)

The forward keeps Q, K, V, O and L only: O(T) numbers per row, never P. Backward, dO = ∂L/∂O:

    P   = A ⊙ exp(S − L)                        recomputed from Q, K and the stored L
                                                (whole-matrix form: by the forward's own softmax
                                                steps, which XLA shares under one jit)
    dV  = Pᵀ dO
    dP  = dO Vᵀ
    D_i = Σ_j P_ij dP_ij = Σ_c dO_ic O_ic       rowsum(dO ⊙ O): no T×T product needed
    dS  = P ⊙ (dP − D)                          the softmax Jacobian, row by row
    dQ  = s dS K,       dK = s dSᵀ Q

(dS_ij = P_ij (dP_ij − Σ_k P_ik dP_ik) is the softmax backward; Σ_k P_ik dP_ik =
Σ_k P_ik Σ_c dO_ic V_kc = Σ_c dO_ic O_ic.)

**Fully masked rows.** A query that may see no key at all (every key padded, or causal with
only padded keys before it) has output O_i = 0 and L_i = 0 by definition; its gradient is 0
and it adds nothing to dK, dV. No NaN appears, in the forward or in the backward.

**Which form.** `block_size=None` (the default) picks it from T (`choose_block_size`): the
whole matrix for T ≤ 256, blocks of 128 beyond; `block_size ≥ T` is the whole-matrix form.
The rule comes from `experiments/bench_attention.py` on XLA:CPU (float32, batch 4, 4 heads of
32): the whole form is the faster up to T = 256, the blocked one from T = 512 on (about twice
as fast there, and its memory grows linearly in T).

**Whole-matrix form.** Under one jit the backward's P is the forward's (shared); the scale s
enters the backward once, on dO (dP = (s dO) Vᵀ, D = rowsum(s dO ⊙ O)), so dS comes out
already scaled and dQ = dS K, dK = dSᵀ Q need no pass of their own; without a key mask no
row can be fully masked and the guards below are not computed.

**Blocked form** (`block_size=b < T`): T is padded to a multiple of b (padded keys are masked out,
padded queries dropped). The forward maps over query blocks and scans over key blocks with the
online softmax, carrying a running max m, sum l and accumulator a per row:

    m' = max(m, rowmax S_ij),   l' = e^{m−m'} l + rowsum e^{S_ij−m'},
    a' = e^{m−m'} a + e^{S_ij−m'} V_j,   and at the end  O_i = a / l,  L_i = m + log l

The backward scans over query blocks i and, inside, over key blocks j: recompute P_ij from
L_i, then dV_j += P_ijᵀ dO_i, dS_ij = P_ij ⊙ (dO_i V_jᵀ − D_i), dQ_i += s dS_ij K_j,
dK_j += s dS_ijᵀ Q_i. Every step holds b×b tiles, so memory is O(T·d + b²) instead of
O(T²). With `causal`, key blocks wholly after a query block are skipped (`lax.cond`).

**Precision.** Scores, log-sum-exps, the D sums and every matmul accumulate in at least
float32 (inputs in bfloat16/float16 are upcast inside), and L is stored in that precision;
outputs and gradients come back in the input dtype.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxbp.layers import attention
    >>> q = k = v = jax.random.normal(jax.random.key(0), (2, 4, 5, 8))  # (B, H, T, d)
    >>> o, res = attention.attention_forward(q, k, v, causal=True)
    >>> dq, dk, dv = attention.attention_backward(res, jnp.ones_like(o), causal=True)
    >>> o2, _ = attention.attention_forward(q, k, v, causal=True, block_size=2)  # T = 5 -> 6
    >>> o.shape, dq.shape, bool(jnp.allclose(o, o2, atol=1e-5)), res.lse.shape
    ((2, 4, 5, 8), (2, 4, 5, 8), True, (2, 4, 5))
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxbp import init as initializers
from jaxbp.layer import Layer, as_shape, check_float_input, positive_int
from jaxbp.layers import dense


class AttentionResiduals(NamedTuple):
    q: jax.Array  # (B, H, T, d)
    k: jax.Array  # (B, H, T, d)
    v: jax.Array  # (B, H, T, d)
    # (B, H, T, d) the output O in the accumulation dtype (float32 for half precision): D =
    # rowsum(dO ⊙ O) from the rounded O would differ from rowsum(P ⊙ dP) by u·Σ|dO ⊙ O|, an
    # error that dS = P ⊙ (dP − D) then carries to dQ and dK (a bfloat16 GPT's embeddings
    # came out ~5x worse than autodiff's); O rounds to the input dtype exactly as the forward
    # returned it (`.astype(q.dtype)`) where the output projection reads it
    out: jax.Array
    lse: jax.Array  # (B, H, T) row log-sum-exp L, in at least float32
    key_mask: jax.Array | None  # (B, T) bool, True = a real key; None = every key is real


def _acc_dtype(dtype):
    """The accumulation dtype: float32 for half precision, the dtype itself otherwise."""
    return jnp.promote_types(dtype, jnp.float32)


def _visible(key_mask, q_pos, k_pos, causal):
    """A for one tile: (B' or 1, 1, len(q_pos), len(k_pos)) bool, or None when every key is
    visible to every query (no key mask, not causal)."""
    allowed = None if key_mask is None else key_mask[:, None, None, :]  # (B', 1, 1, Tk)
    if causal:
        order = (k_pos[None, :] <= q_pos[:, None])[None, None]  # (1, 1, Tq, Tk)
        allowed = order if allowed is None else allowed & order
    return allowed


def _full_mask(key_mask, T, Tp):
    """The (B', Tp) key mask, padded keys (index ≥ T) never visible; None when every key is
    real (no mask given and no padding)."""
    if key_mask is None:
        return None if Tp == T else (jnp.arange(Tp) < T)[None, :]
    return jnp.pad(key_mask.astype(bool), ((0, 0), (0, Tp - T)))


# ------------------------------------------------------------------ whole-matrix form


def _whole_weights(q, k, key_mask, causal):
    """P = A ⊙ softmax(S) and L from the full (T, T) score matrix (accumulation dtype).
    Without a key mask no row is fully masked, so no guard is computed."""
    T, d = q.shape[-2:]
    S = jnp.einsum("bhqd,bhkd->bhqk", q, k) * (1 / math.sqrt(d))  # (B, H, T, T)
    allowed = _visible(key_mask, jnp.arange(T), jnp.arange(T), causal)  # (B', 1, T, T) | None
    if allowed is not None:
        S = jnp.where(allowed, S, -jnp.inf)  # exp of a masked score is exactly 0
    m = jnp.max(S, axis=-1, keepdims=True)  # (B, H, T, 1)
    if key_mask is not None:
        m = jnp.where(jnp.isfinite(m), m, 0)  # a fully masked row: shift by 0
    E = jnp.exp(S - m)  # (B, H, T, T)
    l = E.sum(axis=-1, keepdims=True)  # (B, H, T, 1); 0 on a fully masked row
    if key_mask is not None:
        l = jnp.where(l > 0, l, 1)
    P = E * (1 / l)  # (B, H, T, T); a fully masked row is 0
    return P, (m + jnp.log(l))[..., 0]  # L: (B, H, T), 0 on a fully masked row


def _whole_forward(q, k, v, key_mask, causal):
    """O = P V and L; P itself is dropped (the backward forms it again)."""
    P, lse = _whole_weights(q, k, key_mask, causal)
    return jnp.einsum("bhqk,bhkd->bhqd", P, v), lse  # (B, H, T, d), (B, H, T)


def _whole_backward(q, k, v, out, do, key_mask, causal):
    """P is recomputed by the forward's own steps, not as exp(S − L): under one jit XLA then
    shares them with the forward (common subexpressions) and adds no T×T pass; compiled
    alone, it costs one row max and one row sum more than exp(S − L) would. The scale s
    rides in dS's own pass: dQ = (s dS) K and dK = (s dS)ᵀ Q need no pass of their own."""
    s = 1 / math.sqrt(q.shape[-1])
    P, _ = _whole_weights(q, k, key_mask, causal)  # (B, H, T, T)
    dv = jnp.einsum("bhqk,bhqd->bhkd", P, do)  # Pᵀ dO
    do_s = do * s  # (B, H, T, d): s enters once, on a T×d array
    dP = jnp.einsum("bhqd,bhkd->bhqk", do_s, v)  # s dO Vᵀ
    # D = rowsum(P ⊙ dP) = rowsum(dO ⊙ O) (O = P V): a sum over T keys or over d features,
    # whichever is shorter (T ≤ d: the T×T product is the smaller pass, fused into dS's)
    if q.shape[-2] <= q.shape[-1]:
        D = jnp.sum(P * dP, axis=-1, keepdims=True)  # (B, H, T, 1) s rowsum(P ⊙ dO Vᵀ)
    else:
        D = jnp.sum(do_s * out, axis=-1, keepdims=True)  # (B, H, T, 1) s rowsum(dO ⊙ O)
    dS = P * (dP - D)  # (B, H, T, T) s dS
    dq = jnp.einsum("bhqk,bhkd->bhqd", dS, k)  # s dS K
    dk = jnp.einsum("bhqk,bhqd->bhkd", dS, q)  # s dSᵀ Q
    return dq, dk, dv


# ------------------------------------------------------------------ blocked form


def _blocks(x, b):
    """(B, H, Tp, ...) -> (Tp/b, B, H, b, ...): the block index first, for scans."""
    B, H, Tp = x.shape[:3]
    return jnp.moveaxis(x.reshape(B, H, Tp // b, b, *x.shape[3:]), 2, 0)


def _unblocks(x):
    """Inverse of `_blocks`."""
    n, B, H, b = x.shape[:4]
    return jnp.moveaxis(x, 0, 2).reshape(B, H, n * b, *x.shape[4:])


def _unless_after(causal, i, j, b, skip, compute, carry):
    """`compute(carry)`, or `skip(carry)` when causal and key block j lies wholly after query
    block i (no key in it is visible)."""
    if not causal:
        return compute(carry)
    return lax.cond(j * b > i * b + b - 1, skip, compute, carry)


def _key_blocks(key_mask, b):
    """(B', Tp) -> (nk, B', b), or None when every key is real."""
    if key_mask is None:
        return None
    return jnp.moveaxis(key_mask.reshape(key_mask.shape[0], -1, b), 1, 0)


def _blocked_forward(q, k, v, key_mask, causal, b):
    """Online softmax: map over query blocks, scan over key blocks; b×b tiles only. Q is
    scaled once (s Q) instead of every score tile."""
    q = q * (1 / math.sqrt(q.shape[-1]))
    kb, vb, mb = _blocks(k, b), _blocks(v, b), _key_blocks(key_mask, b)  # (nk, B, H, b, d)
    nk = kb.shape[0]

    def query_block(args):
        i, q_i = args  # q_i: (B, H, b, d)
        q_pos = i * b + jnp.arange(b)

        def key_step(carry, xs):
            j, k_j, v_j, mask_j = xs

            def update(carry):
                m, l, acc = carry  # (B, H, b, 1), (B, H, b, 1), (B, H, b, d)
                allowed = _visible(mask_j, q_pos, j * b + jnp.arange(b), causal)
                S = jnp.einsum("bhqd,bhkd->bhqk", q_i, k_j)  # (B, H, b, b)
                if allowed is not None:
                    S = jnp.where(allowed, S, -jnp.inf)
                m_new = jnp.maximum(m, jnp.max(S, axis=-1, keepdims=True))
                m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0)
                alpha = jnp.exp(m - m_safe)  # rescales what came before; 0 while m = −∞
                E = jnp.exp(S - m_safe)  # (B, H, b, b); 0 where masked
                l = alpha * l + E.sum(axis=-1, keepdims=True)
                acc = alpha * acc + jnp.einsum("bhqk,bhkd->bhqd", E, v_j)
                return m_new, l, acc

            return _unless_after(causal, i, j, b, lambda c: c, update, carry), None

        shape = q_i.shape[:-1] + (1,)
        init = (jnp.full(shape, -jnp.inf, q.dtype), jnp.zeros(shape, q.dtype), jnp.zeros_like(q_i))
        (m, l, acc), _ = lax.scan(key_step, init, (jnp.arange(nk), kb, vb, mb))
        l_safe = jnp.where(l > 0, l, 1)
        lse = jnp.where(l > 0, m, 0) + jnp.log(l_safe)  # 0 on a fully masked row
        return acc / l_safe, lse[..., 0]

    qb = _blocks(q, b)
    out, lse = lax.map(query_block, (jnp.arange(qb.shape[0]), qb))
    return _unblocks(out), _unblocks(lse)


def _blocked_backward(q, k, v, out, lse, do, key_mask, causal, b):
    """Scan over query blocks (carrying dK, dV) and, inside, over key blocks (carrying dQ_i).
    Q is scaled once: S_ij = (s Q_i) K_jᵀ, dK_j = Σ_i dS_ijᵀ (s Q_i) needs no scaling and
    dQ_i = s Σ_j dS_ij K_j is scaled once per query block."""
    s = 1 / math.sqrt(q.shape[-1])
    q = q * s
    D = jnp.sum(do * out, axis=-1)  # (B, H, Tp) rowsum(dO ⊙ O)
    kb, vb, mb = _blocks(k, b), _blocks(v, b), _key_blocks(key_mask, b)  # (nk, B, H, b, d)
    nk = kb.shape[0]

    def query_step(carry, xs):
        dk, dv = carry  # (B, H, Tp, d)
        i, q_i, do_i, lse_i, D_i = xs  # (B, H, b, d), (B, H, b, d), (B, H, b), (B, H, b)
        q_pos = i * b + jnp.arange(b)

        def key_step(dq_i, ys):
            j, k_j, v_j, mask_j = ys

            def tile(dq_i):
                allowed = _visible(mask_j, q_pos, j * b + jnp.arange(b), causal)
                S = jnp.einsum("bhqd,bhkd->bhqk", q_i, k_j)  # (B, H, b, b)
                if allowed is not None:
                    S = jnp.where(allowed, S, -jnp.inf)
                P = jnp.exp(S - lse_i[..., None])  # A ⊙ exp(S − L)
                dv_j = jnp.einsum("bhqk,bhqd->bhkd", P, do_i)  # P_ijᵀ dO_i
                dP = jnp.einsum("bhqd,bhkd->bhqk", do_i, v_j)  # dO_i V_jᵀ
                dS = P * (dP - D_i[..., None])
                dk_j = jnp.einsum("bhqk,bhqd->bhkd", dS, q_i)  # s dS_ijᵀ Q_i
                return dq_i + jnp.einsum("bhqk,bhkd->bhqd", dS, k_j), (dk_j, dv_j)

            def skip(dq_i):
                return dq_i, (jnp.zeros_like(k_j), jnp.zeros_like(v_j))

            return _unless_after(causal, i, j, b, skip, tile, dq_i)

        dq_i, (dk_blocks, dv_blocks) = lax.scan(
            key_step, jnp.zeros_like(q_i), (jnp.arange(nk), kb, vb, mb)
        )
        return (dk + _unblocks(dk_blocks), dv + _unblocks(dv_blocks)), dq_i * s

    qb, dob = _blocks(q, b), _blocks(do, b)
    nq = qb.shape[0]
    xs = (jnp.arange(nq), qb, dob, _blocks(lse, b), _blocks(D, b))
    (dk, dv), dq_blocks = lax.scan(query_step, (jnp.zeros_like(k), jnp.zeros_like(v)), xs)
    return _unblocks(dq_blocks), dk, dv


# ------------------------------------------------------------------ the op

WHOLE_MAX_T = 256  # the automatic form: the whole matrix up to this T, blocked beyond
AUTO_BLOCK = 128  # the automatic block size of the blocked form


def choose_block_size(T: int, head_dim: int, block_size: int | None = None) -> int | None:
    """The form a call runs: None for the whole-matrix form, b for the blocked form.

    `block_size` None picks automatically: the whole matrix for T ≤ 256, blocks of 128 beyond
    (measured on XLA:CPU, float32, 4 × 4 heads of 32 and 64, T = 16 … 2048:
    `experiments/bench_attention.py`; `head_dim` is kept for the rule's signature). A
    `block_size` ≥ T is one block holding the whole matrix: the whole-matrix form.

        >>> choose_block_size(128, 32), choose_block_size(1024, 32), choose_block_size(8, 32, 16)
        (None, 128, None)
    """
    if block_size is None:
        return None if T <= WHOLE_MAX_T else AUTO_BLOCK
    return None if block_size >= T else block_size


def _pad_time(x, Tp):
    T = x.shape[2]
    return x if Tp == T else jnp.pad(x, [(0, 0), (0, 0), (0, Tp - T)] + [(0, 0)] * (x.ndim - 3))


def _prepare(key_mask, b, *arrays):
    """The (B', Tp) key mask (or None) and each (B, H, T, ...) array in the accumulation
    dtype, padded in time to Tp, a multiple of the block b (T itself when b is None)."""
    T = arrays[0].shape[2]
    Tp = T if b is None else -(-T // b) * b
    acc = _acc_dtype(arrays[0].dtype)
    return _full_mask(key_mask, T, Tp), [_pad_time(x.astype(acc), Tp) for x in arrays]


def attention_forward(q, k, v, *, key_mask=None, causal=False, block_size=None):
    """O = softmax(s Q Kᵀ + mask) V over (B, H, T, d); returns (O, AttentionResiduals).

    `key_mask`: (B, T) bool (True = a real key) or None. `block_size`: None picks the form
    from T (see `choose_block_size`); b ≥ T is the whole-matrix form; a smaller b the blocked
    form (any T; padded to a multiple of b inside).
    """
    dtype, (T, d) = q.dtype, q.shape[2:]
    b = choose_block_size(T, d, block_size)
    mask, (q32, k32, v32) = _prepare(key_mask, b, q, k, v)
    if b is None:
        out, lse = _whole_forward(q32, k32, v32, mask, causal)
    else:
        out, lse = _blocked_forward(q32, k32, v32, mask, causal, b)
    out = out[:, :, :T]  # (B, H, T, d) in the accumulation dtype
    return out.astype(dtype), AttentionResiduals(q, k, v, out, lse[:, :, :T], key_mask)


def attention_backward(residuals, dout, *, causal=False, block_size=None):
    """(dQ, dK, dV) from the stored Q, K, V, O, L (see the module docstring for the formulas);
    `block_size` as given to `attention_forward`."""
    q, k, v, out, lse, key_mask = residuals
    dtype, (T, d) = q.dtype, q.shape[2:]
    b = choose_block_size(T, d, block_size)
    mask, (q32, k32, v32, o32, do32, lse) = _prepare(key_mask, b, q, k, v, out, dout, lse)
    if b is None:
        grads = _whole_backward(q32, k32, v32, o32, do32, mask, causal)
    else:
        grads = _blocked_backward(q32, k32, v32, o32, lse, do32, mask, causal, b)
    return tuple(g[:, :, :T].astype(dtype) for g in grads)


def attention(q, k, v, *, key_mask=None, causal=False, block_size=None):
    """The output O alone (no residuals): softmax(s Q Kᵀ + mask) V."""
    return attention_forward(q, k, v, key_mask=key_mask, causal=causal, block_size=block_size)[0]


# ------------------------------------------------------------------ multi-head self-attention


class MultiHeadAttentionResiduals(NamedTuple):
    x: jax.Array  # (B, T, C) the input of the qkv projection
    attention: AttentionResiduals  # per head: q, k, v, O, L (the output projection reads O)
    form: dict | None  # None for an array input; {key: None} for a dict input (no leaves)


def _split_heads(x, heads):
    """(B, T, C) -> (B, H, T, C/H): head h owns columns h·d … (h+1)·d − 1."""
    B, T, C = x.shape
    return x.reshape(B, T, heads, C // heads).transpose(0, 2, 1, 3)


def _merge_heads(x):
    """(B, H, T, d) -> (B, T, H·d), the inverse of `_split_heads`."""
    B, H, T, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * d)


def mha_init(key, features: int, *, w_init="xavier_uniform"):
    """{'W_qkv': (C, 3C), 'b_qkv': (3C,), 'W_o': (C, C), 'b_o': (C,)}; biases start at 0."""
    k_qkv, k_o = jax.random.split(key)
    w_init = initializers.get(w_init)
    C = features
    return {
        "W_qkv": w_init(k_qkv, (C, 3 * C)),
        "b_qkv": jnp.zeros((3 * C,)),
        "W_o": w_init(k_o, (C, C)),
        "b_o": jnp.zeros((C,)),
    }


def mha_forward(params, x, *, heads, key_mask=None, causal=False, block_size=None):
    """y = concat_h attention(x W_q^h, x W_k^h, x W_v^h) W_o + b_o (biases on q, k, v too)."""
    qkv, _ = dense.dense_forward({"W": params["W_qkv"], "b": params["b_qkv"]}, x)  # (B, T, 3C)
    q, k, v = (_split_heads(t, heads) for t in jnp.split(qkv, 3, axis=-1))  # (B, H, T, d)
    o, att = attention_forward(q, k, v, key_mask=key_mask, causal=causal, block_size=block_size)
    y, _ = dense.dense_forward(
        {"W": params["W_o"], "b": params["b_o"]}, _merge_heads(o)
    )  # (B, T, C)
    return y, MultiHeadAttentionResiduals(x, att, None)


def mha_backward(params, residuals, dy, *, causal=False, block_size=None):
    """(dparams, dx): the output projection, the attention op, the qkv projection, in reverse."""
    x, att, _ = residuals
    o = _merge_heads(att.out.astype(att.q.dtype))  # (B, T, C): O as the forward returned it
    dp_o, do = dense.dense_backward(
        {"W": params["W_o"], "b": params["b_o"]}, dense.DenseResiduals(o), dy
    )
    heads = att.q.shape[1]
    dq, dk, dv = attention_backward(
        att, _split_heads(do, heads), causal=causal, block_size=block_size
    )
    dqkv = jnp.concatenate([_merge_heads(g) for g in (dq, dk, dv)], axis=-1)  # (B, T, 3C)
    dp_qkv, dx = dense.dense_backward(
        {"W": params["W_qkv"], "b": params["b_qkv"]}, dense.DenseResiduals(x), dqkv
    )
    dparams = {"W_qkv": dp_qkv["W"], "b_qkv": dp_qkv["b"], "W_o": dp_o["W"], "b_o": dp_o["b"]}
    return dparams, dx


def _mha_unpack(name, inputs, dim):
    """Validate the input; return (x, key_mask or None, the input's form for the backward)."""
    if isinstance(inputs, dict):
        if set(inputs) - {"x", "mask"} or "x" not in inputs:
            raise ValueError(
                f"{name}: a dict input takes the keys ('x', 'mask'), got {sorted(inputs)}"
            )
        x, mask, form = inputs["x"], inputs.get("mask"), {key: None for key in inputs}
    else:
        x, mask, form = inputs, None, None
    check_float_input(name, x)
    shape = tuple(jnp.shape(x))
    if len(shape) != 3 or shape[-1] != dim or shape[1] < 1:
        raise ValueError(
            f"{name}: expected input of shape (batch, time >= 1, {dim}) [rank 3], got {shape}"
        )
    if mask is not None:
        dtype = jnp.result_type(mask)
        if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_)):
            raise TypeError(
                f"{name}: the key mask must be bool or integer (true = a real key), got dtype "
                f"{dtype}; use mask.astype(bool)"
            )
        if tuple(jnp.shape(mask)) != shape[:2]:
            raise ValueError(
                f"{name}: the key mask must have shape (batch, time) = {shape[:2]} for input "
                f"{shape}, got {tuple(jnp.shape(mask))}"
            )
        mask = jnp.asarray(mask).astype(bool)
    return x, mask, form


def MultiHeadAttention(
    heads: int, *, causal: bool = False, block_size: int | None = None, w_init="xavier_uniform"
) -> Layer:
    """Multi-head self-attention on (batch, time, dim), or on a dict {"x", "mask"} with a
    (batch, time) key mask (True = a real key; padded keys are never attended to).

    Parameters: `W_qkv` (dim, 3·dim) with columns [q | k | v], each head's d = dim/heads
    columns contiguous inside each block; `b_qkv` (3·dim,); `W_o` (dim, dim); `b_o` (dim,).
    This is PyTorch's `nn.MultiheadAttention` layout transposed: `W_qkv = in_proj_weight.T`,
    `b_qkv = in_proj_bias`, `W_o = out_proj.weight.T`, `b_o = out_proj.bias`, so weights port
    both ways. `causal`: query i sees keys j ≤ i. `block_size`: None picks the form from T
    (`choose_block_size`: the whole matrix up to T = 256, blocks of 128 beyond); b ≥ T is the
    whole-matrix attention, a smaller b the blocked form that never holds a T×T array (same
    numbers). With a dict
    input, dx is {"x": ∂L/∂x, "mask": None}. A query that sees no key gets attention output 0
    (so y = b_o there) and passes no gradient through the attention.

    Example:
        >>> import jax, jax.numpy as jnp, jaxbp
        >>> mha = jaxbp.MultiHeadAttention(2, causal=True)
        >>> out_shape, params, _ = mha.init(jax.random.key(0), (5, 8))
        >>> x = {"x": jnp.ones((3, 5, 8)), "mask": jnp.arange(5) < jnp.array([[5], [3], [1]])}
        >>> y, res, _ = mha.forward(params, (), x)
        >>> dparams, dx = mha.backward(params, res, jnp.ones_like(y))
        >>> out_shape, params["W_qkv"].shape, dx["x"].shape, dx["mask"]
        ((5, 8), (8, 24), (3, 5, 8), None)
    """
    name = f"MultiHeadAttention({heads}, causal={causal}, block_size={block_size})"
    heads = positive_int(name, "heads", heads)
    if block_size is not None:
        block_size = positive_int(name, "block_size", block_size)
    causal = bool(causal)

    def init_layer(key, in_shape):
        in_shape = as_shape(in_shape)
        if len(in_shape) != 2:
            raise ValueError(f"{name}: needs per-example input (time, dim), got {in_shape}")
        dim = in_shape[-1]
        if dim % heads:
            raise ValueError(
                f"{name}: dim {dim} of input shape {in_shape} is not divisible by heads = {heads}"
            )
        return in_shape, mha_init(key, dim, w_init=w_init), ()

    def forward_layer(params, state, inputs, *, key=None, train=False):
        x, mask, form = _mha_unpack(name, inputs, params["W_o"].shape[0])
        y, res = mha_forward(
            params, x, heads=heads, key_mask=mask, causal=causal, block_size=block_size
        )
        return y, res._replace(form=form), state

    def backward_layer(params, residuals, dy):
        dparams, dx = mha_backward(params, residuals, dy, causal=causal, block_size=block_size)
        if residuals.form is None:
            return dparams, dx
        return dparams, {key: dx if key == "x" else None for key in residuals.form}

    return Layer(init_layer, forward_layer, backward_layer, name)
