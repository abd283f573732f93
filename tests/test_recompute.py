"""remat, checkpointed chains and their schedules: bit for bit against the plain layers, the
cost formulas against an exhaustive recursion, and the memory saving in the compiled program."""

import math
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import check, recompute
from jaxbp.cases import memory as cases


def _run(layer, params, state, x, dy, train=False, key=None):
    y, res, new_state = layer.forward(params, state, x, key=key, train=train)
    return y, new_state, layer.backward(params, res, dy)


def _bitwise(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(bool((u == v).all()) for u, v in zip(la, lb))


def _ulps(a, b):
    """Equal to rounding: XLA compiles the recomputation (a conditional's branch) on its own,
    and may fuse it differently from the plain program, or from op-by-op execution."""
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-14, atol=1e-15)
    return True


def _blocks(n, width=3, dropout=True):
    layers = [jaxbp.residual(jaxbp.serial(jaxbp.Dense(width), jaxbp.Tanh())) for _ in range(n)]
    return [*layers, jaxbp.Dropout(0.3)] if dropout else layers


SCHEDULES = [
    recompute.store_all(),
    recompute.every(1),
    recompute.every(3),
    recompute.sqrt_n(),
    recompute.min_peak(),
    recompute.revolve(1),
    recompute.revolve(3),
]


@pytest.mark.parametrize("jit", [pytest.param(False, marks=pytest.mark.slow), True])
def test_checkpointed_is_serial_bit_for_bit(jit):
    """Every schedule, with dropout in train mode: same output, state and gradients as serial
    — bit for bit in one compiled program; eager, serial runs op by op while a recomputation
    runs compiled, so there they agree to rounding."""
    same = _bitwise if jit else _ulps
    layers = _blocks(6)
    plain = jaxbp.serial(*layers)
    _, params, state = plain.init(jax.random.key(0), (3,))
    x = jax.random.normal(jax.random.key(1), (4, 3), jnp.float64)
    dy = jax.random.normal(jax.random.key(2), (4, 3), jnp.float64)
    key = jax.random.key(3)
    run = jax.jit(_run, static_argnums=(0, 5)) if jit else _run
    expected = run(plain, params, state, x, dy, True, key)
    for schedule in SCHEDULES:
        for isolation in recompute.ISOLATIONS:
            chain = jaxbp.remat_sequence(*layers, schedule=schedule, isolation=isolation)
            assert same(run(chain, params, state, x, dy, True, key), expected), schedule.name


@pytest.mark.parametrize("jit", [False, True])
def test_remat_is_the_layer_bit_for_bit(jit):
    """Dropout draws the same mask on recomputation: bit for bit under jit. With batch norm
    and Gelu, XLA fuses the recomputed statistics and erf differently: equal to rounding."""
    run = jax.jit(_run, static_argnums=(0, 5)) if jit else _run
    dropout = jaxbp.serial(jaxbp.Dense(4), jaxbp.Dropout(0.5), jaxbp.Tanh())
    norm = jaxbp.serial(
        jaxbp.Dense(4, bias=False), jaxbp.BatchNorm(), jaxbp.Dropout(0.5), jaxbp.Gelu()
    )
    x = jax.random.normal(jax.random.key(1), (5, 2, 3), jnp.float64)
    dy = jax.random.normal(jax.random.key(2), (5, 2, 4), jnp.float64)
    for inner, same in ((dropout, _bitwise if jit else _ulps), (norm, _ulps)):
        _, params, state = inner.init(jax.random.key(0), (2, 3))
        for train in (True, False):
            expected = run(inner, params, state, x, dy, train, jax.random.key(4))
            got = run(jaxbp.remat(inner), params, state, x, dy, train, jax.random.key(4))
            assert same(got, expected)
            barrier = jaxbp.remat(inner, isolation="barrier")
            assert same(run(barrier, params, state, x, dy, train, jax.random.key(4)), expected)


