"""The training step: one builder for one device and for a device mesh.

The step is the article's gradient descent, with any optimizer in place of the plain rule:

    L, ∂L/∂θ = loss_and_grad(model, loss)(θ, x, y)      (forward, then the manual backward)
    g        = clip(∂L/∂θ)                              (optional: by global norm, by value)
    u, s     = optimizer.update(g, s, θ)                (sgd: u = −α g)
    θ        ← θ + u

`make_train_step` compiles it as a pure function of a `TrainState` (params, optimizer state,
layer state, step counter, PRNG key, health, loss scale). Every option composes with every
other, on one device or over a mesh:

- `steps_per_call=K`: K steps in one compiled call (`lax.scan`), no per-step dispatch.
- `clip_norm`, `clip_value`: gradient clipping (norm first).
- `guard`: the divergence guard. Each step checks that the loss and every gradient leaf are
  finite; the first step that fails is not applied, the state freezes at the last good values
  and `Health` records the step, the loss and the first non-finite gradient leaf.
- `compute_dtype` (bfloat16, float16): forward and backward in that dtype on the params' own
  (float32 "master") weights; `loss_scale` adds dynamic loss scaling (`jaxbp.precision`),
  skipping a step whose scaled gradients overflow.
- `mesh`: data parallelism over its "data" axis and tensor parallelism over "model"
  (`jaxbp.distributed`): the model runs inside `jax.shard_map` wrapped in `data_parallel`, the
  loss in `data_mean`, so every device applies the same all-reduced gradient.

Example:
    >>> import jax, jax.numpy as jnp, jaxbp
    >>> from jaxbp import losses, optim, step
    >>> model, opt = jaxbp.MLP([8, 1]), optim.sgd(0.1)
    >>> state = step.init_train_state(model, opt, jax.random.key(0), (3,))
    >>> train_step = step.make_train_step(model, losses.mse(), opt, compute_dtype=jnp.bfloat16)
    >>> state, loss = train_step(state, jnp.ones((4, 3)), jnp.zeros((4, 1)))
    >>> int(state.step), bool(loss >= 0)
    (1, True)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxbp import distributed, optim, precision
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


def init_train_state(
    model: Layer, optimizer, key, in_shape, *, dtype=None, loss_scale=None
) -> TrainState:
    """A fresh TrainState: params from `model.init(key, in_shape)` (in_shape: the per-example
    shape, or a pytree of them for pytree inputs), the optimizer's initial state, step 0.

    `dtype` (e.g. jnp.float32) casts the floating-point params; default: as initialised.
    `loss_scale` (a `precision.DynamicLossScale`) adds its initial state.
    """
    init_key, step_key = jax.random.split(key)
    _, params, model_state = model.init(init_key, in_shape)
    if dtype is not None:
        params = precision.cast_floats(params, dtype)
    leaves = jax.tree.leaves(params)
    loss_dtype = jnp.result_type(*leaves) if leaves else float
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
    mesh=None,
    data_axis: str = distributed.DATA,
    steps_per_call: int = 1,
    clip_norm: float | None = None,
    clip_value: float | None = None,
    guard: bool = True,
    compute_dtype=None,
    loss_scale=None,
    donate: bool = True,
    jit: bool = True,
) -> Callable:
    """The compiled training step: `(state, x, y) -> (new_state, loss)`.

    With `steps_per_call=1`, x and y are one minibatch (any pytrees of arrays with a leading
    batch axis; y may hold None) and `loss` is a scalar. With K > 1, every leaf carries a
    leading axis of K minibatches, the K steps run in one call (`lax.scan`), and `loss` holds
    the K losses. `clip_norm` rescales the gradient to a global norm of at most `clip_norm`;
    `clip_value` clips each element to ±clip_value (norm first when both are given). `guard`
    enables the divergence guard (module docstring). `donate` lets XLA reuse the input
    state's buffers (the passed state must not be used after the call); `jit=False` returns
    the plain function.

    Mixed precision: with `compute_dtype` (jnp.bfloat16, jnp.float16) the params stay in their
    own dtype (float32 master weights); each step casts them, the inputs and the layer state
    to `compute_dtype` for the forward and backward, and casts the gradients back before the
    all-reduce, the clipping and the optimizer. `loss_scale` (True, or a
    `precision.dynamic_loss_scale(...)`; the state must come from `init_train_state(...,
    loss_scale=resolve_loss_scale(compute_dtype, loss_scale))`) seeds the backward with S,
    divides the gradients by S and skips a step whose gradients overflow (on for float16
    when None; False turns it off).

    Mesh: with `mesh` the step runs inside `jax.shard_map`: x and y split by rows over
    `data_axis` (which must divide the batch: ValueError otherwise), the state replicated
    except the `ShardedParams` of tensor-parallel layers; the returned state lives on the
    mesh. The jitted call places a host state and batch on the mesh.

    Example:
        >>> import jax, jax.numpy as jnp, jaxbp
        >>> from jaxbp import distributed, losses, optim, step
        >>> model, opt = jaxbp.MLP([8, 1]), optim.sgd(0.1)
        >>> state = step.init_train_state(model, opt, jax.random.key(0), (3,))
        >>> mesh = distributed.make_mesh()                   # every device on "data"
        >>> train_step = step.make_train_step(model, losses.mse(), opt, mesh=mesh)
        >>> state, loss = train_step(state, jnp.ones((4, 3)), jnp.zeros((4, 1)))
        >>> int(state.step)
        1
    """
    if isinstance(steps_per_call, bool) or not isinstance(steps_per_call, int):
        raise TypeError(f"make_train_step: steps_per_call must be an int, got {steps_per_call!r}")
    if steps_per_call < 1:
        raise ValueError(f"make_train_step: steps_per_call must be >= 1, got {steps_per_call}")
    scaler = resolve_loss_scale(compute_dtype, loss_scale)
    if mesh is not None:
        if compute_dtype is not None:  # all-reduce the gradients in the master weights' dtype
            model = _master_grads(model)
        model, loss = (
            distributed.data_parallel(model, axis_name=data_axis),
            distributed.data_mean(loss, axis_name=data_axis),
        )
    one_step = _one_step(
        model, loss, optimizer, clip_norm, clip_value, guard, compute_dtype, scaler
    )
    step = one_step if steps_per_call == 1 else _scanned(one_step)
    leading = 0 if steps_per_call == 1 else 1
    if mesh is not None:
        step = distributed.shard_map_step(step, mesh, data_axis=data_axis, leading=leading)
    if not jit:
        return step
    compiled = jax.jit(step, donate_argnums=(0,) if donate else ())
    if mesh is None:
        return compiled
    return distributed.placed(compiled, mesh, data_axis=data_axis, leading=leading)


def _scanned(one_step):
    def step(state, xs, ys):
        return jax.lax.scan(lambda s, batch: one_step(s, *batch), state, (xs, ys))

    return step


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


def _master_grads(model: Layer) -> Layer:
    """`model` whose parameter gradients come back in float32 (the master weights' dtype), so
    that a data-parallel all-reduce sums them in float32, not in the compute dtype."""

    def backward(params, residuals, dy):
        dparams, dx = model.backward(params, residuals, dy)
        return precision.cast_floats(dparams, jnp.float32), dx

    return Layer(model.init, model.forward, backward, model.name)


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
        new = state._replace(
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
            model_state=model_state,
            step=state.step + 1,
            key=key,
        )
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
