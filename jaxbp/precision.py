"""Precision: float32 accumulation for half-precision arrays, and dynamic loss scaling.

bfloat16 keeps 8 significant bits and float16 11, so a sum of n half-precision terms rounded
at every partial sum loses about log₂ n of them. The layers reduce (sums over the batch for
∂b, normalisation statistics, softmax sums, loss means) through `acc_sum` / `acc_mean`: the
terms are upcast, summed in float32 and the result cast back once. In float32 and float64 the
functions are plain `jnp.sum` / `jnp.mean`.

float16 also has a narrow exponent range: gradients below 2⁻²⁴ ≈ 6e-8 round to zero. Dynamic
loss scaling multiplies the loss (hence every gradient) by a scale S before the backward pass
and divides the float32 gradients by S afterwards:

    g = (1/S) · ∂(S·L)/∂θ          in float32 master weights
    not finite(g)  →  skip the step, S ← S / factor
    `growth_interval` finite steps in a row  →  S ← S · factor

Example:
    >>> import jax.numpy as jnp
    >>> from jaxbp import precision
    >>> x = jnp.full((4096,), 1 / 3, jnp.bfloat16)
    >>> float(precision.acc_sum(x)) == float(jnp.bfloat16(4096 / 3))
    True
    >>> scaler = precision.dynamic_loss_scale(init_scale=2.0**10, growth_interval=2)
    >>> s = scaler.init()
    >>> s = scaler.update(s, jnp.array(False))       # overflow: halve, count the skip
    >>> float(s.scale), int(s.skipped)
    (512.0, 1)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

HALF_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def is_half(dtype) -> bool:
    """True for bfloat16 and float16."""
    return jnp.dtype(dtype) in HALF_DTYPES


def accumulation_dtype(dtype):
    """float32 for bfloat16/float16 (the dtype to sum in), the dtype itself otherwise."""
    return jnp.dtype(jnp.float32) if is_half(dtype) else jnp.dtype(dtype)


def acc_sum(x, axis=None, keepdims: bool = False):
    """Σ x over `axis`, accumulated in float32 for half-precision x, in x's dtype."""
    acc = accumulation_dtype(x.dtype)
    return jnp.sum(x, axis=axis, dtype=acc, keepdims=keepdims).astype(x.dtype)


def acc_mean(x, axis=None, keepdims: bool = False):
    """The mean of x over `axis`, accumulated in float32 for half-precision x, in x's dtype."""
    acc = accumulation_dtype(x.dtype)
    return jnp.mean(x, axis=axis, dtype=acc, keepdims=keepdims).astype(x.dtype)


def cast_floats(tree, dtype):
    """Every floating-point leaf of `tree` cast to `dtype`; integer/bool leaves unchanged."""

    def cast(a):
        return a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a

    return jax.tree.map(cast, tree)


# ------------------------------------------------------------------------ loss scaling


class LossScaleState(NamedTuple):
    """scale: float32 S; good_steps: int32 finite steps since the last change of S;
    skipped: int32 steps skipped so far because the scaled gradients overflowed."""

    scale: jax.Array
    good_steps: jax.Array
    skipped: jax.Array


class DynamicLossScale(NamedTuple):
    """Dynamic loss scaling (see the module docstring): `init() -> LossScaleState` and
    `update(state, finite) -> LossScaleState`, both pure and jit-able."""

    init_scale: float
    growth_interval: int
    factor: float
    min_scale: float

    def init(self) -> LossScaleState:
        return LossScaleState(
            scale=jnp.asarray(self.init_scale, jnp.float32),
            good_steps=jnp.zeros([], jnp.int32),
            skipped=jnp.zeros([], jnp.int32),
        )

    def update(self, state: LossScaleState, finite) -> LossScaleState:
        """After a step: shrink S and count the skip on overflow, grow S after
        `growth_interval` finite steps in a row."""
        good = jnp.where(finite, state.good_steps + 1, 0)
        grow = good >= self.growth_interval
        scale = jnp.where(
            finite,
            jnp.where(grow, state.scale * self.factor, state.scale),
            jnp.maximum(state.scale / self.factor, self.min_scale),
        )
        return LossScaleState(
            scale=scale.astype(jnp.float32),
            good_steps=jnp.where(grow, 0, good).astype(jnp.int32),
            skipped=(state.skipped + jnp.where(finite, 0, 1)).astype(jnp.int32),
        )


def dynamic_loss_scale(
    init_scale: float = 2.0**15,
    growth_interval: int = 200,
    factor: float = 2.0,
    min_scale: float = 1.0,
) -> DynamicLossScale:
    """A dynamic loss scaler: start at `init_scale`, divide by `factor` on every overflow
    (not below `min_scale`), multiply by `factor` after `growth_interval` clean steps."""
    if not init_scale > 0 or not factor > 1 or not min_scale > 0:
        raise ValueError(
            "dynamic_loss_scale: needs init_scale > 0, factor > 1 and min_scale > 0, got "
            f"init_scale={init_scale}, factor={factor}, min_scale={min_scale}"
        )
    if isinstance(growth_interval, bool) or not isinstance(growth_interval, int):
        raise TypeError(
            f"dynamic_loss_scale: growth_interval must be an int, got {growth_interval!r}"
        )
    if growth_interval < 1:
        raise ValueError(f"dynamic_loss_scale: growth_interval must be >= 1, got {growth_interval}")
    return DynamicLossScale(float(init_scale), growth_interval, float(factor), float(min_scale))
