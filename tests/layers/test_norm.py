"""BatchNorm and LayerNorm: statistics, running averages, train vs eval, dtypes, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp


def test_batch_norm_train_normalizes_and_updates_running_stats():
    bn = jaxbp.BatchNorm(momentum=0.8)
    _, params, state = bn.init(jax.random.key(0), (4, 3))
    x = 2.0 + 3.0 * jax.random.normal(jax.random.key(1), (5, 4, 3))
    y, _, new_state = bn.forward(params, state, x, train=True)
    np.testing.assert_allclose(y.mean(axis=(0, 1)), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 1)), 1.0, rtol=1e-4)  # eps keeps it just below 1
    np.testing.assert_allclose(new_state["mean"], 0.2 * x.mean(axis=(0, 1)), rtol=1e-12)
    np.testing.assert_allclose(new_state["var"], 0.8 + 0.2 * x.var(axis=(0, 1)), rtol=1e-12)


def test_batch_norm_eval_uses_running_stats():
    bn = jaxbp.BatchNorm(eps=1e-3)
    _, params, _ = bn.init(jax.random.key(0), (2,))
    state = {"mean": jnp.array([1.0, -1.0]), "var": jnp.array([4.0, 0.25])}
    x = jnp.array([[3.0, 0.0]])
    y, res, new_state = bn.forward(params, state, x, train=False)
    np.testing.assert_allclose(y[0], [2.0 / np.sqrt(4.001), 1.0 / np.sqrt(0.251)])
    assert new_state is state
    _, dx = bn.backward(params, res, jnp.ones_like(y))
    np.testing.assert_allclose(dx[0], [1 / np.sqrt(4.001), 1 / np.sqrt(0.251)])


def test_float32_input_stays_float32_with_float64_state():
    bn = jaxbp.BatchNorm()
    _, params, state = bn.init(jax.random.key(0), (3,))  # float64 under the test config
    params = jax.tree.map(lambda p: p.astype(jnp.float32), params)
    x = jnp.ones((4, 3), jnp.float32)
    for train in (True, False):
        y, _, new_state = bn.forward(params, state, x, train=train)
        assert y.dtype == jnp.float32
        assert new_state["mean"].dtype == state["mean"].dtype


def test_layer_norm_normalizes_last_axis():
    ln = jaxbp.LayerNorm()
    _, params, _ = ln.init(jax.random.key(0), (3, 6))
    x = 5 + jax.random.normal(jax.random.key(1), (2, 3, 6))
    y, _, _ = ln.forward(params, (), x)
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="momentum"):
        jaxbp.BatchNorm(momentum=1.0)
    with pytest.raises(ValueError, match="eps"):
        jaxbp.LayerNorm(eps=0.0)
    bn = jaxbp.BatchNorm()
    _, params, state = bn.init(jax.random.key(0), (3,))
    with pytest.raises(
        ValueError, match=r"BatchNorm.*expected input \(batch, \.\.\., 3\), got \(2, 4\)"
    ):
        bn.forward(params, state, jnp.ones((2, 4)))
    ln = jaxbp.LayerNorm()
    _, params, _ = ln.init(jax.random.key(0), (3,))
    with pytest.raises(ValueError, match=r"LayerNorm.*got \(2, 5\)"):
        ln.forward(params, (), jnp.ones((2, 5)))


def test_layer_norm_half_precision_dx_is_the_float32_chain_rule_rounded_once():
    """dx = (1/σ)(g − mean g − x̂ mean(g x̂)) cancels (Σ dx = 0): in bfloat16 it is computed in
    float32 from the stored x̂, 1/σ and rounded once (op by op in bfloat16, a GPT's embedding
    gradients came out ~5x less accurate than autodiff's, failing `make demo`'s check table)."""
    from jaxbp.layers import norm

    rng = np.random.default_rng(0)
    x, dy = (jnp.asarray(rng.normal(size=(8, 4)), jnp.bfloat16) for _ in range(2))
    params = {
        "scale": jnp.asarray(1 + rng.normal(size=4), jnp.bfloat16),
        "bias": jnp.zeros(4, jnp.bfloat16),
    }
    _, res = norm.layer_norm_forward(params, x)
    _, dx = norm.layer_norm_backward(params, res, dy)
    wide = jax.tree.map(lambda a: a.astype(jnp.float32), (params, res, dy))
    _, dx32 = norm.layer_norm_backward(*wide)
    assert dx.dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(dx, np.float32), np.asarray(dx32.astype(jnp.bfloat16), np.float32)
    )
