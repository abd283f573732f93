"""jaxbp.train: the compiled step, fit, the divergence guard, determinism, kill-and-resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxbp
from jaxbp import checkpoint, data, losses, optim, train
from jaxbp import loop as train_loop

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    d = data.digits(dtype=np.float64)
    return (d["x_train"][:400], d["y_train"][:400]), (d["x_test"][:200], d["y_test"][:200])


MODEL = jaxbp.MLP([16, 10])
LOSS = losses.softmax_cross_entropy()
ADAM = optim.adam(1e-2)  # one object, so that fit's compilation is reused across the tests


def _model():
    return MODEL


def _leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ------------------------------------------------------------------------ make_train_step


def test_step_is_value_and_grad_then_the_optimizer(digits):
    (x, y), _ = digits
    model, loss, opt = _model(), losses.softmax_cross_entropy(), optax.adam(1e-2)
    state = train.init_train_state(model, opt, jax.random.key(0), (64,))
    params0, opt_state0 = state.params, state.opt_state
    step = train.make_train_step(model, loss, opt, donate=False)
    xb, yb = jnp.asarray(x[:32]), jnp.asarray(y[:32])
    new, value = step(state, xb, yb)
    # the reference: jaxbp's manual gradient, then optax by hand
    ref_loss, grads, _ = jaxbp.loss_and_grad(model, loss)(params0, state.model_state, xb, yb)
    updates, _ = opt.update(grads, opt_state0, params0)
    expected = optax.apply_updates(params0, updates)
    np.testing.assert_allclose(value, ref_loss, rtol=1e-13)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert int(new.step) == 1 and bool(new.health.ok)


def test_k_steps_per_call_equal_k_single_steps(digits):
    (x, y), _ = digits
    model, loss, opt = _model(), losses.softmax_cross_entropy(), optim.sgd(0.1, momentum=0.9)
    state = train.init_train_state(model, opt, jax.random.key(1), (64,))
    xs = jnp.asarray(x[:160]).reshape(5, 32, 64)
    ys = jnp.asarray(y[:160]).reshape(5, 32)
    single = train.make_train_step(model, loss, opt, donate=False)
    multi = train.make_train_step(model, loss, opt, steps_per_call=5, donate=False)
    s1, values = state, []
    for i in range(5):
        s1, v = single(s1, xs[i], ys[i])
        values.append(v)
    s5, values5 = multi(state, xs, ys)
    assert values5.shape == (5,) and int(s5.step) == 5
    np.testing.assert_allclose(values5, jnp.stack(values), rtol=1e-12)
    for a, b in zip(jax.tree.leaves(s5.params), jax.tree.leaves(s1.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_clipping_options_match_optax_chain(digits):
    (x, y), _ = digits
    model, loss = _model(), losses.softmax_cross_entropy()
    xb, yb = jnp.asarray(x[:32]), jnp.asarray(y[:32])
    opt = optim.sgd(1.0)
    state = train.init_train_state(model, opt, jax.random.key(2), (64,))
    step = train.make_train_step(model, loss, opt, clip_norm=0.1, clip_value=0.01, donate=False)
    new, _ = step(state, xb, yb)
    ref = optax.chain(optax.clip_by_global_norm(0.1), optax.clip(0.01), optax.sgd(1.0))
    _, grads, _ = jaxbp.loss_and_grad(model, loss)(state.params, state.model_state, xb, yb)
    updates, _ = ref.update(grads, ref.init(state.params), state.params)
    expected = optax.apply_updates(state.params, updates)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    # the clipping really bit: an element-wise change no larger than lr · clip_value
    delta = jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), new.params, state.params)
    assert max(jax.tree.leaves(delta)) <= 0.01 + 1e-12


def test_guard_freezes_the_state_and_names_the_leaf():
    model, loss, opt = _model(), losses.softmax_cross_entropy(), optim.sgd(0.1)
    state = train.init_train_state(model, opt, jax.random.key(3), (64,))
    step = train.make_train_step(model, loss, opt, steps_per_call=3, donate=False)
    xs = jnp.ones((3, 8, 64)).at[1, 0, 5].set(jnp.nan)  # the second step sees a NaN
    ys = jnp.zeros((3, 8), jnp.int32)
    new, _ = step(state, xs, ys)
    good, _ = train.make_train_step(model, loss, opt, donate=False)(state, xs[0], ys[0])
    assert not bool(new.health.ok)
    assert int(new.health.bad_step) == 1 and int(new.step) == 1
    assert int(new.health.bad_leaf) == 0  # params[0]['W'], the first leaf
    _leaves_equal(new.params, good.params)  # frozen at the last good step


def test_make_train_step_rejects_bad_steps_per_call():
    with pytest.raises(ValueError, match="steps_per_call"):
        train.make_train_step(_model(), losses.mse(), optim.sgd(0.1), steps_per_call=0)


# ------------------------------------------------------------------------------------ fit


def _fit(digits, tmp_path=None, *, schedule=(), checkpoint_dir=None, **kw):
    """fit on digits; `schedule` holds Schedule fields over the defaults below."""
    (x, y), (xt, yt) = digits
    args = dict(
        key=jax.random.key(0),
        steps=60,
        batch_size=32,
        eval_data=(xt, yt),
        schedule=train.Schedule(**{"eval_every": 30, "log_every": 10, **dict(schedule)}),
        checkpoint=train.CheckpointOptions(checkpoint_dir),
        progress=False,
    )
    args.update(kw)
    opt = args.pop("optimizer", ADAM)
    return train.fit(_model(), LOSS, opt, (x, y), **args)


def test_fit_learns_and_writes_history_and_checkpoints(digits, tmp_path, capsys):
    result = _fit(
        digits, checkpoint_dir=tmp_path, schedule={"checkpoint_every": 20}, steps=80, progress=True
    )
    assert result.step == 80
    history = json.loads((tmp_path / "history.json").read_text())
    assert history == json.loads(json.dumps(result.history))
    assert [r["step"] for r in history["train"]] == list(range(10, 81, 10))
    assert [r["step"] for r in history["eval"]] == [30, 60, 80]
    assert history["train"][-1]["loss"] < 0.5 * history["train"][0]["loss"]
    assert history["eval"][-1]["accuracy"] > 0.8
    names = [p.name for p in checkpoint.all_checkpoints(tmp_path)]
    assert names == ["ckpt-000000040.npz", "ckpt-000000060.npz", "ckpt-000000080.npz"]  # keep=3
    err = capsys.readouterr().err
    assert "80/80" in err and "loss=" in err and "accuracy=" in err  # the tqdm bar


def test_fit_with_k_steps_per_call_gives_the_same_run(digits):
    one = _fit(digits, steps=60)
    ten = _fit(digits, steps=60, schedule={"steps_per_call": 10})
    assert ten.step == 60
    for a, b in zip(jax.tree.leaves(ten.params), jax.tree.leaves(one.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    with pytest.raises(ValueError, match="multiple of steps_per_call"):
        _fit(digits, schedule={"steps_per_call": 7})


def test_fit_is_deterministic(digits):
    a, b = _fit(digits), _fit(digits)
    _leaves_equal(a.train_state, b.train_state)
    strip = lambda h: [(r["step"], r["loss"]) for r in h["train"]]
    assert strip(a.history) == strip(b.history) and a.history["eval"] == b.history["eval"]
    c = _fit(digits, key=jax.random.key(1))
    assert not np.array_equal(jax.tree.leaves(c.params)[0], jax.tree.leaves(a.params)[0])


def test_fit_custom_metric(digits):
    mae = lambda pred, y: jnp.mean(jnp.abs(jnp.argmax(pred, -1) - y))
    result = _fit(digits, evaluation=train.EvalOptions(mae, "mae"), steps=30)
    assert set(result.history["eval"][-1]) == {"step", "loss", "mae"}


def test_divergence_stops_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    (x, y), test = digits
    x = x.copy()
    # rows of the 4th batch of epoch 0 become infinite: the step that draws them must fail
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(_data_key(0), 0), len(x)))
    x[perm[3 * 32]] = np.inf
    with pytest.raises(train.DivergenceError, match=r"step 3: .*params\[0\]\['W'\]") as info:
        _fit(
            ((x, y), test),
            tmp_path,
            steps=20,
            schedule={"log_every": 2, "checkpoint_every": 2},
            checkpoint_dir=tmp_path,
        )
    assert info.value.step == 3 and info.value.leaf == "params[0]['W']"
    assert [p.name for p in checkpoint.all_checkpoints(tmp_path)] == ["ckpt-000000002.npz"]
    assert int(info.value.train_state.step) == 3  # frozen after the last good step
    # huge learning rate: a real divergence, caught too (loss overflows to inf/nan)
    with pytest.raises(train.DivergenceError, match="diverged at step"):
        _fit(digits, optimizer=optim.sgd(1e6), steps=200, eval_data=None)


def _data_key(seed):
    """fit's data key for `key=jax.random.key(seed)`."""
    return jax.random.split(jax.random.key(seed))[1]


