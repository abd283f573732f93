"""The cost of backprop: a benchmark suite, every number measured in one process.

For every workload (a model, a loss, a batch) the suite times, interleaved round by round so
that all methods see the same machine load:

* `forward`   — the forward pass and the loss value only (jit);
* `manual`    — `jaxbp.loss_and_grad`: forward + the hand-written backward (jit);
* `autodiff`  — `jax.jit(jax.value_and_grad(f))` of the same forward;
* `numpy`     — a NumPy forward + hand-written backward (float32), where the workload has one;
* `torch`     — PyTorch eager on CPU (`loss.backward()`), only when `import torch` works;
* `matmul`    — one (batch × width) @ (width × width) product: this machine's matmul speed,
  measured in the same run, the reference for the achieved GFLOP/s.

On the workloads marked `train`, it also times a full SGD step (gradient and update) per step:
jaxbp with one step per compiled call, and with K steps per call (`lax.scan` over K minibatches
inside one jit), against NumPy and PyTorch doing the same update.

Reported: medians over rounds, the ratios manual/autodiff, step/forward, numpy/manual,
torch/manual (each the median of its per-round ratios), achieved GFLOP/s of the step against
the matmul GFLOP/s, the compiled temporary memory of manual vs autodiff
(`jit(f).lower(...).compile().memory_analysis()`), and power-law fits of step time against width
and depth.

Workloads, by family:

* `mlp` — square ReLU MLPs (width × depth sweeps, for the power-law fits) and a 784-256-256-10
  classifier (also timed as SGD steps);
* `cnn` — the MNIST-1D CNN (`experiments.mnist1d.cnn`) and the 2-D CNN of
  `experiments.bench_cnn.cnn2d`, softmax cross-entropy;
* `rnn` — `serial(cell(H), Dense(1))` for cell = RNN, LSTM, GRU (`experiments.bench_rnn.build`),
  MSE on every step.

Adding a workload is one entry: write a function returning a `Problem` (see `mlp_problem`) and
append a `Workload` in `workloads()`. NumPy and PyTorch references are optional per workload;
each returns (loss, [gradient arrays in the order of `jax.tree.leaves(jaxbp's grads)`]), and
`reference_errors` checks them against jaxbp before any time is reported.

Run:
    python -m experiments.backprop_cost            # full grid (minutes)
    python -m experiments.backprop_cost --quick    # the size `make demo` runs
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxbp
from experiments import bench_cnn, bench_rnn, common, mnist1d, timing
from experiments import references as refs
from experiments.references import LR


class Problem(NamedTuple):
    """Everything a measurement needs; built lazily by a workload's `build`."""

    model: jaxbp.Layer
    loss: jaxbp.Loss
    params: Any
    state: Any
    x: jax.Array
    y: jax.Array
    forward_flops: float  # FLOPs of the forward's matmuls/convolutions (2 per multiply-add)
    step_flops: float  # FLOPs of forward + backward (what a step has to compute)
    matmul_shape: tuple[int, int, int] | None  # (m, k, n) of the dominant product, or None
    # () -> (loss, [gradients in jax.tree.leaves order of the params]); None when not written
    numpy_step: Callable | None = None  # NumPy, hand-written backward (float32)
    torch_step: Callable | None = None  # PyTorch eager; None when torch is not installed
    numpy_sgd: Callable | None = None  # () -> loss: gradient + in-place SGD update
    torch_sgd: Callable | None = None


class Workload(NamedTuple):
    name: str
    family: str  # "mlp", "cnn" or "rnn"
    build: Callable[[], Problem]
    info: dict  # what the row shows (width, depth, batch, ...)
    matmul_bound: bool = False  # True where the matmuls dominate the step (step <= 3x forward)
    train: bool = False  # also time SGD steps, one per call and K per call


# ------------------------------------------------------------------ FLOPs and shared helpers


def dense_flops(rows: int, fan_in: int, fan_out: int) -> float:
    """2·rows·fan_in·fan_out: the product (rows × fan_in) @ (fan_in × fan_out)."""
    return 2.0 * rows * fan_in * fan_out


def conv_flops(batch: int, out_spatial, kernel, c_in: int, c_out: int) -> float:
    """2·N·P·K·C_in·C_out: one multiply-add per output position (P of them), kernel tap (K),
    input and output channel."""
    return 2.0 * batch * math.prod(out_spatial) * math.prod(kernel) * c_in * c_out


def recurrent_flops(batch: int, steps: int, features: int, hidden: int, gates: int) -> float:
    """2·B·T·(F + H)·G: per step the projections x_t W (F × G) and h_{t−1} U (H × G), G = gates·H.

    The elementwise gate algebra is not counted (it is O(B·T·G), not a product)."""
    return 2.0 * batch * steps * (features + hidden) * gates * hidden


