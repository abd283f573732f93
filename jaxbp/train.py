"""Training: one jit-compiled pure step, and `fit`, the loop around it.

The step is the article's gradient descent, with any optimizer in place of the plain rule:

    L, ∂L/∂θ = loss_and_grad(model, loss)(θ, x, y)      (forward, then the manual backward)
    g        = clip(∂L/∂θ)                              (optional: by global norm, by value)
    u, s     = optimizer.update(g, s, θ)                (sgd: u = −α g)
    θ        ← θ + u

`make_train_step` compiles it as a pure function of a `TrainState` (params, optimizer state,
layer state, step counter, PRNG key, health). With `steps_per_call=K` it compiles K steps into
one call with `lax.scan`, which removes the per-step dispatch cost that dominates small models.

Divergence guard: each step checks that the loss and every gradient leaf are finite. The first
step that fails is not applied; the state freezes at the last good values and records the step,
the loss and the first non-finite gradient leaf (`Health`), and `fit` raises `DivergenceError`
naming them — without overwriting the last good checkpoint.

`fit` draws shuffled minibatches from a PRNG key (a fresh permutation per epoch), evaluates
periodically (accuracy or any metric), writes the metrics history as JSON, shows a tqdm bar
(step, loss, eval metric), and saves atomic, verified checkpoints (`jaxbp.checkpoint`) from which
a killed run resumes to bitwise the same parameters as a run that was never interrupted.

Example:
    >>> import jax, numpy as np, jaxbp
    >>> from jaxbp import optim, losses, train
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    >>> y = (x[:, 0] > 0).astype(np.int32)
    >>> result = train.fit(jaxbp.MLP([8, 2]), losses.softmax_cross_entropy(), optim.sgd(0.5),
    ...                    (x, y), key=jax.random.key(0), steps=100, batch_size=16,
    ...                    eval_data=(x, y), eval_every=50, progress=False)
    >>> result.step, result.history["eval"][-1]["accuracy"] > 0.9
    (100, True)
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbp import checkpoint as ckpt
from jaxbp import optim, precision
from jaxbp.indices import check_range
from jaxbp.layer import Layer
from jaxbp.losses import Loss
from jaxbp.models.grad import loss_and_grad


class Health(NamedTuple):
    """The divergence guard's record, carried through every step.

    ok: bool scalar, True while every step so far had a finite loss and finite gradients.
    bad_step: int32, the step whose loss or gradient was not finite (−1 while ok).
    bad_leaf: int32, index (in `jax.tree.leaves(params)` order) of the first non-finite
        gradient leaf at that step, or −1 when only the loss was non-finite.
    bad_loss: the loss value at that step.
    """

    ok: jax.Array
    bad_step: jax.Array
    bad_leaf: jax.Array
    bad_loss: jax.Array


class TrainState(NamedTuple):
    """Everything a training step reads and writes.

    params: the model's parameters θ (the float32 "master weights" in mixed precision).
    opt_state: the optimizer's state.
    model_state: the layers' non-trainable buffers (batch-norm statistics), often ().
    step: int32 scalar, the number of steps taken (steps skipped by loss scaling included).
    key: PRNG key; each step splits off a fresh key for the layers (dropout).
    health: the divergence guard's `Health`.
    loss_scale: the `precision.LossScaleState` under dynamic loss scaling, else ().
    """

    params: Any
    opt_state: Any
    model_state: Any
    step: jax.Array
    key: jax.Array
    health: Health
    loss_scale: Any = ()


class DivergenceError(FloatingPointError):
    """Training met a non-finite loss or gradient. Carries `step`, `leaf`, `loss`,
    `history` and `train_state` (frozen at the last good step)."""

    def __init__(self, message, *, step, leaf, loss, history=None, train_state=None):
        super().__init__(message)
        self.step, self.leaf, self.loss = step, leaf, loss
        self.history, self.train_state = history, train_state


def init_train_state(
    model: Layer, optimizer, key, in_shape, dtype=None, loss_scale=None
) -> TrainState:
    """A fresh TrainState: params from `model.init`, the optimizer's initial state, step 0.

    `dtype` (e.g. jnp.float32) casts the floating-point params; default: as initialised.
    `loss_scale` (a `precision.DynamicLossScale`) adds its initial state.
    """
    init_key, step_key = jax.random.split(key)
    _, params, model_state = model.init(init_key, in_shape)
    if dtype is not None:
        params = jax.tree.map(lambda p: p.astype(dtype), params)
    loss_dtype = jnp.result_type(*jax.tree.leaves(params)) if jax.tree.leaves(params) else float
    health = Health(
        ok=jnp.array(True),
        bad_step=jnp.array(-1, jnp.int32),
        bad_leaf=jnp.array(-1, jnp.int32),
        bad_loss=jnp.zeros([], loss_dtype),
    )
    return TrainState(
        params=params,
        opt_state=optimizer.init(params),
        model_state=model_state,
        step=jnp.zeros([], jnp.int32),
        key=step_key,
        health=health,
        loss_scale=() if loss_scale is None else loss_scale.init(),
    )


def make_train_step(
    model: Layer,
    loss: Loss,
    optimizer,
    *,
    steps_per_call: int = 1,
    clip_norm: float | None = None,
    clip_value: float | None = None,
    guard: bool = True,
    donate: bool = True,
    jit: bool = True,
    compute_dtype=None,
    loss_scale=None,
) -> Callable:
    """The compiled training step: `(state, x, y) -> (new_state, loss)`.

    With `steps_per_call=1`, x and y are one minibatch and `loss` is a scalar. With K > 1, x
    and y carry a leading axis of K minibatches, the K steps run inside one compiled call
    (`lax.scan`), and `loss` holds the K losses. `clip_norm` rescales the gradient to a global
    norm of at most `clip_norm`; `clip_value` clips each element to ±clip_value (norm first
    when both are given). `guard` enables the divergence guard (see the module docstring).
    `donate` lets XLA reuse the input state's buffers for the output (the passed state must
    not be used after the call). `jit=False` returns the plain Python function.

    Mixed precision: with `compute_dtype` (jnp.bfloat16, jnp.float16) the params stay in their
    own dtype (float32 master weights); each step casts them, the inputs and the layer state
    to `compute_dtype` for the forward and backward, and casts the gradients back before the
    clipping and the optimizer. `loss_scale` (a `precision.DynamicLossScale`; the state must
    come from `init_train_state(..., loss_scale=...)`) scales the loss gradient by S, divides
    the gradients by S, and skips a step whose gradients overflow (see `jaxbp.precision`);
    `resolve_loss_scale` gives the default (on for float16).

    Example:
        >>> import jax, jax.numpy as jnp, jaxbp
        >>> from jaxbp import losses, optim, train
        >>> model, opt = jaxbp.MLP([8, 1]), optim.sgd(0.1)
        >>> state = train.init_train_state(model, opt, jax.random.key(0), (3,))
        >>> step = train.make_train_step(model, losses.mse(), opt)
        >>> state, loss = step(state, jnp.ones((4, 3)), jnp.zeros((4, 1)))
        >>> int(state.step)
        1
    """
    if isinstance(steps_per_call, bool) or not isinstance(steps_per_call, int):
        raise TypeError(f"make_train_step: steps_per_call must be an int, got {steps_per_call!r}")
    if steps_per_call < 1:
        raise ValueError(f"make_train_step: steps_per_call must be >= 1, got {steps_per_call}")
    scaler = resolve_loss_scale(compute_dtype, loss_scale)
    one_step = _one_step(
        model, loss, optimizer, clip_norm, clip_value, guard, compute_dtype, scaler
    )

    if steps_per_call == 1:
        step = one_step
    else:

        def step(state, xs, ys):
            return jax.lax.scan(lambda s, batch: one_step(s, *batch), state, (xs, ys))

    if not jit:
        return step
    return jax.jit(step, donate_argnums=(0,) if donate else ())


def resolve_loss_scale(compute_dtype, loss_scale=None):
    """The loss scaler a run uses: `loss_scale` itself when it is a DynamicLossScale,
    None when it is False (or when training is not in float16 and it is None), and the default
    `precision.dynamic_loss_scale()` for float16 when it is None or True."""
    if isinstance(loss_scale, precision.DynamicLossScale):
        return loss_scale
    if loss_scale is False:
        return None
    if loss_scale is True or (
        loss_scale is None and compute_dtype is not None and jnp.dtype(compute_dtype) == jnp.float16
    ):
        return precision.dynamic_loss_scale()
    if loss_scale is None:
        return None
    raise TypeError(
        "loss_scale must be None, True, False or a precision.DynamicLossScale, "
        f"got {type(loss_scale).__name__}"
    )


def _mixed_grad_fn(model, loss, compute_dtype):
    """(params, model_state, x, y, key, scale) -> (loss, grads, model_state): the forward and
    the manual backward in `compute_dtype`, the loss gradient seeded with `scale`, and the
    gradients (divided by the scale) and the new layer state back in the params' dtypes."""
    if compute_dtype is None:
        grad_fn = loss_and_grad(model, loss, train=True, jit=False)
        return lambda p, s, x, y, key, scale: grad_fn(p, s, x, y, key)
    cast = functools.partial(precision.cast_floats, dtype=compute_dtype)

    def grad_fn(params, model_state, x, y, key, scale):
        p = cast(params)
        pred, residuals, new_state = model.forward(
            p, cast(model_state), cast(x), key=key, train=True
        )
        value, loss_residuals = loss.forward(pred, y)
        # ∂(S·L)/∂ŷ is formed in float32 (S/n fits there) and cast once to the compute dtype
        g = jnp.ones([], jnp.float32) if scale is None else scale
        dpred = jax.tree.map(lambda d, o: d.astype(o.dtype), loss.backward(loss_residuals, g), pred)
        grads, _ = model.backward(p, residuals, dpred)
        grads = jax.tree.map(lambda d, w: d.astype(w.dtype), grads, params)
        if scale is not None:
            grads = jax.tree.map(lambda d: d / scale.astype(d.dtype), grads)
        new_state = jax.tree.map(lambda n, o: n.astype(o.dtype), new_state, model_state)
        return value.astype(jnp.float32), grads, new_state

    return grad_fn


