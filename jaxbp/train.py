"""`fit`: the public parts composed — data (`jaxbp.pipeline`), the step (`jaxbp.step`), the
loop (`jaxbp.loop`), evaluation (`jaxbp.metrics`), checkpoints (`jaxbp.checkpoint`).

    data    → shuffled minibatches of any pytree of arrays (or pre-made batches)
    check   → every integer input and label checked once on the host, before the first step
    loop    → K steps per compiled call of `make_train_step(..., mesh=...)`
    after each call: log (history, progress bar), evaluate, checkpoint (atomic, resumable)

fit's options come in small groups, each a NamedTuple with the defaults of a plain run:
`Schedule` (when to log, evaluate, checkpoint; steps per call), `EvalOptions` (metric, batch
size), `CheckpointOptions` (folder, how many kept, resume, history file), `Precision` (master
and compute dtypes, loss scaling) and `Clip` (gradient clipping).

Divergence: a non-finite loss or gradient freezes the state at the last good step (the step's
guard) and `fit` raises `DivergenceError` naming the step and the first non-finite gradient
leaf, without writing a checkpoint after it.

Example:
    >>> import jax, numpy as np, jaxbp
    >>> from jaxbp import optim, losses, train
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    >>> y = (x[:, 0] > 0).astype(np.int32)
    >>> result = train.fit(jaxbp.MLP([8, 2]), losses.softmax_cross_entropy(), optim.sgd(0.5),
    ...                    (x, y), key=jax.random.key(0), steps=100, batch_size=16,
    ...                    eval_data=(x, y), schedule=train.Schedule(eval_every=50),
    ...                    progress=False)
    >>> result.step, result.history["eval"][-1]["accuracy"] > 0.9
    (100, True)
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxbp import checkpoint as ckpt
from jaxbp import distributed, metrics, pipeline
from jaxbp.layer import Layer
from jaxbp.loop import loop, progress_bar, write_json_atomic
from jaxbp.losses import Loss
from jaxbp.metrics import accuracy, evaluate, make_eval_step
from jaxbp.precision import LossScaleState
from jaxbp.step import (
    Health,
    TrainState,
    init_train_state,
    make_train_step,
    resolve_loss_scale,
)

__all__ = [
    "CheckpointOptions",
    "Clip",
    "DivergenceError",
    "EvalOptions",
    "FitResult",
    "Health",
    "Precision",
    "Schedule",
    "TrainState",
    "accuracy",
    "evaluate",
    "fit",
    "init_train_state",
    "make_eval_step",
    "make_train_step",
    "resolve_loss_scale",
]


class Schedule(NamedTuple):
    """When fit does what, in steps. log_every: mean training loss to the history and the bar
    (default ≈ steps/100); eval_every: evaluation (default 10 logs; also at the end);
    checkpoint_every: a checkpoint (default 10 logs; also at the end); steps_per_call: K steps
    per compiled call (every period must then be a multiple of K)."""

    log_every: int | None = None
    eval_every: int | None = None
    checkpoint_every: int | None = None
    steps_per_call: int = 1


class EvalOptions(NamedTuple):
    """How fit evaluates `eval_data`: `metric(pred, y)` recorded as `metric_name` beside the
    loss (None: the loss only), in chunks of `batch_size` rows."""

    metric: Callable | None = accuracy
    metric_name: str = "accuracy"
    batch_size: int = 1024


class CheckpointOptions(NamedTuple):
    """Where fit saves: `dir` (None: no checkpoints), the newest `keep` kept, `resume` from the
    newest one there, `history_path` (default dir/history.json) rewritten atomically."""

    dir: Any = None
    keep: int = 3
    resume: bool = True
    history_path: Any = None


class Precision(NamedTuple):
    """dtype: the (master) params' dtype (float32 when compute_dtype is set, else as
    initialised); compute_dtype: bfloat16/float16 forward, backward and evaluation;
    loss_scale: None (on for float16), True, False or a `precision.dynamic_loss_scale(...)`."""

    dtype: Any = None
    compute_dtype: Any = None
    loss_scale: Any = None


class Clip(NamedTuple):
    """Gradient clipping: to a global norm of at most `norm`, each element to ±`value`."""

    norm: float | None = None
    value: float | None = None


class FitResult(NamedTuple):
    """What `fit` returns: the final `train_state`, its `params` and `model_state`, the
    number of steps done, and the metrics `history` ({"train": [...], "eval": [...]})."""

    params: Any
    model_state: Any
    train_state: TrainState
    step: int
    history: dict


class DivergenceError(FloatingPointError):
    """Training met a non-finite loss or gradient. Carries `step`, `leaf`, `loss`,
    `history` and `train_state` (frozen at the last good step)."""

    def __init__(self, message, *, step, leaf, loss, history=None, train_state=None):
        super().__init__(message)
        self.step, self.leaf, self.loss = step, leaf, loss
        self.history, self.train_state = history, train_state


def fit(
    model: Layer,
    loss: Loss,
    optimizer,
    train_data,
    *,
    key,
    steps: int,
    batch_size: int = 32,
    eval_data=None,
    schedule: Schedule | None = None,
    evaluation: EvalOptions | None = None,
    checkpoint: CheckpointOptions | None = None,
    precision: Precision | None = None,
    clip: Clip | None = None,
    mesh=None,
    progress: bool = True,
    callbacks=(),
) -> FitResult:
    """Train `model` on `train_data` for `steps` minibatch steps; `key` fixes the whole run.
    Each option group left None takes its NamedTuple's defaults.

    - Data (`jaxbp.pipeline`): `(x, y)`, pytrees of arrays sharing their rows (arrays, tuples,
      dicts; `(x, None)` targets), cut into shuffled batches of `batch_size` rows (a fresh
      permutation per epoch, the last incomplete batch dropped) — or a list of pre-made
      `(x, y)` batches (graph batches), visited in a fresh order each epoch, one per step.
      `eval_data` takes the same forms.
    - Checks: when the data hold integers (labels, ids, edge lists) the model's and the
      loss's own range checks run once on all of it before the first step: ValueError with
      the message they raise outside jit.
    - Logging: every `schedule.log_every` steps the mean training loss since the last log and
      the seconds since the start go to `history["train"]` and the progress bar; under loss
      scaling also `loss_scale` and the `skipped` steps so far. `callbacks` (`jaxbp.loop`
      callbacks) see every call.
    - Evaluation: every `schedule.eval_every` steps and at the end, the loss and
      `evaluation.metric` on eval_data, in `history["eval"]`.
    - Checkpoints: with `checkpoint.dir`, the state, the data key and the history every
      `schedule.checkpoint_every` steps and at the end; an existing one there is resumed, to
      bitwise the same result as an uninterrupted run.
    - Precision, clipping and `mesh` (data × model parallel): passed to `make_train_step`;
      with a mesh, batch_size must be a multiple of the "data" axis size.
    """
    schedule, evaluation = schedule or Schedule(), evaluation or EvalOptions()
    checkpoint, precision, clip = (
        checkpoint or CheckpointOptions(),
        precision or Precision(),
        clip or Clip(),
    )
    run = _Run.make(model, loss, optimizer, train_data, key, batch_size, precision, clip, mesh)
    plan = _plan(steps, schedule, eval_data is not None, checkpoint)
    run.config["steps_per_call"] = plan.schedule.steps_per_call
    state, data_key, history = _restore(plan, run.state, run.data_key, run.config)
    run.check_data(state, "fit: train_data", run.data, evaluation.batch_size)
    evaluator = None
    if eval_data is not None:
        eval_data = run.host_data(eval_data)
        run.check_data(state, "fit: eval_data", eval_data, evaluation.batch_size)
        evaluator = _Evaluator.make(model, loss, evaluation, eval_data, run.compute)
    session = _FitSession(history, plan, run.config, evaluator, data_key)
    session.bar = progress_bar(progress, steps, int(state.step))
    try:
        state = loop(
            run.step_fn(),
            state,
            run.batches(data_key),
            steps=steps,
            start=int(state.step),
            steps_per_call=plan.schedule.steps_per_call,
            callbacks=[session.after_call, *callbacks],
        )
    finally:
        session.bar.close()
    return FitResult(state.params, state.model_state, state, int(state.step), session.history)


class _Plan(NamedTuple):
    """fit's schedule with the defaults filled in, and where to save."""

    schedule: Schedule
    checkpoint: CheckpointOptions