def backprop_flops(forward_flops: float, input_flops: float) -> float:
    """FLOPs of forward + backward: every product of the forward is done once more for ∂L/∂W
    and once more for ∂L/∂(its input), except for the layer reading the data (x needs no
    gradient): 3·forward − input_flops."""
    return 3.0 * forward_flops - input_flops


# ------------------------------------------------------------------------------------ MLPs


def _relu_mlp(dims):
    layers = []
    for d in dims[1:-1]:
        layers += [jaxbp.Dense(d), jaxbp.Relu()]
    layers.append(jaxbp.Dense(dims[-1]))
    return jaxbp.serial(*layers)


def mlp_problem(dims: tuple[int, ...], batch: int, classify: bool, seed: int = 0) -> Problem:
    """ReLU MLP with layer sizes `dims` (input first), float32.

    `classify`: softmax cross-entropy on integer labels; otherwise half-MSE on Gaussian targets.
    """
    model = _relu_mlp(dims)
    loss = jaxbp.losses.softmax_cross_entropy() if classify else jaxbp.losses.half_mse()
    k_init, k_x, k_y = jax.random.split(jax.random.key(seed), 3)
    _, params, state = model.init(k_init, (dims[0],))
    params = jax.tree.map(lambda a: a.astype(jnp.float32), params)  # float32 even under x64
    x = jax.random.normal(k_x, (batch, dims[0]), jnp.float32)
    if classify:
        y = jax.random.randint(k_y, (batch,), 0, dims[-1])
    else:
        y = jax.random.normal(k_y, (batch, dims[-1]), jnp.float32)
    layer_flops = [dense_flops(batch, i, o) for i, o in zip(dims[:-1], dims[1:], strict=True)]
    forward_flops = sum(layer_flops)
    step_flops = backprop_flops(forward_flops, input_flops=layer_flops[0])
    Ws = [np.array(p["W"]) for p in params if isinstance(p, dict)]
    bs = [np.array(p["b"]) for p in params if isinstance(p, dict)]
    xn, yn = np.array(x), np.array(y)
    np_step, np_sgd = refs.numpy_mlp(
        [W.copy() for W in Ws], [b.copy() for b in bs], xn, yn, classify
    )
    t_step, t_sgd = refs.torch_mlp(Ws, bs, xn, yn, classify)
    widest = max(dims[1:-1]) if len(dims) > 2 else dims[0]
    return Problem(
        model, loss, params, state, x, y, forward_flops, step_flops, (batch, widest, widest),
        np_step, t_step, np_sgd, t_sgd,
    )  # fmt: skip


def square_mlp(width: int, depth: int, batch: int) -> Workload:
    """`depth` Dense layers of width × width (ReLU between), half-MSE: cost ∝ depth·batch·width²."""
    return Workload(
        f"mlp_w{width}_d{depth}_b{batch}",
        "mlp",
        functools.partial(mlp_problem, (width,) * (depth + 1), batch, False),
        {"width": width, "depth": depth, "batch": batch},
        matmul_bound=width >= 256,
    )


def small_mlp(batch: int) -> Workload:
    """784-256-256-10 ReLU classifier, softmax cross-entropy: per-call dispatch matters here."""
    return Workload(
        f"mlp_784-256-256-10_b{batch}",
        "mlp",
        functools.partial(mlp_problem, (784, 256, 256, 10), batch, True),
        {"width": 256, "depth": 3, "batch": batch, "dims": [784, 256, 256, 10]},
        train=True,
    )


# ------------------------------------------------------------------------------------ CNNs


def cnn_layer_flops(layers, params, in_shape, batch: int) -> list[float]:
    """Forward FLOPs of each conv and dense layer, in order. The per-example shape is walked
    through the reshapes and convolutions; a dense layer reads its sizes from its W."""
    shape, flops = tuple(in_shape), []
    for op, p in zip(layers, params, strict=True):
        if op[0] == "reshape":
            shape = op[1]
        elif op[0] == "conv":
            kernel, (c_in, c_out) = p["W"].shape[:-2], p["W"].shape[-2:]
            pads = refs.conv_padding(op[2], shape[:-1], kernel, op[1])
            out = refs.conv_output_size(shape[:-1], kernel, op[1], pads)
            flops.append(conv_flops(batch, out, kernel, c_in, c_out))
            shape = (*out, c_out)
        elif op[0] == "dense":
            flops.append(dense_flops(batch, *p["W"].shape))
    return flops