def test_resume_from_a_checkpoint_in_process(digits, tmp_path):
    full = _fit(digits, steps=60)
    every20 = {"checkpoint_every": 20}
    _fit(digits, tmp_path, steps=40, checkpoint_dir=tmp_path, schedule=every20)
    resumed = _fit(digits, tmp_path, steps=60, checkpoint_dir=tmp_path, schedule=every20)
    _leaves_equal(resumed.train_state, full.train_state)
    assert resumed.history["train"] == [
        {**r, "time": r2["time"]}
        for r, r2 in zip(full.history["train"], resumed.history["train"], strict=True)
    ]
    with pytest.raises(checkpoint.CheckpointError, match="batch_size"):
        _fit(digits, tmp_path, steps=80, batch_size=16, checkpoint_dir=tmp_path)


def test_killed_run_resumes_to_bitwise_the_same_params(tmp_path):
    script = str(ROOT / "tests" / "resume_child.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = lambda *args: subprocess.Popen(
        [sys.executable, script, *map(str, args)], env=env, stdout=subprocess.PIPE, text=True
    )
    reference = run(tmp_path / "ref", tmp_path / "ref.npz")
    victim = run(tmp_path / "run", tmp_path / "killed.npz", "--slow")
    deadline = time.time() + 240
    while time.time() < deadline:
        found = checkpoint.latest(tmp_path / "run")
        if found is not None and checkpoint.read_metadata(found)["step"] >= 60:
            break
        assert victim.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    assert victim.poll() is None, "the run ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed.npz").exists()
    last = checkpoint.read_metadata(checkpoint.latest(tmp_path / "run"))["step"]
    assert 60 <= last < 200
    resumed = run(tmp_path / "run", tmp_path / "resumed.npz")
    out, _ = resumed.communicate(timeout=240)
    assert resumed.returncode == 0 and f"start {last}" in out and "done 200" in out
    assert reference.wait(timeout=240) == 0
    a, b = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "resumed.npz")
    assert sorted(a.files) == sorted(b.files) and len(a.files) > 5
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)  # bitwise