def _one_step(model, loss, optimizer, clip_norm, clip_value, guard, compute_dtype, scaler):
    grad_fn = _mixed_grad_fn(model, loss, compute_dtype)
    clips = []
    if clip_norm is not None:
        clips.append(optim.clip_by_global_norm(clip_norm))
    if clip_value is not None:
        clips.append(optim.clip_by_value(clip_value))

    def one_step(state: TrainState, x, y):
        key, layer_key = jax.random.split(state.key)
        scale = None if scaler is None else state.loss_scale.scale
        value, grads, model_state = grad_fn(state.params, state.model_state, x, y, layer_key, scale)
        finite_leaves = [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]
        finite_leaves = jnp.stack(finite_leaves) if finite_leaves else jnp.ones(1, bool)
        for clip in clips:
            grads, _ = clip.update(grads, optim.EmptyState())
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = state._replace(
            params=params, opt_state=opt_state, model_state=model_state, step=state.step + 1
        )
        new = new._replace(key=key)
        finite = jnp.isfinite(value) & jnp.all(finite_leaves)
        if scaler is not None:
            new = _skip_on_overflow(scaler, state, new, jnp.all(finite_leaves))
            # an overflow at the smallest scale is no longer the scale's fault: divergence
            finite = jnp.isfinite(value) & (
                jnp.all(finite_leaves) | (state.loss_scale.scale > scaler.min_scale)
            )
        if not guard:
            return new, value
        return _guarded(state, new, value, finite, finite_leaves), value

    return one_step