def cnn_problem(build, layers, in_shape, batch: int, classes: int = 10, seed: int = 0) -> Problem:
    """The CNN `build()` on Gaussian inputs (batch, *in_shape), random labels, softmax
    cross-entropy, float32. `layers` describes the same network for the references."""
    model, loss = build(), jaxbp.losses.softmax_cross_entropy()
    k_init, k_x, k_y = jax.random.split(jax.random.key(seed), 3)
    _, params, state = model.init(k_init, tuple(in_shape))
    params = jax.tree.map(lambda a: a.astype(jnp.float32), params)  # float32 even under x64
    with_params = [i for i, p in enumerate(params) if jax.tree.leaves(p)]
    described = [i for i, op in enumerate(layers) if op[0] in ("conv", "dense")]
    if len(layers) != len(params) or with_params != described:
        raise ValueError(f"{model.name}: the layer description {layers} does not match the model")
    x = jax.random.normal(k_x, (batch, *in_shape), jnp.float32)
    y = jax.random.randint(k_y, (batch,), 0, classes)
    flops = cnn_layer_flops(layers, params, in_shape, batch)
    np_params, xn, yn = refs.numpy_params(params), np.array(x), np.array(y)
    return Problem(
        model, loss, params, state, x, y, sum(flops), backprop_flops(sum(flops), flops[0]), None,
        refs.numpy_cnn(layers, np_params, xn, yn), refs.torch_cnn(layers, np_params, xn, yn),
    )  # fmt: skip


def mnist1d_cnn(batch: int, channels: int = 25) -> Workload:
    """The MNIST-1D CNN of `experiments.mnist1d` (three Conv1D, `channels` each) on (40,) inputs."""
    return Workload(
        f"cnn_mnist1d_c{channels}_b{batch}",
        "cnn",
        functools.partial(
            cnn_problem,
            functools.partial(mnist1d.cnn, channels),
            refs.MNIST1D_CNN_LAYERS,
            (40,),
            batch,
        ),
        {"batch": batch, "input": [40], "channels": channels},
    )


def cnn2d(size: int, batch: int) -> Workload:
    """The 2-D CNN of `experiments.bench_cnn` (3×3 convs of 32, 64, 64 channels) on size×size×3."""
    in_shape = (size, size, 3)
    return Workload(
        f"cnn2d_{size}x{size}x3_b{batch}",
        "cnn",
        functools.partial(cnn_problem, bench_cnn.cnn2d, refs.CNN2D_LAYERS, in_shape, batch),
        {"batch": batch, "input": list(in_shape)},
    )


# ------------------------------------------------------------------------------ recurrent


def recurrent_problem(cell: str, steps: int, batch: int, hidden: int, features: int,
                      seed: int = 0) -> Problem:  # fmt: skip
    """`experiments.bench_rnn.build(cell, hidden)` — serial(cell(hidden), Dense(1)) — on
    Gaussian (batch, steps, features) inputs and targets (batch, steps, 1), MSE, float32."""
    model, loss = bench_rnn.build(cell, hidden), jaxbp.losses.mse()
    k_init, k_x, k_y = jax.random.split(jax.random.key(seed), 3)
    _, params, state = model.init(k_init, (steps, features))
    params = jax.tree.map(lambda a: a.astype(jnp.float32), params)  # float32 even under x64
    x = jax.random.normal(k_x, (batch, steps, features), jnp.float32)
    y = jax.random.normal(k_y, (batch, steps, 1), jnp.float32)
    G = refs.RECURRENT_CELLS[cell].gates * hidden
    forward_flops = recurrent_flops(
        batch, steps, features, hidden, refs.RECURRENT_CELLS[cell].gates
    )
    forward_flops += dense_flops(batch * steps, hidden, 1)
    input_flops = dense_flops(batch * steps, features, G)  # x W: x needs no gradient
    (p, head), xn, yn = refs.numpy_params(params), np.array(x), np.array(y)
    return Problem(
        model, loss, params, state, x, y, forward_flops,
        backprop_flops(forward_flops, input_flops), None,
        refs.numpy_recurrent(cell, p, head, xn, yn), refs.torch_recurrent(cell, p, head, xn, yn),
    )  # fmt: skip


def recurrent(cell: str, steps: int, batch: int, hidden: int, features: int) -> Workload:
    """`serial(cell(hidden), Dense(1))` over `steps` time steps, MSE on every step."""
    return Workload(
        f"{cell.lower()}_T{steps}_b{batch}_h{hidden}_f{features}",
        "rnn",
        functools.partial(recurrent_problem, cell, steps, batch, hidden, features),
        {"cell": cell, "T": steps, "batch": batch, "hidden": hidden, "features": features},
    )