def _plan(steps, schedule: Schedule, has_eval: bool, checkpoint: CheckpointOptions) -> _Plan:
    """Fill in fit's defaults (log ≈ every steps/100, eval and checkpoint every 10 logs) and
    check that every period is a multiple of steps_per_call."""
    k = schedule.steps_per_call
    log_every = schedule.log_every or max(k, (max(steps // 100, 1) + k - 1) // k * k)
    eval_every = schedule.eval_every
    if has_eval and eval_every is None:
        eval_every = log_every * 10
    for name, value in [
        ("log_every", log_every),
        ("eval_every", eval_every),
        ("checkpoint_every", schedule.checkpoint_every),
    ]:
        if value is not None and value % k:
            raise ValueError(f"fit: {name}={value} must be a multiple of steps_per_call={k}")
    checkpoint_every = schedule.checkpoint_every
    if checkpoint.dir is not None and checkpoint_every is None:
        checkpoint_every = log_every * 10
    history_path = checkpoint.history_path
    if history_path is None and checkpoint.dir is not None:
        history_path = Path(checkpoint.dir) / "history.json"
    history_path = None if history_path is None else Path(history_path)
    return _Plan(
        Schedule(log_every, eval_every, checkpoint_every, k),
        checkpoint._replace(history_path=history_path),
    )


class _Run(NamedTuple):
    """What fit trains: the fresh state, the data (on the host), the compiled step."""

    model: Layer
    loss: Loss
    optimizer: Any
    state: TrainState
    data_key: Any
    data: Any  # (x, y) rows, or a list of pre-made batches
    batch_size: int
    config: dict
    compute: Any
    scaler: Any
    clip: Clip
    mesh: Any

    @classmethod
    def make(cls, model, loss, optimizer, train_data, key, batch_size, precision, clip, mesh):
        init_key, data_key = jax.random.split(key)
        premade = pipeline.is_batch_list(train_data)
        first = train_data[0] if premade and train_data else train_data
        x0, _ = pipeline.split_pair("fit: train_data", first)
        compute = None if precision.compute_dtype is None else jnp.dtype(precision.compute_dtype)
        scaler = resolve_loss_scale(compute, precision.loss_scale)
        dtype = precision.dtype if compute is None or precision.dtype else jnp.float32
        in_shape = pipeline.example_shape(pipeline.as_host(x0))
        state = init_train_state(
            model, optimizer, init_key, in_shape, dtype=dtype, loss_scale=scaler
        )
        leaves = jax.tree.leaves(state.params)
        run = cls(model, loss, optimizer, state, data_key, None, batch_size, {}, compute, scaler,
                  clip, mesh)  # fmt: skip
        run = run._replace(data=run.host_data(train_data, leaves[0].dtype if leaves else None))
        n = len(run.data) if premade else pipeline.row_count("fit: train_data", run.data)
        config = {"batch_size": None if premade else batch_size, "n_train": n}
        if compute is not None:
            config["compute_dtype"] = str(compute)
        return run._replace(config=config)

    def host_data(self, data, float_dtype="params"):
        """The data as NumPy pytrees, floats in the params' dtype."""
        if float_dtype == "params":
            leaves = jax.tree.leaves(self.state.params)
            float_dtype = leaves[0].dtype if leaves else None
        if pipeline.is_batch_list(data):
            return [
                pipeline.as_host(pipeline.split_pair("fit: batch", b), float_dtype) for b in data
            ]
        return pipeline.as_host(pipeline.split_pair("fit: data", data), float_dtype)

    def check_data(self, state, where, data, batch_size):
        """The layers' and the loss's range checks, once, on host data holding integers."""
        if metrics.has_integers(data):
            metrics.check_data(
                where, self.model, self.loss, state.params, state.model_state, data, batch_size
            )

    def batches(self, data_key):
        if pipeline.is_batch_list(self.data):
            return pipeline.ListBatches(data_key, self.data)
        rows = pipeline.RowBatches(data_key, pipeline.row_count("fit", self.data), self.batch_size)
        return lambda step, count: (*rows.window(step, count), count)

    def step_fn(self) -> Callable:
        """`(state, batch) -> (state, losses)` for the loop: a pre-made batch through the jitted
        step, or a window of rows gathered on the device by fit's compiled call."""
        args = (self.model, self.loss, self.optimizer, self.clip, self.compute, self.scaler)
        if pipeline.is_batch_list(self.data):
            if self.mesh is not None:  # a graph batch's edges index all of its nodes
                raise ValueError(
                    "fit: pre-made batches cannot be split over a mesh's data axis; pass "
                    "(x, y) rows with mesh=, or train pre-made batches on one device"
                )
            step = _cached(_batch_step, *args, None)
            return lambda state, batch: _with_axis(step(state, *batch))
        if self.mesh is not None:
            distributed.check_batch("fit", jnp.zeros(self.batch_size), self.mesh)
        run = _cached(_compiled_run, *args, self.mesh)
        x_dev, y_dev = _on_device(self.data, self.mesh)
        return lambda state, window: run(state, x_dev, y_dev, *window)


def _with_axis(result):
    state, value = result
    return state, value[None]


def _on_device(data, mesh):
    if mesh is None:
        return jax.tree.map(jnp.asarray, data)
    return distributed.shard(data, mesh, jax.tree.map(lambda _: jax.sharding.PartitionSpec(), data))


def _cached(fn, *args):
    """fn(*args) through its cache, or uncached when an argument is not hashable."""
    try:
        return fn(*args)
    except TypeError as e:
        if "unhashable" not in str(e):
            raise
        return fn.__wrapped__(*args)


def _step_options(clip, compute, scaler, mesh):
    return dict(
        mesh=mesh,
        clip_norm=clip.norm,
        clip_value=clip.value,
        compute_dtype=compute,
        loss_scale=scaler if scaler is not None else False,
    )


@functools.lru_cache(maxsize=16)
def _batch_step(model, loss, optimizer, clip, compute, scaler, mesh):
    return make_train_step(model, loss, optimizer, **_step_options(clip, compute, scaler, mesh))


@functools.lru_cache(maxsize=16)
def _compiled_run(model, loss, optimizer, clip, compute, scaler, mesh):
    """fit's compiled call `(state, x_all, y_all, stream, start, count=K) -> (state, losses)`:
    K steps whose minibatches are the rows stream[start], ..., stream[start+K−1] (each a
    (batch,) index vector into every leaf of x_all, y_all), gathered on the device and run by
    `make_train_step(..., steps_per_call=K, mesh=mesh)`. Cached on its arguments, so repeated
    fit calls with the same objects reuse one compilation."""
    options = _step_options(clip, compute, scaler, mesh)
    steps = {}

    def step_for(count):
        if count not in steps:
            steps[count] = make_train_step(
                model, loss, optimizer, steps_per_call=count, jit=False, **options
            )
        return steps[count]

    @functools.partial(jax.jit, donate_argnums=(0,), static_argnames=("count",))
    def run(state, x_all, y_all, stream, start, *, count):
        idx = jax.lax.dynamic_slice_in_dim(stream, start, count)  # (K, batch) row indices
        if count == 1:  # one step: no loop around it
            state, value = step_for(1)(
                state, pipeline.take(x_all, idx[0]), pipeline.take(y_all, idx[0])
            )
            return state, value[None]
        return step_for(count)(state, pipeline.take(x_all, idx), pipeline.take(y_all, idx))

    placed = None if mesh is None else distributed.PlacedOnce(mesh)

    def call(state, x_all, y_all, stream, start, count):
        if mesh is not None:
            state, stream = distributed.shard(state, mesh), placed(stream)
        return run(state, x_all, y_all, stream, start, count=count)

    return call


def _restore(plan: _Plan, state, data_key, config):
    """(state, data_key, history) from the newest checkpoint, verified against the fresh
    state's structure and fit's batch config; the fresh ones when there is none."""
    folder = plan.checkpoint.dir
    found = ckpt.latest(folder) if (folder is not None and plan.checkpoint.resume) else None
    if found is None:
        return state, data_key, {"train": [], "eval": []}
    tree, meta = ckpt.load(found, like={"train_state": state, "data_key": data_key})
    for name, value in config.items():
        if meta["config"].get(name) != value:
            raise ckpt.CheckpointError(
                f"fit: checkpoint {found} was made with {name}={meta['config'].get(name)}, "
                f"this run has {name}={value}; resuming would change the batches"
            )
    return tree["train_state"], tree["data_key"], meta["history"]


class _Evaluator(NamedTuple):
    """fit's evaluation on the held-out set: the compiled step and the data."""

    step: Callable
    data: Any
    batch_size: int
    metric_name: str | None  # None: the progress bar shows the evaluation loss

    @classmethod
    def make(cls, model, loss, options: EvalOptions, eval_data, compute):
        step = _cached(_compiled_eval, model, loss, options.metric, options.metric_name, compute)
        name = options.metric_name if options.metric is not None else None
        return cls(step, eval_data, options.batch_size, name)

    def __call__(self, state: TrainState, step: int) -> dict:
        out = evaluate(self.step, state.params, state.model_state, self.data, self.batch_size)
        return {"step": step, **out}


@functools.lru_cache(maxsize=16)
def _compiled_eval(model, loss, metric, metric_name, compute_dtype=None):
    return make_eval_step(model, loss, metric, metric_name, compute_dtype=compute_dtype)


class _FitSession:
    """fit's callback: after each call of K steps, log, evaluate and checkpoint when due."""

    def __init__(self, history, plan: _Plan, config, evaluator, save_key):
        self.history, self.plan, self.config, self.evaluator = history, plan, config, evaluator
        self.save_key, self.bar = save_key, None
        self.pending, self.postfix, self.t0 = [], {}, time.perf_counter()

    def after_call(self, tick):
        schedule, step = self.plan.schedule, tick.step
        self.state = tick.state
        self.pending.append(tick.out)
        self.bar.update(len(tick.out))
        eval_now = self.evaluator is not None and (tick.done or step % schedule.eval_every == 0)
        if tick.done or eval_now or step % schedule.log_every == 0:
            self.log(step, eval_now)
        save_now = self.plan.checkpoint.dir is not None and (
            tick.done or step % schedule.checkpoint_every == 0
        )
        if save_now:
            self.check_health()
            self.save_checkpoint(step)
        if tick.done or eval_now or save_now:
            self.write_history()

    def log(self, step, eval_now):
        """Record the mean training loss since the last log (one transfer) and evaluate."""
        self.check_health()
        mean_loss = float(jnp.mean(jnp.concatenate(self.pending)))
        self.pending = []
        record = {"step": step, "loss": mean_loss, "time": time.perf_counter() - self.t0}
        if isinstance(self.state.loss_scale, LossScaleState):
            record["loss_scale"] = float(self.state.loss_scale.scale)
            record["skipped"] = int(self.state.loss_scale.skipped)
        self.history["train"].append(record)
        self.postfix["loss"] = f"{mean_loss:.4g}"
        if eval_now:
            ev = self.evaluator(self.state, step)
            self.history["eval"].append(ev)
            name = self.evaluator.metric_name
            self.postfix[name or "eval_loss"] = f"{ev.get(name, ev['loss']):.4g}"
        self.bar.set_postfix(self.postfix, refresh=False)

    def check_health(self):
        """Raise DivergenceError when the divergence guard has frozen the state."""
        state = self.state
        if bool(state.health.ok):
            return
        bad_step = int(state.health.bad_step)
        leaf = _leaf_name(state.params, int(state.health.bad_leaf))
        value = float(state.health.bad_loss)
        folder = self.plan.checkpoint.dir
        last = ckpt.latest(folder) if folder is not None else None
        self.write_history()
        raise DivergenceError(
            f"fit: training diverged at step {bad_step}: loss = {value}, first non-finite "
            f"gradient leaf: {leaf}. The state is frozen at step {bad_step} (last good); "
            + (f"last good checkpoint: {last}. " if last else "no checkpoint was written. ")
            + "Lower the learning rate or clip the gradients (clip=Clip(norm=...)).",
            step=bad_step,
            leaf=leaf,
            loss=value,
            history=self.history,
            train_state=state,
        )

    def save_checkpoint(self, step):
        ckpt.save(
            self.plan.checkpoint.dir,
            step,
            {"train_state": self.state, "data_key": self.save_key},
            metadata={"history": self.history, "config": self.config},
            keep=self.plan.checkpoint.keep,
        )

    def write_history(self):
        if self.plan.checkpoint.history_path is not None:
            write_json_atomic(self.plan.checkpoint.history_path, self.history)


def _leaf_name(params, index: int) -> str:
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return f"params{paths[index]}" if 0 <= index < len(paths) else "(none: only the loss)"