def _skip_on_overflow(scaler, state: TrainState, new: TrainState, grads_finite) -> TrainState:
    """Loss scaling: keep params, optimizer and layer state when the gradients overflowed (the
    step and the key still advance), and update the scale."""

    def pick(a, b):
        return jax.tree.map(lambda u, v: jnp.where(grads_finite, u, v), a, b)

    return new._replace(
        params=pick(new.params, state.params),
        opt_state=pick(new.opt_state, state.opt_state),
        model_state=pick(new.model_state, state.model_state),
        loss_scale=scaler.update(state.loss_scale, grads_finite),
    )


def _guarded(state: TrainState, new: TrainState, value, finite, finite_leaves) -> TrainState:
    """The divergence guard: apply the step only if everything so far (and now) is finite;
    otherwise freeze at `state` and record the first failure in `Health`."""
    ok = state.health.ok & finite
    first_failure = state.health.ok & ~finite
    bad_leaf = jnp.where(jnp.all(finite_leaves), -1, jnp.argmin(finite_leaves))
    health = Health(
        ok=ok,
        bad_step=jnp.where(first_failure, state.step, state.health.bad_step),
        bad_leaf=jnp.where(first_failure, bad_leaf.astype(jnp.int32), state.health.bad_leaf),
        bad_loss=jnp.where(
            first_failure, value.astype(state.health.bad_loss.dtype), state.health.bad_loss
        ),
    )
    kept = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, state)
    return kept._replace(health=health)