def workloads(size: str) -> list[Workload]:
    """The benchmark grid: the MLP sweeps, then the CNN and recurrent rows. One `Workload` each."""
    if size == "tiny":
        grid = dict(batches=[8], widths=[16, 32], depths=[2, 3], base_width=16, base_depth=2)
        others = [mnist1d_cnn(8, channels=4), cnn2d(8, 4)]
        others += [recurrent(cell, 6, 4, 8, 3) for cell in refs.RECURRENT_CELLS]
    elif size == "quick":
        grid = dict(batches=[128], widths=[64, 256, 1024], depths=[2, 4, 8], base_width=256,
                    base_depth=4)  # fmt: skip
        others = [mnist1d_cnn(128), cnn2d(32, 32), recurrent("LSTM", 50, 32, 64, 64)]
    else:
        grid = dict(batches=[128, 512], widths=[64, 128, 256, 512, 1024, 2048],
                    depths=[2, 4, 8, 16, 32], base_width=512, base_depth=4)  # fmt: skip
        others = [mnist1d_cnn(128), cnn2d(32, 128)]
        others += [recurrent(cell, 100, 32, 128, 64) for cell in refs.RECURRENT_CELLS]
    out = []
    for batch in grid["batches"]:
        out.append(small_mlp(batch))
        for w in grid["widths"]:
            out.append(square_mlp(w, grid["base_depth"], batch))
        for d in grid["depths"]:
            if d != grid["base_depth"]:
                out.append(square_mlp(grid["base_width"], d, batch))
    return out + others


# ------------------------------------------------------------------------------ measuring


def reference_errors(prob: Problem) -> dict:
    """Largest relative difference of the NumPy and PyTorch losses and gradients from jaxbp's
    (float32): the references must compute the same thing before their times mean anything.

    Every reference returns (loss, [gradient arrays in the order of jax.tree.leaves(grads)]);
    each array is compared with jaxbp's as max |got − jaxbp| / max |jaxbp|, and the largest
    over the loss and all arrays is reported per reference.
    """
    value, grads, _ = jaxbp.loss_and_grad(prob.model, prob.loss)(
        prob.params, prob.state, prob.x, prob.y
    )
    ref = [np.asarray(value)] + [np.asarray(g) for g in jax.tree.leaves(grads)]
    out = {}
    for name, step in (("numpy", prob.numpy_step), ("torch", prob.torch_step)):
        if step is None:
            continue
        loss, grad_list = step()
        got = [_to_numpy(loss)] + [_to_numpy(g) for g in grad_list]
        shapes, jaxbp_shapes = [g.shape for g in got[1:]], [r.shape for r in ref[1:]]
        if shapes != jaxbp_shapes:
            raise ValueError(f"{name} reference: gradients {shapes}, jaxbp's {jaxbp_shapes}")
        out[name] = max(
            float(np.max(np.abs(g - r)) / (np.max(np.abs(r)) + 1e-30))
            for g, r in zip(got, ref, strict=True)
        )
    return out


def _to_numpy(t):
    return np.asarray(t.detach().numpy() if hasattr(t, "detach") else t)


def jax_methods(prob: Problem):
    """The compiled JAX callables of one problem: name -> zero-argument function."""
    model, loss, params, state, x, y = prob[:6]

    def loss_value(params, state, x, y):
        pred, _, _ = model.forward(params, state, x, train=True)
        return loss.forward(pred, y)[0]

    forward = jax.jit(loss_value)
    manual = jaxbp.loss_and_grad(model, loss)
    autodiff = jax.jit(jax.value_and_grad(loss_value))
    methods = {
        "forward": lambda: forward(params, state, x, y),
        "manual": lambda: manual(params, state, x, y),
        "autodiff": lambda: autodiff(params, state, x, y),
    }
    compiled = {}  # what XLA says about each program: deterministic, unlike the timings
    for name, fn in (("manual", manual), ("autodiff", autodiff)):
        exe = fn.lower(params, state, x, y).compile()
        memory = exe.memory_analysis()
        cost = exe.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        compiled[name] = {
            "temp_bytes": None if memory is None else int(memory.temp_size_in_bytes),
            "flops": None if not cost else float(cost.get("flops", float("nan"))),
            "bytes_accessed": None if not cost else float(cost.get("bytes accessed", float("nan"))),
        }
    if prob.matmul_shape is not None:
        m, k, n = prob.matmul_shape
        a = jnp.ones((m, k), jnp.float32)
        b = jnp.ones((k, n), jnp.float32) / k
        matmul = jax.jit(jnp.matmul)
        methods["matmul"] = lambda: matmul(a, b)
    return methods, compiled


