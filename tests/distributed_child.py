"""The simulated-device checks of tests/test_distributed.py, run in one subprocess.

usage: python tests/distributed_child.py OUT.json

The parent sets XLA_FLAGS=--xla_force_host_platform_device_count=8 before this process
starts JAX. Each check returns (passed, detail); all results go to OUT.json so that the parent
reports every check by name. References: single-device jaxbp steps, and jax.grad of the
unsplit network (autodiff, for the tensor-parallel gradient).
"""

import functools
import json
import sys
import tempfile
import time
import traceback

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxbp  # noqa: E402
from jaxbp import checkpoint, distributed, losses, optim, precision, train  # noqa: E402

RTOL = 1e-12


def rel_err(a, b) -> float:
    """max over leaves of max|a − b| / max|b|."""
    errs = [
        float(jnp.max(jnp.abs(jnp.asarray(x) - jnp.asarray(y))) / (jnp.max(jnp.abs(y)) + 1e-300))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    ]
    return max(errs)


def unsplit(tree):
    """ShardedParams -> the plain Dense dicts (same values), for comparing with Dense."""

    def plain(node):
        if isinstance(node, distributed.ShardedParams):
            return {"W": node.W, "b": node.b}
        return node

    return jax.tree.map(plain, tree, is_leaf=lambda n: isinstance(n, distributed.ShardedParams))