# --------------------------------------------------------------------------- evaluation


def accuracy(pred, target):
    """Fraction of rows whose argmax matches the label (integer labels or one-hot rows).

    Integer labels must lie in [0, classes) (see `jaxbp.indices`)."""
    if jnp.issubdtype(target.dtype, jnp.integer):
        check_range("accuracy", "label", target, 0, jnp.shape(pred)[-1])
        labels = target
    else:
        labels = jnp.argmax(target, -1)
    return jnp.mean(jnp.argmax(pred, axis=-1) == labels)


def make_eval_step(
    model: Layer, loss: Loss, metric=accuracy, metric_name="accuracy", *, compute_dtype=None
):
    """Jit-compiled `(params, model_state, x, y) -> {"loss": L, metric_name: m}` (train=False);
    with `compute_dtype` the params, state and inputs are cast to it first."""

    def evaluate(params, model_state, x, y):
        if compute_dtype is not None:
            params, model_state, x = precision.cast_floats((params, model_state, x), compute_dtype)
        pred, _, _ = model.forward(params, model_state, x, train=False)
        value, _ = loss.forward(pred, y)
        out = {"loss": value}
        if metric is not None:
            out[metric_name] = metric(pred, y)
        return out

    return jax.jit(evaluate)


def _evaluate(eval_step, params, model_state, x, y, batch_size):
    """Metrics averaged over the whole set, in chunks of `batch_size` (weighted by size)."""
    n = len(x)
    totals = {}
    for start in range(0, n, batch_size):
        out = eval_step(
            params, model_state, x[start : start + batch_size], y[start : start + batch_size]
        )
        m = min(batch_size, n - start)
        for k, v in out.items():
            totals[k] = totals.get(k, 0.0) + float(v) * m
    return {k: v / n for k, v in totals.items()}


# ----------------------------------------------------------------------------------- fit


class FitResult(NamedTuple):
    """What `fit` returns: the final `train_state`, its `params` and `model_state`, the
    number of steps done, and the metrics `history` ({"train": [...], "eval": [...]})."""

    params: Any
    model_state: Any
    train_state: TrainState
    step: int
    history: dict


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _epoch_rows(data_key, epochs, n, per_epoch, batch_size):
    """Minibatch rows (len(epochs)·per_epoch, batch_size) of the given epochs, computed on the
    device: epoch e uses permutation(fold_in(data_key, e), n), cut into per_epoch batches."""

    def rows(epoch):
        perm = jax.random.permutation(jax.random.fold_in(data_key, epoch), n)
        return perm[: per_epoch * batch_size].reshape(per_epoch, batch_size).astype(jnp.int32)

    return jnp.concatenate([rows(epochs[j]) for j in range(epochs.shape[0])])