def sgd_methods(prob: Problem, ks: list[int]):
    """Per-step SGD callables: (function, steps per call), stateful (params carried along)."""
    model, loss, params, state, x, y = prob[:6]
    out = {}
    for kind, grad_fn in (
        ("manual", jaxbp.models.loss_and_grad(model, loss, jit=False)),
        ("autodiff", _autodiff_loss_and_grad(model, loss)),
    ):

        def sgd_step(params, xy, grad_fn=grad_fn):
            value, grads, _ = grad_fn(params, state, *xy)
            return jax.tree.map(lambda p, g: p - LR * g, params, grads), value

        for K in ks:
            if K == 1:
                call = jax.jit(sgd_step, donate_argnums=0)
                data = (x, y)
            else:
                call = jax.jit(functools.partial(jax.lax.scan, sgd_step), donate_argnums=0)
                # K different minibatches (shifted copies: the data values do not matter)
                data = (jnp.stack([jnp.roll(x, i, 0) for i in range(K)]),
                        jnp.stack([jnp.roll(y, i, 0) for i in range(K)]))  # fmt: skip
            out[f"{kind}_sgd_K{K}"] = (timing.carried(call, params, data), K)
    references = {}
    add_reference_methods(references, "numpy_sgd", prob.numpy_sgd, "torch_sgd", prob.torch_sgd)
    out.update({name: (fn, 1) for name, fn in references.items()})
    return out


def add_reference_methods(methods, numpy_name, numpy_fn, torch_name, torch_fn):
    """NumPy and PyTorch, each with its default threads and with one thread.

    On a small problem, or a machine shared with other jobs, BLAS and OpenMP worker threads can
    cost more than they give; we time both settings and compare jaxbp with the faster one in
    each round (`best_thread_setting`), so that the baseline is the best this machine offers.
    """
    if numpy_fn is not None:
        methods[numpy_name] = numpy_fn
        try:
            from threadpoolctl import threadpool_limits

            def numpy_one_thread(fn=numpy_fn):
                with threadpool_limits(limits=1):
                    return fn()

            methods[numpy_name + "_1t"] = numpy_one_thread
        except ImportError:
            pass
    if torch_fn is not None:
        import torch

        methods[torch_name] = torch_fn

        def torch_one_thread(fn=torch_fn):
            n = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return fn()
            finally:
                torch.set_num_threads(n)

        methods[torch_name + "_1t"] = torch_one_thread


def best_thread_setting(times, per_round, names):
    """Add `<name>_best`: per round, the faster of `<name>` and `<name>_1t`."""
    for name in names:
        if name in per_round:
            rounds = [per_round[name]] + [per_round[name + "_1t"]] * (name + "_1t" in per_round)
            per_round[name + "_best"] = list(np.min(rounds, axis=0))
            times[name + "_best"] = float(np.median(per_round[name + "_best"]))


def _autodiff_loss_and_grad(model, loss):
    def step(params, state, x, y):
        def f(params):
            pred, _, new_state = model.forward(params, state, x, train=True)
            return loss.forward(pred, y)[0], new_state

        (value, new_state), grads = jax.value_and_grad(f, has_aux=True)(params)
        return value, grads, new_state

    return step


def measure(workload: Workload, rounds: int, min_time: float, ks: list[int]) -> dict:
    prob = workload.build()
    methods, compiled = jax_methods(prob)
    add_reference_methods(methods, "numpy", prob.numpy_step, "torch", prob.torch_step)
    errors = reference_errors(prob)
    timed = timing.interleaved_times(methods, rounds=rounds, min_time=min_time)
    times, per_round = timed
    best_thread_setting(times, per_round, ("numpy", "torch"))
    row = {
        "reference_max_rel_error": errors,
        "name": workload.name,
        "family": workload.family,
        **workload.info,
        "matmul_bound": workload.matmul_bound,
        "forward_gflop": prob.forward_flops / 1e9,
        "step_gflop": prob.step_flops / 1e9,
        "seconds": times,
        "seconds_min": {name: float(np.min(ts)) for name, ts in per_round.items()},
        "manual_over_autodiff_of_mins": timing.min_ratio(timed, "manual", "autodiff"),
        "step_over_forward_of_mins": timing.min_ratio(timed, "manual", "forward"),
        "numpy_over_manual_of_mins": timing.min_ratio(timed, "numpy_best", "manual"),
        "torch_over_manual_of_mins": timing.min_ratio(timed, "torch_best", "manual"),
        "manual_over_autodiff": timing.ratio(timed, "manual", "autodiff"),
        "step_over_forward": timing.ratio(timed, "manual", "forward"),
        "autodiff_over_forward": timing.ratio(timed, "autodiff", "forward"),
        "numpy_over_manual": timing.ratio(timed, "numpy_best", "manual"),
        "torch_over_manual": timing.ratio(timed, "torch_best", "manual"),
        "compiled": compiled,
        "step_gflops": prob.step_flops / times["manual"] / 1e9,
    }
    if "matmul" in times:
        m, k, n = prob.matmul_shape
        row["matmul_gflops"] = 2.0 * m * k * n / times["matmul"] / 1e9
        # per round: (step FLOPs / step time) / (matmul FLOPs / matmul time)
        t_step, t_mm = np.asarray(per_round["manual"]), np.asarray(per_round["matmul"])
        row["step_fraction_of_matmul"] = float(
            np.median((prob.step_flops / t_step) / (2.0 * m * k * n / t_mm))
        )
        row["step_fraction_of_matmul_of_mins"] = float(
            (prob.step_flops / t_step.min()) / (2.0 * m * k * n / t_mm.min())
        )
    if workload.train:
        sgd = sgd_methods(prob, ks)
        per_call = {name: fn for name, (fn, _) in sgd.items()}
        sgd_timed = timing.interleaved_times(per_call, rounds=rounds, min_time=min_time)
        sgd_times, sgd_rounds = sgd_timed
        best_thread_setting(sgd_times, sgd_rounds, ("numpy_sgd", "torch_sgd"))
        sgd.update({name: (None, 1) for name in sgd_times if name.endswith("_best")})
        per_step = {name: sgd_times[name] / sgd[name][1] for name in sgd}
        row["sgd_seconds_per_step"] = per_step
        best = min((n for n in per_step if n.startswith("manual")), key=per_step.get)
        row["sgd_best_manual"] = best
        for other in ("numpy_sgd_best", "torch_sgd_best", "autodiff_sgd_K1"):
            if other in sgd_rounds:
                ratio = np.asarray(sgd_rounds[other]) / sgd[other][1]
                ratio = ratio / (np.asarray(sgd_rounds[best]) / sgd[best][1])
                row[f"{other}_over_best_manual"] = float(np.median(ratio))
        for K in ks:
            m, a = f"manual_sgd_K{K}", f"autodiff_sgd_K{K}"
            row[f"sgd_manual_over_autodiff_K{K}"] = timing.ratio(sgd_timed, m, a)
    return row