def data(n=48, d=6, k=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = rng.integers(0, k, size=n).astype(np.int32)
    return x, y


def batches(x, y, steps, batch, seed=1):
    rng = np.random.default_rng(seed)
    rows = np.stack([rng.choice(len(x), batch, replace=False) for _ in range(steps)])
    return x[rows], y[rows]  # (steps, batch, ...)


def run_single(model, loss, opt, state, xs, ys, **kw):
    step = train.make_train_step(model, loss, opt, steps_per_call=len(xs), donate=False, **kw)
    return step(state, xs, ys)


@functools.lru_cache(maxsize=1)
def dp_problem():
    x, y = data()
    model, loss, opt = jaxbp.MLP([16, 16, 4]), losses.softmax_cross_entropy(), optim.adam(3e-2)
    state = train.init_train_state(model, opt, jax.random.key(0), (6,))
    xs, ys = batches(x, y, 20, 24)
    ref, ref_losses = run_single(model, loss, opt, state, xs, ys, clip_norm=1.0)
    return model, loss, opt, state, xs, ys, ref, ref_losses


def check_data_parallel(n):
    """20 Adam steps (clipped) on n devices (two calls of 10 scanned steps) = single device."""
    model, loss, opt, state, xs, ys, ref, ref_losses = dp_problem()
    mesh = distributed.make_mesh(n, devices=jax.devices()[:n])
    step = train.make_train_step(
        model, loss, opt, mesh=mesh, steps_per_call=10, clip_norm=1.0, donate=False
    )
    got, l1 = step(state, xs[:10], ys[:10])
    got, l2 = step(got, xs[10:], ys[10:])
    err = max(
        rel_err(got.params, ref.params),
        rel_err(got.opt_state, ref.opt_state),
        rel_err(jnp.concatenate([l1, l2]), ref_losses),
    )
    sharding = jax.tree.leaves(got.params)[0].sharding
    ok = err <= RTOL and int(got.step) == 20 and len(sharding.device_set) == n
    return ok, f"rel err {err:.2e} over params, Adam moments and losses; {n} devices"


def check_tensor_parallel_gradient():
    """One sgd(1) step of the TP MLP on a 1 × 4 mesh: θ0 − θ1 = jax.grad of the unsplit MLP."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(8, 6)), rng.normal(size=(8, 6))
    model, loss = distributed.TensorParallelMLP(16, 6), losses.mse()
    plain = jaxbp.serial(jaxbp.Dense(16), jaxbp.Gelu(), jaxbp.Dense(6))
    mesh = distributed.make_mesh(1, 4)
    opt = optim.sgd(1.0)
    state = train.init_train_state(model, opt, jax.random.key(2), (6,))
    _, p0, s0 = plain.init(jax.random.key(2), (6,))  # check: same values as the TP init
    step = train.make_train_step(model, loss, opt, mesh=mesh, donate=False)
    new, _ = step(state, x, y)
    manual = jax.tree.map(lambda a, b: a - b, unsplit(state.params), unsplit(new.params))
    init_key = jax.random.split(jax.random.key(2))[0]
    _, p0, s0 = plain.init(init_key, (6,))

    def objective(p):
        return loss.forward(plain.forward(p, s0, jnp.asarray(x))[0], jnp.asarray(y))[0]

    reference = jax.grad(objective)(p0)
    err = rel_err(manual, reference)
    w_spec = new.params[0].W.sharding.spec
    ok = err <= RTOL and w_spec == jax.sharding.PartitionSpec(None, "model")
    return ok, f"rel err {err:.2e} vs jax.grad of the unsplit MLP; W1 split {w_spec}"


def stacked_vjp(layer, x_global, dy_global, in_spec, out_spec):
    """Forward and manual backward of `layer` inside shard_map on 4 devices, global view."""
    mesh = distributed.make_mesh(1, 4)
    P = jax.sharding.PartitionSpec

    def both(x, dy):
        y, res, _ = layer.forward((), (), x)
        return y, layer.backward((), res, dy)[1]

    mapped = jax.shard_map(
        both, mesh=mesh, in_specs=(P(*in_spec), P(*out_spec)), out_specs=(P(*out_spec), P(*in_spec))
    )
    return jax.jit(mapped)(x_global, dy_global)


def check_gather_scatter_transposes():
    """AllGather's backward is reduce-scatter, ReduceScatter's is all-gather: each device's
    values stacked along the feature axis, against jax.vjp of the same map on global arrays."""
    rng = np.random.default_rng(11)
    n, errs = 4, []
    # AllGather: x (8, 12) split in 4 blocks of 3; device i outputs the full (8, 12): the
    # stacked output is the tile of x, (8, 48).
    x, dy = rng.normal(size=(8, 12)), rng.normal(size=(8, 48))
    y, dx = stacked_vjp(distributed.AllGather(), x, dy, (None, "model"), (None, "model"))
    y_ref, vjp = jax.vjp(lambda a: jnp.tile(a, (1, n)), jnp.asarray(x))
    errs += [rel_err(y, y_ref), rel_err(dx, vjp(jnp.asarray(dy))[0])]
    # ReduceScatter: device i holds a_i (8, 12) of the stacked (8, 48); it keeps block i (8, 3)
    # of Σ_i a_i: the global output is Σ_i a_i, (8, 12).
    a, dz = rng.normal(size=(8, 48)), rng.normal(size=(8, 12))
    z, da = stacked_vjp(distributed.ReduceScatter(), a, dz, (None, "model"), (None, "model"))
    z_ref, vjp = jax.vjp(lambda v: v.reshape(8, n, 12).sum(1), jnp.asarray(a))
    errs += [rel_err(z, z_ref), rel_err(da, vjp(jnp.asarray(dz))[0])]
    return max(errs) <= RTOL, f"rel errs (y, dx, z, da): {', '.join(f'{e:.1e}' for e in errs)}"


def two_d_models():
    """A TP MLP block, then a column-parallel Dense gathered for a replicated head (the
    GatherOutput backward: each device keeps its block), and the same network unsplit."""
    model = jaxbp.serial(
        jaxbp.Dense(8),
        jaxbp.Tanh(),
        distributed.TensorParallelMLP(16, 8),
        distributed.ColumnParallelDense(8),
        distributed.GatherOutput(),
        jaxbp.Dense(4),
    )
    plain = jaxbp.serial(
        jaxbp.Dense(8),
        jaxbp.Tanh(),
        jaxbp.serial(jaxbp.Dense(16), jaxbp.Gelu(), jaxbp.Dense(8)),
        jaxbp.Dense(8),
        jaxbp.Identity(),
        jaxbp.Dense(4),
    )
    return model, plain


def host(a):
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
        a = jax.random.key_data(a)
    return np.asarray(a)


def fit_kwargs(**kw):
    x, y = data(64, 6, 4, seed=9)
    base = dict(key=jax.random.key(4), batch_size=16, progress=False, eval_data=(x, y))
    return (x, y), {**base, **kw}


def schedule(**kw):
    return train.Schedule(**kw)


def check_fit_two_d_mesh():
    """fit on a 2-D mesh (data × model = 2 × 4: batch split 2 ways, the TP layers 4 ways),
    30 Adam steps = fit without a mesh on the unsplit network; a run resumed from its step-20
    checkpoint ends bitwise equal to the uninterrupted one."""
    model, plain = two_d_models()
    loss, opt = losses.softmax_cross_entropy(), optim.adam(1e-2)
    mesh = distributed.make_mesh(2, 4)
    train_data, kw = fit_kwargs(schedule=schedule(eval_every=10, checkpoint_every=10))
    ref = train.fit(plain, loss, opt, train_data, steps=30, **kw)
    with tempfile.TemporaryDirectory() as folder:
        ck = dict(checkpoint=train.CheckpointOptions(folder))
        whole = train.fit(model, loss, opt, train_data, steps=30, mesh=mesh, **kw, **ck)
        checkpoint.path_for(folder, 30).unlink()  # as if killed after step 20
        resumed = train.fit(model, loss, opt, train_data, steps=30, mesh=mesh, **kw, **ck)
    err = rel_err(unsplit(whole.params), ref.params)
    bitwise = all(
        np.array_equal(host(a), host(b))
        for a, b in zip(jax.tree.leaves(whole.train_state), jax.tree.leaves(resumed.train_state))
    )
    ev = abs(whole.history["eval"][-1]["loss"] - ref.history["eval"][-1]["loss"])
    w = whole.params[2][0].W
    local = w.addressable_shards[0].data.shape
    ok = err <= RTOL and bitwise and ev <= 1e-12 and local == (8, 4)
    return ok, (
        f"rel err {err:.2e}; W1 {tuple(w.shape)} held as {local} per device; resumed from "
        f"step 20 bitwise equal: {bitwise}; eval loss diff {ev:.1e}"
    )


def update_err(got, ref, start) -> float:
    """max over leaves of max|Δgot − Δref| / max|Δref|, Δ = params − start: the error of
    the training update itself (the float32 master weights hide it behind their size)."""
    d_got = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b), got, start)
    d_ref = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b), ref, start)
    return rel_err(d_got, d_ref)


SCALER = precision.dynamic_loss_scale(2.0**22, growth_interval=4, factor=2.0**10)


def check_mixed_precision_data_parallel():
    """Mixed precision over 4 devices = mixed precision on one: 12 SGD steps (3 calls of 4
    scanned steps, clipped) in bfloat16, and in float16 with dynamic loss scaling from 2²²,
    whose seed S/n of the backward overflows float16 (> 65504) on every device as on one:
    that step is skipped, S drops to 2¹² (factor 2¹⁰), and grows back after 4 good steps —
    on both, the same steps. (A scale near the limit may skip differently: the mesh sums the
    devices' smaller partial gradients in float32, where one device's full sum overflowed.)

    Tolerance: each device's dW = xᵀδ sums its own rows in the compute dtype and is rounded
    there once; the devices' float32 sum of 4 such roundings differs from the single device's
    one rounding by up to ~2 ulp of the compute dtype per gradient element (2⁻⁷ bfloat16,
    2⁻¹⁰ float16, relative), and SGD adds those errors up over the steps; the bound below is
    that ulp × steps on the update θ_T − θ_0 (relative to its largest element), not bitwise.
    """
    x, y = data(48, 6, 4, seed=3)
    model, loss, opt = jaxbp.MLP([16, 4]), losses.softmax_cross_entropy(), optim.sgd(0.5)
    xs, ys = batches(x, y, 12, 24, seed=4)
    xs = xs.astype(np.float32)
    mesh = distributed.make_mesh(4, devices=jax.devices()[:4])
    details, ok = [], True
    for dtype, ulp, scaler in ((jnp.bfloat16, 2.0**-7, None), (jnp.float16, 2.0**-10, SCALER)):
        opts = dict(compute_dtype=dtype, loss_scale=False if scaler is None else scaler)
        state = train.init_train_state(
            model, opt, jax.random.key(1), (6,), dtype=jnp.float32, loss_scale=scaler
        )
        runs = {}
        for name, where in (("one", None), ("mesh", mesh), ("float32", None)):
            kw = opts if name != "float32" else dict(loss_scale=False)
            s0 = state if name != "float32" else state._replace(loss_scale=())
            step = train.make_train_step(
                model, loss, opt, mesh=where, steps_per_call=4, clip_norm=5.0, donate=False, **kw
            )
            s = s0
            for i in range(3):
                s, _ = step(s, xs[4 * i : 4 * i + 4], ys[4 * i : 4 * i + 4])
            runs[name] = s
        one, par = runs["one"], runs["mesh"]
        err = update_err(par.params, one.params, state.params)
        # the mesh run really is in the compute dtype: far closer to it than float32 is
        err32 = update_err(runs["float32"].params, one.params, state.params)
        bound = ulp * 12
        ok &= err <= bound and err <= err32 / 4 and bool(one.health.ok) and bool(par.health.ok)
        ok &= all(p.dtype == jnp.float32 for p in jax.tree.leaves(par.params))
        text = f"{jnp.dtype(dtype).name}: update rel err {err:.1e} (bound {bound:.1e}; "
        text += f"float32 vs it {err32:.1e})"
        if scaler is not None:
            skipped = (int(one.loss_scale.skipped), int(par.loss_scale.skipped))
            scales = (float(one.loss_scale.scale), float(par.loss_scale.scale))
            ok &= skipped[0] == skipped[1] >= 2 and scales[0] == scales[1]
            text += f", skipped {skipped}, scale {scales}"
        details.append(text)
    return ok, "; ".join(details)


def check_fit_mesh_mixed_precision():
    """fit(mesh=..., precision=float16 + dynamic loss scaling) keeps the scaler: the same
    skipped steps, scale and (within the float16 bound above) parameters as fit on one
    device (fit refused compute_dtype with a mesh, and dropped the scaler)."""
    mesh = distributed.make_mesh(4, devices=jax.devices()[:4])
    model, loss, opt = jaxbp.MLP([16, 4]), losses.softmax_cross_entropy(), optim.sgd(0.5)
    x, y = data(64, 6, 4, seed=9)
    x = x.astype(np.float32)
    scaler = SCALER
    kw = dict(key=jax.random.key(4), steps=12, batch_size=16, progress=False)
    half = train.Precision(compute_dtype=jnp.float16, loss_scale=scaler)
    one = train.fit(model, loss, opt, (x, y), precision=half, **kw)
    par = train.fit(model, loss, opt, (x, y), precision=half, mesh=mesh, **kw)
    start = train.init_train_state(
        model, opt, jax.random.split(jax.random.key(4))[0], (6,), dtype=jnp.float32
    )
    err = update_err(par.params, one.params, start.params)
    skipped = (int(one.train_state.loss_scale.skipped), int(par.train_state.loss_scale.skipped))
    ok = err <= 12 * 2.0**-10 and skipped[0] == skipped[1] >= 2 and bool(par.train_state.health.ok)
    return ok, f"float16 update rel err {err:.1e}; skipped {skipped}"


def check_errors():
    """A batch that does not split over the data axis, a TP width that does not split."""
    model, loss, opt = jaxbp.MLP([8, 4]), losses.softmax_cross_entropy(), optim.sgd(0.1)
    mesh = distributed.make_mesh(4)
    train_data, kw = fit_kwargs()
    messages = []
    for attempt in (
        lambda: train.fit(
            model, loss, opt, train_data, steps=2, mesh=mesh, **{**kw, "batch_size": 10}
        ),
        lambda: train.make_train_step(model, loss, opt, mesh=mesh)(
            train.init_train_state(model, opt, jax.random.key(0), (6,)), *data(30)
        ),
        lambda: distributed.shard(
            distributed.TensorParallelMLP(6, 4).init(jax.random.key(0), (6,))[1],
            distributed.make_mesh(1, 4),
        ),
    ):
        try:
            attempt()
            messages.append("no error")
        except ValueError as e:
            messages.append(str(e))
    ok = "multiple of 4" in messages[0] and "multiple of 4" in messages[1]
    ok = ok and "does not split evenly over the 4 devices of mesh axis 'model'" in messages[2]
    return ok, " | ".join(messages)


CHECKS = {
    **{f"data_parallel_{n}": (lambda n=n: check_data_parallel(n)) for n in (1, 4, 8)},
    "tensor_parallel_gradient": check_tensor_parallel_gradient,
    "gather_scatter_transposes": check_gather_scatter_transposes,
    "fit_two_d_mesh": check_fit_two_d_mesh,
    "errors": check_errors,
    "mixed_precision_data_parallel": check_mixed_precision_data_parallel,
    "fit_mesh_mixed_precision": check_fit_mesh_mixed_precision,
}


def main(out):
    results = {"devices": len(jax.devices())}
    for name, check in CHECKS.items():
        t0 = time.perf_counter()
        try:
            ok, detail = check()
        except Exception:
            ok, detail = False, traceback.format_exc()
        results[name] = {"ok": bool(ok), "detail": detail}
        print(name, ok, f"{time.perf_counter() - t0:.1f}s", detail, flush=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