class _Batches:
    """The minibatch rows of every step, as windows of a device array.

    Epoch e uses the permutation of `fold_in(data_key, e)`; each epoch has n // batch_size
    steps (the last incomplete batch is dropped). The rows depend only on the key and the
    step, which is what makes a resumed run see the same batches as an uninterrupted one.
    To keep the host out of the per-step path, the rows of epochs e and e+1 are computed on the
    device as one (2·steps_per_epoch, batch) array; a call of K steps passes its start index.
    """

    def __init__(self, data_key, n, batch_size):
        self.key, self.n, self.batch_size = data_key, n, batch_size
        self.per_epoch = n // batch_size
        self.epoch, self.stream = None, None

    def _rows(self, epochs):
        epochs = np.asarray(epochs, np.uint32)
        return _epoch_rows(self.key, epochs, self.n, self.per_epoch, self.batch_size)

    def window(self, step, count):
        """(stream, start): the rows of steps step .. step+count−1 are stream[start:start+count]."""
        epoch, i = divmod(step, self.per_epoch)
        if i + count > 2 * self.per_epoch:  # more steps per call than an epoch holds
            last = epoch + (i + count - 1) // self.per_epoch
            rows = self._rows(list(range(epoch, last + 1)))
            return rows[i : i + count], 0
        if self.epoch != epoch:
            self.stream = self._rows([epoch, epoch + 1])
            self.epoch = epoch
        return self.stream, i


def _write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _leaf_name(params, index: int) -> str:
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return f"params{paths[index]}" if 0 <= index < len(paths) else "(none: only the loss)"


