"""jaxbp.precision and mixed-precision training: float32 accumulation, dynamic loss scaling,
float32 master weights, skipped overflow steps, and resume with the loss-scale state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxbp
from jaxbp import checkpoint, data, losses, optim, precision, train

MODEL = jaxbp.MLP([16, 10])
LOSS = losses.softmax_cross_entropy()
ADAM = optim.adam(1e-2)
SGD = optim.sgd(0.1)


@pytest.fixture(scope="module")
def digits():
    d = data.digits(dtype=np.float32)
    return (d["x_train"][:256], d["y_train"][:256]), (d["x_test"][:128], d["y_test"][:128])


def test_acc_sum_accumulates_half_precision_in_float32():
    x = jnp.full((4096,), 0.1, jnp.bfloat16)
    exact = 4096 * float(x[0])
    naive = float(jax.lax.reduce(x, jnp.bfloat16(0), jax.lax.add, (0,)))  # bfloat16 adds
    accurate = float(precision.acc_sum(x))
    assert precision.acc_sum(x).dtype == jnp.bfloat16
    assert abs(accurate - exact) <= exact * 2**-8 < abs(naive - exact)
    assert float(precision.acc_mean(x)) == pytest.approx(float(x[0]), rel=2**-8)
    y = jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3)
    np.testing.assert_array_equal(precision.acc_sum(y, axis=0), y.sum(0))  # plain sum


def test_dynamic_loss_scale_halves_skips_and_grows():
    scaler = precision.dynamic_loss_scale(init_scale=8.0, growth_interval=3, min_scale=2.0)
    s = scaler.init()
    s = scaler.update(s, jnp.array(False))
    assert (float(s.scale), int(s.good_steps), int(s.skipped)) == (4.0, 0, 1)
    for _ in range(2):
        s = scaler.update(s, jnp.array(True))
    assert (float(s.scale), int(s.good_steps)) == (4.0, 2)
    s = scaler.update(s, jnp.array(True))  # the 3rd clean step in a row: grow
    assert (float(s.scale), int(s.good_steps), int(s.skipped)) == (8.0, 0, 1)
    for _ in range(3):
        s = scaler.update(s, jnp.array(False))
    assert float(s.scale) == 2.0 and int(s.skipped) == 4  # never below min_scale
    with pytest.raises(ValueError, match="factor > 1"):
        precision.dynamic_loss_scale(factor=1.0)
    with pytest.raises(TypeError, match="loss_scale must be"):
        train.resolve_loss_scale(jnp.float16, "yes")
    assert train.resolve_loss_scale(jnp.bfloat16) is None
    assert isinstance(train.resolve_loss_scale(jnp.float16), precision.DynamicLossScale)
    assert train.resolve_loss_scale(jnp.float16, False) is None


def _state_and_batch(digits, scaler=None, optimizer=ADAM):
    (x, y), _ = digits
    state = train.init_train_state(
        MODEL, optimizer, jax.random.key(0), (64,), dtype=jnp.float32, loss_scale=scaler
    )
    return state, jnp.asarray(x[:32]), jnp.asarray(y[:32])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_mixed_step_keeps_float32_master_weights_close_to_float32(digits, dtype):
    state, x, y = _state_and_batch(digits, train.resolve_loss_scale(dtype), SGD)
    ref, ref_loss = train.make_train_step(MODEL, LOSS, SGD, donate=False)(
        state._replace(loss_scale=()), x, y
    )
    step = train.make_train_step(MODEL, LOSS, SGD, compute_dtype=dtype, donate=False)
    new, loss = step(state, x, y)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(new.params))
    assert loss.dtype == jnp.float32 and abs(float(loss) - float(ref_loss)) < 0.05
    u = float(jnp.finfo(dtype).eps)
    for a, b, p in zip(*(jax.tree.leaves(t.params) for t in (new, ref, state)), strict=True):
        update, ref_update = np.asarray(a - p), np.asarray(b - p)
        err = np.abs(update - ref_update).max() / np.abs(ref_update).max()
        assert err < 8 * u, err  # the half-precision gradient, a few ulps from float32's


def test_overflowing_float16_step_is_skipped_and_the_scale_halved(digits):
    scaler = precision.dynamic_loss_scale(init_scale=2.0**24)  # S/n overflows float16
    state, x, y = _state_and_batch(digits, scaler)
    step = train.make_train_step(
        MODEL, LOSS, ADAM, compute_dtype=jnp.float16, loss_scale=scaler, donate=False
    )
    new, loss = step(state, x, y)
    assert bool(new.health.ok) and np.isfinite(float(loss))
    assert int(new.step) == 1 and int(new.loss_scale.skipped) == 1
    assert float(new.loss_scale.scale) == 2.0**23
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(a, b)  # not applied
    for _ in range(8):  # halves until S/n fits: then steps apply again
        new, _ = step(new, x, y)
    assert float(new.loss_scale.scale) <= 2.0**20 and int(new.loss_scale.skipped) < 9
    assert not np.array_equal(jax.tree.leaves(new.params)[0], jax.tree.leaves(state.params)[0])


def _fit(digits, *, compute_dtype=jnp.float16, loss_scale=None, checkpoint_dir=None, **kw):
    train_data, eval_data = digits
    args = dict(
        key=jax.random.key(0),
        steps=40,
        batch_size=32,
        eval_data=eval_data,
        schedule=train.Schedule(log_every=10, checkpoint_every=10 if checkpoint_dir else None),
        checkpoint=train.CheckpointOptions(checkpoint_dir),
        precision=train.Precision(compute_dtype=compute_dtype, loss_scale=loss_scale),
        progress=False,
    )
    args.update(kw)
    return train.fit(MODEL, LOSS, ADAM, train_data, **args)


def test_float16_fit_learns_counts_skips_and_resumes_bitwise(digits, tmp_path):
    scaler = precision.dynamic_loss_scale(init_scale=2.0**24, growth_interval=8)
    full = _fit(digits, loss_scale=scaler)
    records = full.history["train"]
    assert records[0]["skipped"] >= 1  # 2²⁴/n overflows float16 at first
    assert {"loss_scale", "skipped"} <= set(records[-1])
    assert records[-1]["loss"] < records[0]["loss"]
    assert full.history["eval"][-1]["accuracy"] > 0.5
    _fit(digits, loss_scale=scaler, steps=20, checkpoint_dir=tmp_path)
    resumed = _fit(digits, loss_scale=scaler, checkpoint_dir=tmp_path)
    for a, b in zip(jax.tree.leaves(resumed.train_state), jax.tree.leaves(full.train_state)):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(a, b)  # loss-scale state included
    assert [r["skipped"] for r in resumed.history["train"]] == [r["skipped"] for r in records]
    with pytest.raises(checkpoint.CheckpointError, match="compute_dtype"):
        _fit(digits, compute_dtype=jnp.bfloat16, loss_scale=scaler, checkpoint_dir=tmp_path)


def test_bfloat16_fit_evaluates_in_bfloat16_on_float32_weights(digits):
    result = _fit(digits, compute_dtype=jnp.bfloat16)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(result.params))
    assert result.train_state.loss_scale == ()
    assert "skipped" not in result.history["train"][-1]
    assert result.history["eval"][-1]["accuracy"] > 0.5