# ---------------------------------------------------------------------------------- report


def power_law(xs, ts) -> float:
    """Exponent p of the least-squares fit t = c·xᵖ (log-log)."""
    return float(np.polyfit(np.log(xs), np.log(ts), 1)[0])


def _square_mlps(rows, batch=None):
    """The square-MLP rows (family 'mlp', no explicit `dims`), of one batch size if given."""
    return [r for r in rows if r["family"] == "mlp" and "dims" not in r
            and (batch is None or r["batch"] == batch)]  # fmt: skip


def scaling_fits(rows, grid_batch_rows):
    """Exponents of step time against width (fixed depth) and depth (fixed width), per batch,
    from the square-MLP rows only."""
    fits = {}
    for batch, (base_width, base_depth) in grid_batch_rows.items():
        sq = _square_mlps(rows, batch)
        t = lambda r: r["seconds"]["manual"]
        by_width = sorted((r["width"], t(r)) for r in sq if r["depth"] == base_depth)
        by_depth = sorted((r["depth"], t(r)) for r in sq if r["width"] == base_width)
        fit = {"depth_of_width_sweep": base_depth, "width_of_depth_sweep": base_width}
        if len(by_width) >= 2:
            fit["width_exponent_all"] = power_law(*zip(*by_width, strict=True))
            big = [(wi, ti) for wi, ti in by_width if wi >= 256]
            if len(big) >= 2:
                fit["width_exponent_w>=256"] = power_law(*zip(*big, strict=True))
        if len(by_depth) >= 2:
            fit["depth_exponent"] = power_law(*zip(*by_depth, strict=True))
        fits[str(batch)] = fit
    return fits


def targets(rows, fits):
    """Each target of the issue with the measured number and whether it is met."""
    out = []

    def add(name, value, limit, better="lower", where="", of_mins=None):
        met = None if value is None else (value <= limit if better == "lower" else value >= limit)
        out.append({"target": name, "measured": value, "limit": limit, "met": met, "where": where,
                    "ratio_of_min_times": of_mins, "better": better})  # fmt: skip

    worst = max(rows, key=lambda r: r["manual_over_autodiff"])
    add("manual <= 1.05x autodiff, every workload (worst)", worst["manual_over_autodiff"], 1.05,
        where=worst["name"], of_mins=worst["manual_over_autodiff_of_mins"])  # fmt: skip
    sgd_rows = [r for r in rows if "sgd_seconds_per_step" in r]
    for r in sgd_rows:
        for key in r:
            if key.startswith("sgd_manual_over_autodiff_K") and r[key] is not None:
                add(f"manual <= 1.05x autodiff, SGD step {key[-3:].strip('_')}", r[key], 1.05,
                    where=r["name"])  # fmt: skip
    bound = [r for r in rows if r["matmul_bound"]]
    if bound:
        worst = max(bound, key=lambda r: r["step_over_forward"])
        add("step <= 3x forward, matmul-bound MLPs (worst)", worst["step_over_forward"], 3.0,
            where=worst["name"], of_mins=worst["step_over_forward_of_mins"])  # fmt: skip
    square = [r for r in _square_mlps(rows) if "matmul_gflops" in r]
    if square:
        largest = max(square, key=lambda r: (r["step_gflop"], r["width"]))
        add("step >= 80% of matmul GFLOP/s, largest MLP", largest["step_fraction_of_matmul"], 0.8,
            better="higher", where=largest["name"],
            of_mins=largest["step_fraction_of_matmul_of_mins"])  # fmt: skip
    for other in ("numpy", "torch"):
        vals = [r for r in rows if r[f"{other}_over_manual"] is not None]
        if vals:
            worst = min(vals, key=lambda r: r[f"{other}_over_manual"])
            add(
                f"faster than {other} (value+grad), every workload: {other}/manual (worst)",
                worst[f"{other}_over_manual"], 1.0, better="higher", where=worst["name"],
                of_mins=worst[f"{other}_over_manual_of_mins"],
            )  # fmt: skip
        for r in sgd_rows:
            key = f"{other}_sgd_best_over_best_manual"
            if key in r:
                add(
                    f"faster than {other}, SGD step per step: {other}/best jaxbp "
                    f"({r['sgd_best_manual']})", r[key], 1.0, better="higher", where=r["name"],
                )  # fmt: skip
    return out