def _multiple(name, value, k):
    if value is not None and value % k:
        raise ValueError(f"fit: {name}={value} must be a multiple of steps_per_call={k}")


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
    eval_every: int | None = None,
    metric: Callable | None = accuracy,
    metric_name: str = "accuracy",
    eval_batch_size: int = 1024,
    log_every: int | None = None,
    steps_per_call: int = 1,
    clip_norm: float | None = None,
    clip_value: float | None = None,
    checkpoint_dir=None,
    checkpoint_every: int | None = None,
    keep: int = 3,
    resume: bool = True,
    history_path=None,
    progress: bool = True,
    callback: Callable | None = None,
    dtype=None,
    compute_dtype=None,
    loss_scale=None,
    mesh=None,
) -> FitResult:
    """Train `model` on `train_data = (x, y)` for `steps` minibatch steps.

    - Batches: each epoch is a fresh permutation drawn from `key` (so the run is fully
      determined by `key`); the last incomplete batch of an epoch is dropped.
    - Evaluation: every `eval_every` steps and at the end, on `eval_data = (x, y)`: the loss
      and `metric(pred, y)` (default: accuracy), recorded as `history["eval"]`.
    - Logging: every `log_every` steps (default ≈ steps/100) the mean training loss since the
      last log (and the seconds since this call started) goes to `history["train"]`, the
      progress bar and `callback(step, record)`. `history_path` (default
      `checkpoint_dir/history.json`) is rewritten atomically at every evaluation, every
      checkpoint and at the end.
    - Checkpoints: with `checkpoint_dir`, the training state, the data key and the history are
      saved every `checkpoint_every` steps and at the end (atomic, verified on load; newest
      `keep` kept). With `resume=True` an existing checkpoint there is loaded and training
      continues from its step, to bitwise the same result as an uninterrupted run.
    - Divergence: a non-finite loss or gradient raises `DivergenceError` naming the step and
      the first non-finite gradient leaf; no checkpoint is written after it.
    - Speed: `steps_per_call=K` runs K steps per compiled call (`eval_every`, `log_every` and
      `checkpoint_every` must then be multiples of K).
    - Mixed precision: `compute_dtype=jnp.bfloat16` or `jnp.float16` runs the forward, the
      backward and the evaluation in that dtype on float32 master weights (see
      `make_train_step`; the master weights are float32 unless `dtype` says otherwise).
      float16 uses dynamic loss scaling by default (`loss_scale=None`;
      pass False to turn it off, or a `precision.dynamic_loss_scale(...)`); the log records
      then carry the current `loss_scale` and the number of `skipped` (overflowed) steps so
      far, and the scale's state is saved in and resumed from the checkpoints.
    - Devices: with `mesh` (a `jax.sharding.Mesh`, e.g. `jaxbp.distributed.make_mesh()`) each
      step runs data-parallel over its "data" axis (and tensor-parallel over "model"), see
      `jaxbp.distributed`; batch_size must then be a multiple of the data-axis size. `mesh` and
      `compute_dtype` cannot be combined yet (a `ValueError`).
    """
    x_train, y_train = _training_arrays(train_data, batch_size)
    plan = _plan(
        steps,
        steps_per_call,
        log_every,
        eval_data is not None,
        eval_every,
        checkpoint_dir,
        checkpoint_every,
        history_path,
    )
    init_key, data_key = jax.random.split(key)
    scaler = resolve_loss_scale(compute_dtype, loss_scale)
    if compute_dtype is not None and dtype is None:
        dtype = jnp.float32  # the master weights
    state = init_train_state(model, optimizer, init_key, x_train.shape[1:], dtype, scaler)
    float_dtype = _params_dtype(state.params)
    x_train = _as_float(x_train, float_dtype)
    config = {"batch_size": batch_size, "steps_per_call": steps_per_call, "n_train": len(x_train)}
    if compute_dtype is not None:
        config["compute_dtype"] = str(jnp.dtype(compute_dtype))
    state, data_key, history = _restore(checkpoint_dir, resume, state, data_key, config)

    compute = None if compute_dtype is None else jnp.dtype(compute_dtype)
    if mesh is not None and compute is not None:
        raise ValueError(
            f"fit: mesh= and compute_dtype={compute} cannot be combined yet; "
            "train data-parallel in the parameters' dtype, or mixed precision on one device"
        )
    run = _cached(
        _compiled_run, model, loss, optimizer, clip_norm, clip_value, compute, scaler, mesh
    )
    session = _FitSession(
        state=state,
        history=history,
        data_key=data_key,
        plan=plan,
        config=config,
        keep=keep,
        callback=callback,
        evaluator=_Evaluator.make(
            model, loss, metric, metric_name, eval_data, eval_batch_size, float_dtype, compute
        ),
    )
    session.train(run, x_train, y_train, batch_size, steps, progress)
    state = session.state
    return FitResult(state.params, state.model_state, state, session.step, session.history)


class _Plan(NamedTuple):
    """fit's schedule: steps per call, how often to log/evaluate/checkpoint, and where."""

    steps_per_call: int
    log_every: int
    eval_every: int | None
    checkpoint_dir: Any
    checkpoint_every: int | None
    history_path: Path | None