@pytest.mark.slow  # extra coverage beyond the registry's, outside the CI time budget
def test_other_cases_pass_the_gradient_check():
    """The builders left out of the registry for its time budget."""
    rng = np.random.default_rng(0)
    for layer, in_shape, *opts in (
        cases._remat_dense(rng),
        cases._chain_barrier(rng),
        cases._chain("sqrt_n")(rng),
        cases._segmented("RNN")(rng),
    ):
        opts = opts[0] if opts else {}
        x = opts["x"](rng, 2) if "x" in opts else None
        report = check.check_layer(layer, in_shape, batch=2, x=x, train=opts.get("train", False))
        assert report.ok and report.results


@pytest.mark.slow  # the registry checks the segmented cells against jax.vjp
@pytest.mark.parametrize("sequences", [True, False])
def test_recurrent_segments_match_the_plain_layer(sequences):
    """T = 7 in segments of 3 (a tail of 1) and T = 2 < k: outputs and gradients to rounding."""
    for make, T, k in ((jaxbp.LSTM, 7, 3), (jaxbp.LSTM, 2, 5), (jaxbp.GRU, 7, 3)):
        if True:
            plain = make(3, return_sequences=sequences)
            seg = make(3, return_sequences=sequences, remat_every=k)
            _, params, state = plain.init(jax.random.key(0), (T, 2))
            x = jax.random.normal(jax.random.key(1), (2, T, 2), jnp.float64)
            y0, res0, _ = plain.forward(params, state, x)
            y1, res1, _ = seg.forward(params, state, x)
            dy = jax.random.normal(jax.random.key(2), y0.shape, jnp.float64)
            g0, g1 = plain.backward(params, res0, dy), seg.backward(params, res1, dy)
            np.testing.assert_allclose(y1, y0, rtol=1e-13, atol=1e-15)
            for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@cache
def _exhaustive(m, c):
    """t(m, c) by trying every first stretch: the definition the closed form must match."""
    if m == 1:
        return 0
    if c == 1:
        return m * (m - 1) // 2
    return min(k + _exhaustive(m - k, c - 1) + _exhaustive(k, c) for k in range(1, m))


def test_revolve_formula_and_plans_are_optimal():
    for c in range(1, 6):
        for n in range(1, 40):
            t = recompute.revolve_cost(n, c)
            assert t == _exhaustive(n, c), (n, c)
            cost = recompute.revolve(c).cost(n)
            assert cost.extra_forward == t
            assert cost.taped == 1 and cost.checkpoints <= c