def test_fit_with_more_steps_per_call_than_an_epoch(digits):
    (x, y), _ = digits
    small = ((x[:64], y[:64]), (x[:64], y[:64]))  # 2 steps per epoch
    one = _fit(small, steps=20, schedule={"eval_every": 10})
    many = _fit(small, steps=20, schedule={"eval_every": 10, "log_every": 5, "steps_per_call": 5})
    for a, b in zip(jax.tree.leaves(many.params), jax.tree.leaves(one.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


# ------------------------------------------------------------- checks before the first step


def test_fit_refuses_a_bad_label_before_training_with_the_loss_message(digits):
    """One training label 10 of 10 classes: ValueError before any step, carrying the message
    the loss raises outside jit on the same labels; the same for the evaluation labels."""
    (x, y), (xt, yt) = digits
    bad = y.copy()
    bad[7] = 10
    with pytest.raises(ValueError) as outside:
        LOSS.forward(jnp.zeros((len(x), 10)), bad)
    calls = []
    with pytest.raises(ValueError) as inside:
        _fit(((x, bad), (xt, yt)), callbacks=[calls.append])
    assert str(inside.value) == f"fit: train_data rows 0..399: {outside.value}"
    assert "label 10 at index (7,)" in str(inside.value) and calls == []  # before any step
    bad_eval = yt.copy()
    bad_eval[3] = -1
    with pytest.raises(ValueError, match=r"fit: eval_data rows 0..199: .*label -1 at index \(3,\)"):
        _fit(((x, y), (xt, bad_eval)), callbacks=[calls.append])
    assert calls == []


# ---------------------------------------------------------------------------- pytree data


def test_fit_takes_pytree_targets_and_resumes(tmp_path):
    """A VAE: inputs x, targets (x, None) (the Bernoulli term's x, the KL term's nothing) —
    batched, shuffled, evaluated and checkpointed; a resumed run ends bitwise equal."""
    from jaxbp.models import autoencoder as ae

    x = (np.random.default_rng(0).random((48, 6)) > 0.5).astype(np.float64)
    vae = ae.VAE(jaxbp.MLP([8, 4]), jaxbp.MLP([8, 6]))
    kw = dict(
        key=jax.random.key(0),
        batch_size=16,
        eval_data=(x, (x, None)),
        evaluation=train.EvalOptions(metric=None, batch_size=20),
        schedule=train.Schedule(log_every=2, checkpoint_every=4),
        checkpoint=train.CheckpointOptions(tmp_path),
        progress=False,
    )
    opt = optim.adam(1e-2)
    full = train.fit(vae, losses.vae_loss(), opt, (x, (x, None)), steps=8, **kw)
    assert full.step == 8 and [r["step"] for r in full.history["eval"]] == [8]
    assert full.history["train"][-1]["loss"] < full.history["train"][0]["loss"]
    checkpoint.path_for(tmp_path, 8).unlink()  # as if killed after step 4
    resumed = train.fit(vae, losses.vae_loss(), opt, (x, (x, None)), steps=8, **kw)
    _leaves_equal(resumed.train_state, full.train_state)


def _graphs(n_graphs=8, seed=0):
    from jaxbp.layers import graph

    rng = np.random.default_rng(seed)
    pairs, labels = [], []
    for i in range(n_graphs):
        n = 4  # one batch shape: one compilation (each new shape of a batch compiles anew)
        ring = [[j, (j + 1) % n] for j in range(n)]
        edges = np.array(ring + [[b, a] for a, b in ring])
        pairs.append((rng.normal(size=(n, 4)) + (i % 2), edges))
        labels.append(i % 2)
    labels = np.array(labels, np.int32)
    return [
        (graph.batch_graphs(pairs[i : i + 2], np.float64), labels[i : i + 2])
        for i in range(0, 8, 2)
    ]


def test_fit_takes_a_list_of_graph_batches_and_refuses_a_graph_as_rows():
    batches = _graphs()
    net = jaxbp.serial(jaxbp.GCN(8), jaxbp.GraphReadout(), jaxbp.Dense(2))
    kw = dict(key=jax.random.key(0), steps=8, progress=False)
    result = train.fit(net, LOSS, optim.adam(3e-2), batches, eval_data=batches, **kw)
    assert result.step == 8 and 0 <= result.history["eval"][-1]["accuracy"] <= 1
    with pytest.raises(ValueError, match=r"do not share one row count .*list of pre-made"):
        train.fit(net, LOSS, optim.adam(3e-2), batches[0], **kw)
    bad = [(dict(batches[0][0], edges=batches[0][0]["edges"] + 100), batches[0][1])]
    with pytest.raises(ValueError, match="fit: train_data batch 0: GCN"):
        train.fit(net, LOSS, optim.adam(3e-2), bad, **kw)  # edge ids checked once, too


def test_graph_init_takes_a_dict_of_shapes_or_says_what_it_takes(key):
    net = jaxbp.serial(jaxbp.GCN(8), jaxbp.GraphReadout(), jaxbp.Dense(2))
    shapes = {"x": (4,), "edges": (2,), "graph": (), "sizes": ()}
    out_shape, params, _ = net.init(key, shapes)
    assert out_shape == (2,) and params[0]["W"].shape == (4, 8)
    assert jax.tree.all(jax.tree.map(jnp.array_equal, params, net.init(key, (4,))[1]))
    with pytest.raises(ValueError, match=r"GCN.*per-node feature shape under 'x'"):
        net.init(key, {"nodes": (4,)})
    with pytest.raises(TypeError, match="in_shape must be a per-example shape"):
        jaxbp.Dense(3).init(key, "4")


# --------------------------------------------------------------------------- the public loop


def test_loop_runs_a_custom_step_with_callbacks():
    """The loop calls the step on each batch (K steps per call, the last call shorter) and
    the callbacks after each call; `every` fires on multiples and at the end; an iterable of
    batches that runs out is an error naming the step."""
    seen, at = [], []
    step_fn = lambda s, batch: (s + sum(batch), len(batch))
    state = train_loop.loop(
        step_fn,
        0,
        lambda step, count: list(range(step, step + count)),
        steps=10,
        steps_per_call=4,
        callbacks=[
            lambda t: seen.append((t.step, t.out)),
            train_loop.every(8, lambda t: at.append(t.step)),
        ],
    )
    assert state == sum(range(10)) and seen == [(4, 4), (8, 4), (10, 2)] and at == [8, 10]

    def stop_at_6(tick):
        if tick.step >= 6:
            raise train_loop.Stop

    stopped = train_loop.loop(
        step_fn,
        0,
        lambda step, count: [1] * count,
        steps=10,
        steps_per_call=3,
        callbacks=[stop_at_6],
    )
    assert stopped == 6  # early stop after the call that reached step 6
    with pytest.raises(ValueError, match="ran out at step 2"):
        train_loop.loop(lambda s, b: (s, b), 0, iter([1, 2]), steps=3)
    with pytest.raises(ValueError, match="steps_per_call must be an int >= 1"):
        train_loop.loop(step_fn, 0, iter([]), steps=3, steps_per_call=0)