def plot_scaling(rows, fits, path):
    fig, axes = common.new_figure(1, 2, figsize=(11, 4))
    styles = {"manual": "-o", "autodiff": "--s", "forward": ":^", "numpy_best": "-.x",
              "torch_best": "-.d"}  # fmt: skip
    for batch, fit in fits.items():
        sq = _square_mlps(rows, int(batch))
        for ax, key, fixed, fixed_val in (
            (axes[0], "width", "depth", fit["depth_of_width_sweep"]),
            (axes[1], "depth", "width", fit["width_of_depth_sweep"]),
        ):
            sel = sorted((r for r in sq if r[fixed] == fixed_val), key=lambda r: r[key])
            for method, style in styles.items():
                pts = [(r[key], r["seconds"][method]) for r in sel if method in r["seconds"]]
                if pts:
                    ax.loglog(*zip(*pts, strict=True), style, label=f"{method} b{batch}", alpha=0.8)
            ax.set_xlabel(key)
            ax.set_title(f"time per call vs {key} ({fixed} {fixed_val})")
            ticks = sorted({r[key] for r in sel})
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
    axes[0].set_ylabel("seconds")
    if fits:  # no square-MLP rows (e.g. --only lstm): empty axes, no legend
        axes[1].legend(fontsize=7, ncol=2)
    return common.save_figure(fig, path)


def plot_ratios(rows, path):
    fig, ax = common.new_figure(figsize=(max(6, 0.45 * len(rows)), 4))
    keys = ["manual_over_autodiff", "step_over_forward", "numpy_over_manual", "torch_over_manual"]
    xs = np.arange(len(rows))
    for i, key in enumerate(keys):
        vals = [r[key] if r[key] is not None else np.nan for r in rows]
        ax.bar(xs + (i - 1.5) * 0.2, vals, 0.2, label=key)
    ax.axhline(1.0, color="k", lw=0.6)
    ax.axhline(3.0, color="k", lw=0.6, ls=":")
    ax.set_yscale("log")
    ax.set_xticks(xs, [r["name"].replace("mlp_", "") for r in rows], rotation=70, fontsize=7)
    ax.legend(fontsize=8)
    ax.set_title("ratios of median times (one process, interleaved rounds)")
    return common.save_figure(fig, path)