def test_segment_schedule_formulas():
    for n in range(1, 60):
        for k in (1, 2, 5, 8):
            cost = recompute.every(k).cost(n)
            last = n - k * ((n - 1) // k)
            assert cost == (n - last, math.ceil(n / k) - 1, min(k, n))
        k = math.isqrt(n - 1) + 1
        assert recompute.sqrt_n().cost(n) == recompute.every(k).cost(n)
    assert recompute.store_all().cost(10) == (0, 0, 10)


def _all_bounds(n):
    """Every segmenting of n layers: 0 < b_1 < … < n from each subset of 1 … n − 1."""
    for mask in range(2 ** (n - 1)):
        yield [0, *(i for i in range(1, n) if mask >> (i - 1) & 1), n]


def test_min_peak_is_the_least_peak_segmenting():
    """Exhaustive over all segmentings for n ≤ 9 (equal and unequal sizes), and ≤ every
    every(k) up to n = 200; it recomputes at most n − 1 layers (jax.checkpoint on every
    segment: n); its executor's memory formula is segments_peak."""
    rng = np.random.default_rng(0)
    for n in range(1, 10):
        for a, r in [
            ((1,) * n, (2,) * n),
            (tuple(rng.integers(1, 9, n)), tuple(rng.integers(1, 9, n))),
        ]:
            got = recompute.segments_peak(recompute.min_peak_bounds(a, r), a, r)
            assert got == min(recompute.segments_peak(b, a, r) for b in _all_bounds(n)), (a, r)
    for n in (16, 64, 200):
        a, r = (3,) * n, (7,) * n
        bounds = recompute.min_peak_bounds(a, r)
        peak = recompute.segments_peak(bounds, a, r)
        assert all(
            peak <= recompute.segments_peak([*range(0, n, k), n], a, r) for k in range(1, n + 1)
        )
        plan = recompute.min_peak().plan_for(a, r)
        assert recompute.plan_memory(plan, 3, 7) == peak
        assert recompute.plan_cost(plan).extra_forward == n - (bounds[-1] - bounds[-2]) <= n - 1
    # equal sizes a = 1, r = 2 at depth 64: 16 against √n segments' 23 (shrinking segments)
    assert recompute.plan_memory(recompute.min_peak().plan_for((1,) * 64, (2,) * 64), 1, 2) == 16


def test_min_peak_measures_the_layers():
    """The chain plans from its layers' shapes: a residual Dense+Tanh block stores its input
    (Dense) and its output (Tanh), r = 2a, so its plan is the one for those sizes."""
    n, width, batch = 12, 8, 5
    layers = _blocks(n, width, dropout=False)
    chain = jaxbp.remat_sequence(*layers)  # the default schedule: min_peak()
    _, params, state = chain.init(jax.random.key(0), (width,))
    x = jnp.ones((batch, width), jnp.float32)
    _, res, _ = chain.forward(params, state, x)
    act = batch * width * 4
    assert res.plan == recompute.min_peak().plan_for((act,) * n, (2 * act,) * n)
    assert res.plan != recompute.sqrt_n().plan(n)


def _temp_bytes(model, params, state, x):
    def step(params, x):
        y, res, _ = model.forward(params, state, x)
        return model.backward(params, res, y)[0]

    return jax.jit(step).lower(params, x).compile().memory_analysis().temp_size_in_bytes


def test_the_compiled_program_keeps_less():
    """16 tanh layers, float32: XLA keeps the √n schedule's saving (cond isolation) and the
    revolve schedule's, and a barrier alone loses it on CPU."""
    layers = [jaxbp.serial(jaxbp.Dense(64), jaxbp.Tanh()) for _ in range(16)]
    plain = jaxbp.serial(*layers)
    _, params, state = plain.init(jax.random.key(0), (64,))
    x = jnp.ones((512, 64), jnp.float32)
    act = 512 * 64 * 4
    store = _temp_bytes(plain, params, state, x)
    assert store >= 16 * act
    sqrt = _temp_bytes(jaxbp.remat_sequence(*layers), params, state, x)
    assert sqrt <= 0.6 * store
    rev = _temp_bytes(
        jaxbp.remat_sequence(*layers, schedule=recompute.revolve(3)), params, state, x
    )
    assert rev <= 0.4 * store
    if jax.default_backend() == "cpu":
        barrier = jaxbp.remat_sequence(*layers, isolation="barrier")
        assert _temp_bytes(barrier, params, state, x) >= 0.9 * store  # the XLA:CPU behaviour


def test_errors():
    with pytest.raises(TypeError, match="remat_sequence"):
        jaxbp.remat_sequence(jaxbp.Dense)
    with pytest.raises(ValueError, match="at least one"):
        jaxbp.remat_sequence()
    with pytest.raises(TypeError, match="Schedule"):
        jaxbp.remat_sequence(jaxbp.Tanh(), schedule="sqrt")
    with pytest.raises(ValueError, match="isolation"):
        jaxbp.remat(jaxbp.Tanh(), isolation="magic")
    with pytest.raises(ValueError, match="positive"):
        recompute.every(0)
    with pytest.raises(ValueError, match="remat_every"):
        jaxbp.LSTM(4, remat_every=0)
    with pytest.raises(TypeError, match="remat"):
        jaxbp.remat("Dense")
