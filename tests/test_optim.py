"""jaxbp.optim against optax, step by step, on a real model (a digits MLP, float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxbp
from jaxbp import data, losses, optim

STEPS = 100
BATCH = 32
TOL = 1e-12


@pytest.fixture(scope="module")
def problem():
    """An MLP on digits, its initial params and STEPS minibatches (x: (STEPS, BATCH, 64))."""
    d = data.digits(dtype=np.float64)
    model = jaxbp.MLP([16, 10])
    _, params, state = model.init(jax.random.key(1), (64,))
    idx = np.random.default_rng(0).integers(0, len(d["x_train"]), size=(STEPS, BATCH))
    xs, ys = jnp.asarray(d["x_train"][idx]), jnp.asarray(d["y_train"][idx])
    grad_fn = jaxbp.loss_and_grad(model, losses.softmax_cross_entropy())  # jit-compiled once
    return grad_fn, params, state, xs, ys


def _trajectory(grad_fn, opt, params, state, xs, ys, jit=False):
    """All STEPS parameter iterates and updates of `opt` (lists, one pytree per step).

    The optimizer runs op by op (jit=False) so that the many configurations below share
    compiled primitives instead of each paying a full XLA compilation; `jit=True` compiles it.
    """
    update = jax.jit(opt.update) if jit else opt.update
    opt_state = opt.init(params)
    ps, us = [], []
    for x, y in zip(xs, ys, strict=True):
        _, grads, _ = grad_fn(params, state, x, y)
        updates, opt_state = update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        ps.append(params)
        us.append(updates)
    return _stack(ps), _stack(us)


def _stack(trees):
    return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def _max_rel_err(a, b):
    """Largest over leaves and steps of max|a − b| / max|b| (per step and leaf)."""
    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        axes = tuple(range(1, x.ndim))
        err = np.max(np.abs(x - y), axis=axes) / np.maximum(np.max(np.abs(y), axis=axes), 1e-300)
        worst = max(worst, float(np.max(err)))
    return worst


def _compare(problem, mine, theirs, jit=False):
    grad_fn, params, state, xs, ys = problem
    ps_mine, us_mine = _trajectory(grad_fn, mine, params, state, xs, ys, jit)
    ps_ref, us_ref = _trajectory(grad_fn, theirs, params, state, xs, ys, jit)
    # the reference must actually move the parameters, or the comparison says nothing
    start = jax.tree.map(lambda p: jnp.broadcast_to(p, (STEPS, *p.shape)), params)
    moved = _max_rel_err(ps_ref, start)
    assert moved > 1e-3
    assert _max_rel_err(us_mine, us_ref) <= TOL
    assert _max_rel_err(ps_mine, ps_ref) <= TOL
    return ps_mine


def schedule():
    return optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=20, decay_steps=STEPS)


def _weights_only(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


CASES = {
    "sgd": lambda m, lr=0.2: m.sgd(lr),
    "sgd_momentum": lambda m, lr=0.05: m.sgd(lr, momentum=0.9),
    "sgd_nesterov": lambda m, lr=0.05: m.sgd(lr, momentum=0.9, nesterov=True),
    "adagrad": lambda m, lr=0.1: m.adagrad(lr),
    "adagrad_zero_init": lambda m, lr=0.1: m.adagrad(lr, initial_accumulator_value=0.0),
    "rmsprop": lambda m, lr=1e-3: m.rmsprop(lr),
    "rmsprop_centered": lambda m, lr=1e-3: m.rmsprop(lr, decay=0.95, centered=True),
    "rmsprop_all_options": lambda m, lr=1e-3: m.rmsprop(
        lr,
        decay=0.8,
        eps=1e-6,
        initial_scale=0.5,
        eps_in_sqrt=False,
        centered=True,
        momentum=0.5,
        nesterov=True,
        bias_correction=True,
    ),
    "adam": lambda m, lr=1e-2: m.adam(lr),
    "adam_nesterov_eps_root": lambda m, lr=1e-2: m.adam(
        lr, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-9, nesterov=True
    ),
    "adamw": lambda m, lr=1e-2: m.adamw(lr, weight_decay=0.05),
    "adamw_masked": lambda m, lr=1e-2: m.adamw(lr, weight_decay=0.1, mask=_weights_only),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax(problem, name):
    make = CASES[name]
    _compare(problem, make(optim), make(optax))


def test_matches_optax_under_jit(problem):
    make = CASES["adam_nesterov_eps_root"]
    _compare(problem, make(optim), make(optax), jit=True)


@pytest.mark.parametrize("name", ["sgd_nesterov", "rmsprop_centered", "adamw"])
def test_in_optax_chain_with_clipping_and_schedule(problem, name):
    make = CASES[name]
    base_lr = {"sgd_nesterov": 0.05, "rmsprop_centered": 1e-3}.get(name, 1e-2)
    lr = lambda t: base_lr * schedule()(t)
    mine = optax.chain(optax.clip_by_global_norm(0.5), make(optim, lr))
    theirs = optax.chain(optax.clip_by_global_norm(0.5), make(optax, lr))
    _compare(problem, mine, theirs)


def test_hand_written_clippings_match_optax(problem):
    mine = optax.chain(optim.clip_by_global_norm(0.3), optim.clip_by_value(0.02), optim.sgd(0.5))
    theirs = optax.chain(optax.clip_by_global_norm(0.3), optax.clip(0.02), optax.sgd(0.5))
    _compare(problem, mine, theirs)


def test_weight_decay_schedule_matches_optax(problem):
    wd = optax.linear_schedule(0.1, 0.0, STEPS)
    _compare(problem, optim.adamw(1e-2, weight_decay=wd), optax.adamw(1e-2, weight_decay=wd))


@pytest.mark.parametrize("name", ["sgd_nesterov", "rmsprop_all_options", "adamw", "adagrad"])
def test_float32_keeps_dtypes_under_jit(name):
    opt = CASES[name](optim)
    params = {"W": jnp.ones((3, 2), jnp.float32), "b": jnp.zeros(2, jnp.float32)}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    state = opt.init(params)
    updates, new_state = jax.jit(opt.update)(grads, state, params)
    assert all(u.dtype == jnp.float32 for u in jax.tree.leaves(updates))
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape


def test_states_are_documented_namedtuples():
    params = jnp.zeros(3)
    for opt, cls in [
        (optim.sgd(0.1, momentum=0.9), optim.SGDState),
        (optim.adagrad(0.1), optim.AdaGradState),
        (optim.rmsprop(0.1, centered=True), optim.RMSpropState),
        (optim.adam(0.1), optim.AdamState),
        (optim.adamw(0.1), optim.AdamState),
    ]:
        state = opt.init(params)
        assert isinstance(state, cls) and cls.__doc__
        assert int(state.count) == 0
        _, state = opt.update(jnp.ones(3), state, params)
        assert int(state.count) == 1


def test_invalid_hyperparameters_raise():
    with pytest.raises(ValueError, match="sgd: nesterov"):
        optim.sgd(0.1, nesterov=True)
    with pytest.raises(ValueError, match="momentum"):
        optim.sgd(0.1, momentum=1.5)
    with pytest.raises(ValueError, match="rmsprop: decay"):
        optim.rmsprop(0.1, decay=1.0)
    with pytest.raises(ValueError, match="adam: b2"):
        optim.adam(0.1, b2=-0.1)
    with pytest.raises(ValueError, match="adagrad"):
        optim.adagrad(0.1, initial_accumulator_value=-1.0)
    with pytest.raises(TypeError, match="learning_rate"):
        optim.adam("0.1")
    with pytest.raises(ValueError, match="max_norm"):
        optim.clip_by_global_norm(0.0)
    with pytest.raises(ValueError, match="adamw: update needs params"):
        opt = optim.adamw(0.1)
        opt.update(jnp.ones(2), opt.init(jnp.ones(2)))


def test_plain_sgd_is_the_articles_rule():
    """W ← W − α ∂L/∂W, exactly."""
    w, g = jnp.array([1.0, 2.0]), jnp.array([0.5, -4.0])
    opt = optim.sgd(0.25)
    u, _ = opt.update(g, opt.init(w))
    np.testing.assert_array_equal(optax.apply_updates(w, u), w - 0.25 * g)