def markdown_table(rows) -> str:
    head = (
        "| workload | manual ms | autodiff ms | forward ms | numpy ms | torch ms | manual/autodiff"
        " | step/forward | numpy/manual | torch/manual | step GFLOP/s | % of matmul "
        "| temp MiB manual / autodiff |\n|" + "---|" * 13
    )
    lines = [head]
    ms = lambda r, k: f"{1e3 * r['seconds'][k]:.3g}" if k in r["seconds"] else "–"
    # numpy and torch columns: the faster of default threads and one thread, per round
    fx = lambda v, f="{:.2f}": "–" if v is None else f.format(v)
    for r in rows:
        mem = {k: v["temp_bytes"] for k, v in r["compiled"].items()}
        mib = lambda v: "–" if v is None else f"{v / 2**20:.2f}"
        lines.append(
            f"| {r['name']} | {ms(r, 'manual')} | {ms(r, 'autodiff')} | {ms(r, 'forward')} | "
            f"{ms(r, 'numpy_best')} | {ms(r, 'torch_best')} | {fx(r['manual_over_autodiff'])} | "
            f"{fx(r['step_over_forward'])} | {fx(r['numpy_over_manual'])} | "
            f"{fx(r['torch_over_manual'])} | {r['step_gflops']:.1f} | "
            f"{fx(r.get('step_fraction_of_matmul'), '{:.0%}')} | "
            f"{mib(mem['manual'])} / {mib(mem['autodiff'])} |"
        )
    return "\n".join(lines)


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help=_suppress())
    p.add_argument("--rounds", type=int, default=None, help="timing rounds (default by size)")
    p.add_argument("--only", default=None, help="run only workloads whose name contains this")
    args = p.parse_args(argv)
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    rounds = args.rounds or {"tiny": 2, "quick": 5, "full": 7}[size]
    min_time = {"tiny": 0.002, "quick": 0.05, "full": 0.1}[size]
    ks = {"tiny": [1, 4], "quick": [1, 16], "full": [1, 8, 64]}[size]
    grid = workloads(size)
    if args.only:
        grid = [w for w in grid if args.only in w.name]
    out = common.out_dir(args)
    try:
        import torch

        torch_info = {"version": torch.__version__, "threads": torch.get_num_threads()}
    except ImportError:
        torch_info = None
    load_before = os.getloadavg()
    rows = []
    for w in grid:
        t0 = time.perf_counter()
        row = measure(w, rounds, min_time, ks)
        rows.append(row)
        sgd = row.get("sgd_seconds_per_step")
        fraction = row.get("step_fraction_of_matmul")
        of_matmul = "" if fraction is None else f" ({fraction:.0%} of matmul)"
        errors = row["reference_max_rel_error"]
        ref_err = " ".join(f"{k} {v:.1e}" for k, v in errors.items()) or "–"
        extra = ""
        if sgd:
            extra = "  sgd ms/step " + " ".join(f"{k}={1e3 * v:.3g}" for k, v in sgd.items())
        print(
            f"{w.name:28s} manual {1e3 * row['seconds']['manual']:8.3f} ms  "
            f"man/ad {row['manual_over_autodiff']:.3f}  step/fwd {row['step_over_forward']:.2f}  "
            f"np/man {row['numpy_over_manual'] or float('nan'):.2f}  "
            f"torch/man {row['torch_over_manual'] or float('nan'):.2f}  "
            f"{row['step_gflops']:.1f} GF/s{of_matmul}  ref err {ref_err}"
            f"  [{time.perf_counter() - t0:.0f}s]{extra}",
            flush=True,
        )
    base = {"tiny": (16, 2), "quick": (256, 4), "full": (512, 4)}[size]
    fits = scaling_fits(rows, {r["batch"]: base for r in _square_mlps(rows)})
    checks = targets(rows, fits)
    figures = [
        str(plot_scaling(rows, fits, out / "backprop_cost_scaling.png")),
        str(plot_ratios(rows, out / "backprop_cost_ratios.png")),
    ]
    print(markdown_table(rows))
    print("power-law exponents of step time:", fits)
    for c in checks:
        flag = {True: "MET", False: "NOT MET", None: "?"}[c["met"]]
        mins = c["ratio_of_min_times"]
        mins = "" if mins is None else f" [of min times: {mins:.3f}]"
        print(
            f"  [{flag:7s}] {c['target']}: {c['measured']:.3f}{mins} "
            f"(limit {c['limit']}) {c['where']}"
        )
    result = {
        "experiment": "backprop_cost",
        "size": size,
        "rounds": rounds,
        "min_time_per_measurement_s": min_time,
        "machine": {
            **common.machine(),
            "torch": torch_info,
            "shared": True,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },  # fmt: skip
        "note": "medians over interleaved rounds in one process; ratios are medians of per-round "
        "ratios; the machine was shared with other jobs, so absolute times are noisy",
        "rows": rows,
        "fits": fits,
        "targets": checks,
        "table_markdown": markdown_table(rows),
        "figures": figures,
    }
    result["report"] = common.report(
        "The cost of backprop (manual vs autodiff, NumPy, PyTorch)",
        "python -m experiments.backprop_cost",
        [
            common.headline(f"{c['target']} [{c['where']}]", c["measured"],
                            f"{'≤' if c['better'] == 'lower' else '≥'} {c['limit']} (issue target)",
                            ok=c["met"])
            for c in checks
        ]
        + [common.headline(f"step-time exponent, {k} (batch {b})", v,
                           "depth^1.0, width^1.85–2.08 (README, full size)")
           for b, fit in fits.items() for k, v in fit.items() if "exponent" in k],
        figures,
        status="ok" if torch_info else "partial",
        notes=common.size_note(args, "the README's workload table")
        + ("" if torch_info else "; PyTorch not installed: its comparisons were skipped")
        + "; medians of interleaved rounds, a shared machine.",
    )  # fmt: skip
    common.save_json(out / "backprop_cost.json", result)
    return result


def _suppress():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