def _plan(
    steps, k, log_every, has_eval, eval_every, checkpoint_dir, checkpoint_every, history_path
) -> _Plan:
    """Fill in fit's defaults (log ≈ every steps/100, eval and checkpoint every 10 logs) and
    check that every period is a multiple of steps_per_call."""
    log_every = log_every or max(k, (max(steps // 100, 1) + k - 1) // k * k)
    if has_eval and eval_every is None:
        eval_every = log_every * 10
    for name, value in [
        ("log_every", log_every),
        ("eval_every", eval_every),
        ("checkpoint_every", checkpoint_every),
    ]:
        _multiple(name, value, k)
    if checkpoint_dir is not None and checkpoint_every is None:
        checkpoint_every = log_every * 10
    if history_path is None and checkpoint_dir is not None:
        history_path = Path(checkpoint_dir) / "history.json"
    history_path = None if history_path is None else Path(history_path)
    return _Plan(k, log_every, eval_every, checkpoint_dir, checkpoint_every, history_path)


def _training_arrays(train_data, batch_size):
    x_train, y_train = (np.asarray(a) for a in train_data)
    n = len(x_train)
    if len(y_train) != n:
        raise ValueError(f"fit: x has {n} rows but y has {len(y_train)}")
    if batch_size > n:
        raise ValueError(f"fit: batch_size={batch_size} is larger than the {n} training rows")
    return x_train, y_train


def _params_dtype(params):
    leaves = jax.tree.leaves(params)
    return leaves[0].dtype if leaves else None


def _as_float(x, float_dtype):
    """Floating-point inputs in the parameters' dtype; integer inputs (ids) unchanged."""
    x = np.asarray(x)
    if float_dtype is not None and jnp.issubdtype(x.dtype, jnp.floating):
        return x.astype(float_dtype)
    return x


def _restore(checkpoint_dir, resume, state, data_key, config):
    """(state, data_key, history) from the newest checkpoint, verified against the fresh
    state's structure and fit's batch config; the fresh ones when there is none."""
    found = ckpt.latest(checkpoint_dir) if (checkpoint_dir is not None and resume) else None
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
    x: np.ndarray
    y: np.ndarray
    batch_size: int
    metric_name: str | None  # None: the progress bar shows the evaluation loss

    @classmethod
    def make(cls, model, loss, metric, metric_name, eval_data, batch_size, float_dtype, compute):
        if eval_data is None:
            return None
        step = _cached(_compiled_eval, model, loss, metric, metric_name, compute)
        ex, ey = eval_data
        name = metric_name if metric is not None else None
        return cls(step, _as_float(ex, float_dtype), np.asarray(ey), batch_size, name)

    def __call__(self, state: TrainState, step: int) -> dict:
        metrics = _evaluate(
            self.step, state.params, state.model_state, self.x, self.y, self.batch_size
        )
        return {"step": step, **metrics}


class _FitSession:
    """The mutable side of `fit`: the training state, the history, and what to do at each
    logging, evaluation and checkpoint step."""

    def __init__(self, *, state, history, data_key, plan, config, keep, callback, evaluator):
        self.state, self.history, self.data_key = state, history, data_key
        self.plan, self.config, self.keep = plan, config, keep
        self.callback, self.evaluator = callback, evaluator
        self.step = int(state.step)
        self.postfix = {}

    def train(self, run, x_train, y_train, batch_size, steps, progress):
        """The loop: K steps per compiled call, then whatever this step is due for."""
        plan = self.plan
        bar = _progress_bar(progress, steps, self.step)
        batches = _Batches(self.data_key, len(x_train), batch_size)
        x_dev, y_dev = jnp.asarray(x_train), jnp.asarray(y_train)
        pending, self.t0 = [], time.perf_counter()
        try:
            while self.step < steps:
                count = min(plan.steps_per_call, steps - self.step)
                stream, start_row = batches.window(self.step, count)
                self.state, losses = run(self.state, x_dev, y_dev, stream, start_row, count=count)
                pending.append(losses)
                self.step += count
                bar.update(count)
                done = self.step >= steps
                eval_now = self.evaluator is not None and (done or self.step % plan.eval_every == 0)
                if done or eval_now or self.step % plan.log_every == 0:
                    self.log(pending, eval_now, bar)
                    pending = []
                save_now = plan.checkpoint_dir is not None and (
                    done or self.step % plan.checkpoint_every == 0
                )
                if save_now:
                    self.check_health()
                    self.save_checkpoint()
                if done or eval_now or save_now:
                    self.write_history()
        finally:
            bar.close()

    def log(self, pending, eval_now, bar):
        """Record the mean training loss since the last log (one transfer) and evaluate."""
        self.check_health()
        mean_loss = float(jnp.mean(jnp.concatenate(pending)))
        record = {"step": self.step, "loss": mean_loss, "time": time.perf_counter() - self.t0}
        if isinstance(self.state.loss_scale, precision.LossScaleState):
            record["loss_scale"] = float(self.state.loss_scale.scale)
            record["skipped"] = int(self.state.loss_scale.skipped)
        self.history["train"].append(record)
        self.postfix["loss"] = f"{mean_loss:.4g}"
        if eval_now:
            ev = self.evaluator(self.state, self.step)
            self.history["eval"].append(ev)
            name = self.evaluator.metric_name
            self.postfix[name or "eval_loss"] = f"{ev.get(name, ev['loss']):.4g}"
        bar.set_postfix(self.postfix, refresh=False)
        if self.callback is not None:
            self.callback(self.step, record)

    def check_health(self):
        """Raise DivergenceError when the divergence guard has frozen the state."""
        state = self.state
        if bool(state.health.ok):
            return
        bad_step = int(state.health.bad_step)
        leaf = _leaf_name(state.params, int(state.health.bad_leaf))
        value = float(state.health.bad_loss)
        plan = self.plan
        last = ckpt.latest(plan.checkpoint_dir) if plan.checkpoint_dir is not None else None
        self.write_history()
        raise DivergenceError(
            f"fit: training diverged at step {bad_step}: loss = {value}, first non-finite "
            f"gradient leaf: {leaf}. The state is frozen at step {bad_step} (last good); "
            + (f"last good checkpoint: {last}. " if last else "no checkpoint was written. ")
            + "Lower the learning rate or clip the gradients (clip_norm=...).",
            step=bad_step,
            leaf=leaf,
            loss=value,
            history=self.history,
            train_state=state,
        )

    def save_checkpoint(self):
        ckpt.save(
            self.plan.checkpoint_dir,
            self.step,
            {"train_state": self.state, "data_key": self.data_key},
            metadata={"history": self.history, "config": self.config},
            keep=self.keep,
        )

    def write_history(self):
        if self.plan.history_path is not None:
            _write_json_atomic(self.plan.history_path, self.history)


def _cached(fn, *args):
    """fn(*args) through its cache, or uncached when an argument is not hashable."""
    try:
        return fn(*args)
    except TypeError as e:
        if "unhashable" not in str(e):
            raise
        return fn.__wrapped__(*args)


@functools.lru_cache(maxsize=16)
def _compiled_run(
    model, loss, optimizer, clip_norm, clip_value, compute_dtype=None, scaler=None, mesh=None
):
    """fit's compiled call `(state, x_all, y_all, stream, start, count=K) -> (state, losses)`:
    K steps whose minibatches are the rows stream[start], ..., stream[start+K−1] (each a
    (batch,) index vector into x_all), sliced and gathered on the device.

    Cached on its arguments, so repeated `fit` calls with the same model, loss and optimizer
    objects reuse one compilation. With a `mesh`, the same call runs over the devices.
    """
    if mesh is not None:
        from jaxbp import distributed

        return distributed.compiled_run(model, loss, optimizer, clip_norm, clip_value, mesh)
    one = make_train_step(
        model,
        loss,
        optimizer,
        clip_norm=clip_norm,
        clip_value=clip_value,
        jit=False,
        compute_dtype=compute_dtype,
        loss_scale=scaler if scaler is not None else False,
    )

    def run(state, x_all, y_all, stream, start, *, count):
        idx = jax.lax.dynamic_slice_in_dim(stream, start, count)  # (K, batch) row indices
        if count == 1:  # one step: no loop around it
            state, value = one(state, x_all[idx[0]], y_all[idx[0]])
            return state, value[None]

        def body(s, rows):
            return one(s, x_all[rows], y_all[rows])

        return jax.lax.scan(body, state, idx)

    return jax.jit(run, donate_argnums=(0,), static_argnames=("count",))


@functools.lru_cache(maxsize=16)
def _compiled_eval(model, loss, metric, metric_name, compute_dtype=None):
    return make_eval_step(model, loss, metric, metric_name, compute_dtype=compute_dtype)


def _progress_bar(enabled, total, initial):
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # tqdm is optional: no bar without it
            enabled = False
    if not enabled:
        return _NoBar()
    return tqdm(total=total, initial=initial, unit="step", desc="fit", dynamic_ncols=True)


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass
