"""Optimizers written out by hand, as `optax.GradientTransformation`s.

Every optimizer here is one `init(params) -> state` and one
`update(grads, state, params=None) -> (updates, new_state)`; apply the updates with
`optax.apply_updates(params, updates)` (θ ← θ + u). They follow optax's conventions exactly
(where ε sits, initial accumulators, bias correction, the Nesterov form), so each one is
interchangeable with the optax optimizer of the same name — the tests run both side by side for
hundreds of steps and demand agreement to 1e-12 — and they compose with `optax.chain`, optax's
clipping and optax's schedules.

Notation (the article's gradient descent is the first line): g = ∂L/∂θ, α_t the learning rate
at step t (a float or a schedule `t -> α_t`, t counted from 0), u the update added to θ.

| constructor                | update                                                           |
|----------------------------|------------------------------------------------------------------|
| `sgd(α)`                   | u = −α g                      (the article's W ← W − α ∂L/∂W)    |
| `sgd(α, momentum=μ)`       | m ← g + μ m,  u = −α m   (Nesterov: u = −α (g + μ m))           |
| `adagrad(α)`               | G ← G + g²,  u = −α g / √(G + ε)                                 |
| `rmsprop(α, decay=ρ)`      | ν ← ρ ν + (1−ρ) g²,  u = −α g / √(ν + ε)                          |
| `rmsprop(..., centered=True)` | also m ← ρ m + (1−ρ) g,  u = −α g / √(ν − m² + ε)             |
| `adam(α, b1, b2)`          | m, ν moving averages, bias-corrected, u = −α m̂ / (√ν̂ + ε)        |
| `adamw(α, ..., weight_decay=λ)` | u = −α (m̂ / (√ν̂ + ε) + λ θ)   (decoupled weight decay)     |

`clip_by_global_norm` and `clip_by_value` are the two usual gradient clippings, also by hand.

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from jaxbp import optim
    >>> opt = optim.adam(1e-2)
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> state = opt.init(params)
    >>> grads = {"w": jnp.array([0.5, -0.5])}
    >>> updates, state = opt.update(grads, state, params)
    >>> [round(float(w), 4) for w in optax.apply_updates(params, updates)["w"]]
    [0.99, -1.99]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

ScalarOrSchedule = float | Callable[[jax.Array], Any]

_MAX_COUNT = jnp.iinfo(jnp.int32).max


# ------------------------------------------------------------------------------ helpers


def _zeros_like(params):
    return jax.tree.map(jnp.zeros_like, params)


def _full_like(params, value):
    return jax.tree.map(lambda p: jnp.full_like(p, value), params)


def _increment(count):
    """count + 1, saturating at the int32 maximum instead of wrapping around."""
    return jnp.where(count < _MAX_COUNT, count + 1, count)


def _scale_by_learning_rate(learning_rate: ScalarOrSchedule, count, updates):
    """u = −α_t · updates, with α_t = learning_rate(count) for a schedule."""
    if callable(learning_rate):
        alpha = learning_rate(count)
        return jax.tree.map(lambda u: jnp.array(-alpha, dtype=u.dtype) * u, updates)
    return jax.tree.map(lambda u: -learning_rate * u, updates)


@functools.partial(jax.jit, inline=True)  # traced once, so eager use does not recompile
def _bias_correction(moment, decay, count):
    """m̂ = m / (1 − decay^count): undoes the pull of the zero initialisation."""
    correction = 1 - decay**count
    return jax.tree.map(lambda m: m / correction.astype(m.dtype), moment)


def _check_lr(name, learning_rate):
    if not callable(learning_rate) and not isinstance(learning_rate, (int, float, jax.Array)):
        raise TypeError(
            f"{name}: learning_rate must be a number or a schedule (callable step -> rate), "
            f"got {type(learning_rate).__name__}"
        )


def _check_decay(name, what, value, *, allow_one=False):
    if isinstance(value, (int, float)) and not (0 <= value < 1 or (allow_one and value == 1)):
        raise ValueError(f"{name}: {what} must be in [0, 1), got {value}")


def _momentum_trace(trace, updates, momentum, nesterov):
    """m ← u + μ m; returns (the update to emit, the new trace)."""
    new_trace = jax.tree.map(lambda u, m: u + momentum * m, updates, trace)
    if nesterov:
        out = jax.tree.map(lambda u, m: u + momentum * m, updates, new_trace)
    else:
        out = new_trace
    return out, new_trace


# ---------------------------------------------------------------------------------- SGD


class SGDState(NamedTuple):
    """State of `sgd`.

    count: int32 scalar, the number of updates made so far (the schedule's step t).
    momentum: the velocity m (a pytree like params), or () when momentum is off.
    """

    count: jax.Array
    momentum: Any


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float | None = None,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    Plain:       u_t = −α_t g_t                       (θ ← θ − α ∂L/∂θ)
    Momentum:    m_t = g_t + μ m_{t−1},  u_t = −α_t m_t
    Nesterov:    m_t = g_t + μ m_{t−1},  u_t = −α_t (g_t + μ m_t)

    m_0 = 0. Matches `optax.sgd(learning_rate, momentum, nesterov)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxbp import optim
        >>> opt = optim.sgd(0.1, momentum=0.9)
        >>> state = opt.init(jnp.zeros(2))
        >>> u, state = opt.update(jnp.ones(2), state)
        >>> u, state = opt.update(jnp.ones(2), state)
        >>> [round(float(v), 6) for v in u]  # −0.1 · (1 + 0.9 · 1)
        [-0.19, -0.19]
    """
    _check_lr("sgd", learning_rate)
    if momentum is not None:
        _check_decay("sgd", "momentum", momentum)
    if nesterov and momentum is None:
        raise ValueError("sgd: nesterov=True needs a momentum, e.g. sgd(lr, momentum=0.9)")

    def init(params):
        trace = _zeros_like(params) if momentum is not None else ()
        return SGDState(jnp.zeros([], jnp.int32), trace)

    def update(grads, state, params=None):
        del params
        if momentum is not None:
            direction, trace = _momentum_trace(state.momentum, grads, momentum, nesterov)
        else:
            direction, trace = grads, ()
        updates = _scale_by_learning_rate(learning_rate, state.count, direction)
        return updates, SGDState(_increment(state.count), trace)

    return optax.GradientTransformation(init, update)


# ------------------------------------------------------------------------------ AdaGrad


class AdaGradState(NamedTuple):
    """State of `adagrad`.

    count: int32 scalar, updates made so far.
    sum_of_squares: G = G_0 + Σ_s g_s², a pytree like params (G_0 = initial_accumulator_value).
    """

    count: jax.Array
    sum_of_squares: Any


def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
) -> optax.GradientTransformation:
    """AdaGrad: each weight's step shrinks with the gradients it has seen.

        G_t = G_{t−1} + g_t²,     G_0 = initial_accumulator_value
        u_t = −α_t g_t / √(G_t + ε)      (and u_t = 0 where G_t = 0)

    ε sits inside the square root, as in optax. Matches `optax.adagrad`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxbp import optim
        >>> opt = optim.adagrad(1.0, initial_accumulator_value=0.0, eps=0.0)
        >>> state = opt.init(jnp.zeros(1))
        >>> u, state = opt.update(jnp.array([3.0]), state)
        >>> u.tolist()  # −3 / √9
        [-1.0]
    """
    _check_lr("adagrad", learning_rate)
    if initial_accumulator_value < 0:
        raise ValueError(
            f"adagrad: initial_accumulator_value must be >= 0, got {initial_accumulator_value}"
        )

    def init(params):
        return AdaGradState(jnp.zeros([], jnp.int32), _full_like(params, initial_accumulator_value))

    def update(grads, state, params=None):
        del params
        G = jax.tree.map(lambda g, s: g * g + s, grads, state.sum_of_squares)
        inv_root = jax.tree.map(lambda s: jnp.where(s > 0, jax.lax.rsqrt(s + eps), 0.0), G)
        direction = jax.tree.map(lambda r, g: r * g, inv_root, grads)
        updates = _scale_by_learning_rate(learning_rate, state.count, direction)
        return updates, AdaGradState(_increment(state.count), G)

    return optax.GradientTransformation(init, update)


# ------------------------------------------------------------------------------ RMSprop


class RMSpropState(NamedTuple):
    """State of `rmsprop`.

    count: int32 scalar, updates made so far (also the bias-correction step when enabled).
    nu: ν, moving average of g², a pytree like params (starts at initial_scale).
    mu: m, moving average of g (only when centered; else ()).
    momentum: velocity of the optional momentum applied after the scaling (else ()).
    """

    count: jax.Array
    nu: Any
    mu: Any
    momentum: Any


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: float | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> optax.GradientTransformation:
    """RMSprop: divide each weight's gradient by a running root-mean-square of its gradients.

        ν_t = ρ ν_{t−1} + (1 − ρ) g_t²                       ν_0 = initial_scale
        m_t = ρ m_{t−1} + (1 − ρ) g_t     (centered only)     m_0 = 0
        s_t = ν_t − m_t²  if centered else ν_t
        u_t = −α_t g_t / √(s_t + ε)       (eps_in_sqrt=True, the default)
        u_t = −α_t g_t / (√s_t + ε)       (eps_in_sqrt=False)

    With `bias_correction`, ν and m are divided by (1 − ρ^{t+1}) first. With `momentum` μ, the
    scaled step then goes through a velocity: v_t = u_t + μ v_{t−1}, emitted as v_t (or
    u_t + μ v_t for Nesterov) — the order optax uses. Matches `optax.rmsprop` argument for
    argument.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxbp import optim
        >>> opt = optim.rmsprop(0.1, decay=0.75, eps=0.0)
        >>> state = opt.init(jnp.zeros(1))
        >>> u, state = opt.update(jnp.array([2.0]), state)
        >>> [round(float(v), 6) for v in u]  # −0.1 · 2 / √(0.25 · 4)
        [-0.2]
    """
    _check_lr("rmsprop", learning_rate)
    _check_decay("rmsprop", "decay", decay)
    if momentum is not None:
        _check_decay("rmsprop", "momentum", momentum)
    if nesterov and momentum is None:
        raise ValueError("rmsprop: nesterov=True needs a momentum")

    def init(params):
        return RMSpropState(
            count=jnp.zeros([], jnp.int32),
            nu=_full_like(params, initial_scale),
            mu=_zeros_like(params) if centered else (),
            momentum=_zeros_like(params) if momentum is not None else (),
        )

    def update(grads, state, params=None):
        del params
        count_inc = _increment(state.count)
        nu = jax.tree.map(lambda g, n: (1 - decay) * (g * g) + decay * n, grads, state.nu)
        nu_hat = _bias_correction(nu, decay, count_inc) if bias_correction else nu
        if centered:
            mu = jax.tree.map(lambda g, m: (1 - decay) * g + decay * m, grads, state.mu)
            mu_hat = _bias_correction(mu, decay, count_inc) if bias_correction else mu
            second = jax.tree.map(lambda n, m: n - m * m, nu_hat, mu_hat)  # variance of g
        else:
            mu, second = (), nu_hat
        if eps_in_sqrt:
            scaling = jax.tree.map(lambda s: jax.lax.rsqrt(s + eps), second)
        else:
            scaling = jax.tree.map(lambda s: 1 / (jnp.sqrt(s) + eps), second)
        direction = jax.tree.map(lambda s, g: s * g, scaling, grads)
        updates = _scale_by_learning_rate(learning_rate, state.count, direction)
        trace = ()
        if momentum is not None:
            updates, trace = _momentum_trace(state.momentum, updates, momentum, nesterov)
        return updates, RMSpropState(count_inc, nu, mu, trace)

    return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------------------- Adam(W)


class AdamState(NamedTuple):
    """State of `adam` and `adamw`.

    count: int32 scalar t, updates made so far (bias correction uses t + 1).
    mu: m, moving average of g (first moment), a pytree like params.
    nu: ν, moving average of g² (second moment), a pytree like params.
    """

    count: jax.Array
    mu: Any
    nu: Any


def _adam(
    name,
    learning_rate,
    b1,
    b2,
    eps,
    eps_root,
    nesterov,
    weight_decay=None,
    mask=None,
) -> optax.GradientTransformation:
    _check_lr(name, learning_rate)
    _check_decay(name, "b1", b1)
    _check_decay(name, "b2", b2)

    def init(params):
        return AdamState(jnp.zeros([], jnp.int32), _zeros_like(params), _zeros_like(params))

    def update(grads, state, params=None):
        mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, grads, state.mu)
        nu = jax.tree.map(lambda g, n: (1 - b2) * (g * g) + b2 * n, grads, state.nu)
        t = _increment(state.count)  # steps taken, counting this one
        if nesterov:  # m̂ = β₁ m_t / (1 − β₁^{t+1}) + (1 − β₁) g_t / (1 − β₁^t)
            mu_hat = jax.tree.map(
                lambda m, g: b1 * m + (1 - b1) * g,
                _bias_correction(mu, b1, _increment(t)),
                _bias_correction(grads, b1, t),
            )
        else:  # m̂ = m_t / (1 − β₁^t)
            mu_hat = _bias_correction(mu, b1, t)
        nu_hat = _bias_correction(nu, b2, t)  # ν̂ = ν_t / (1 − β₂^t)
        direction = jax.tree.map(lambda m, v: m / (jnp.sqrt(v + eps_root) + eps), mu_hat, nu_hat)
        if weight_decay is not None:  # decoupled: + λ θ, outside the adaptive scaling
            if params is None:
                raise ValueError(f"{name}: update needs params for the weight decay")
            lam = weight_decay(state.count) if callable(weight_decay) else weight_decay
            keep = _mask_tree(mask, params)
            direction = jax.tree.map(
                lambda d, p, k: d + lam * p if k else d, direction, params, keep
            )
        updates = _scale_by_learning_rate(learning_rate, state.count, direction)
        return updates, AdamState(t, mu, nu)

    return optax.GradientTransformation(init, update)


def _mask_tree(mask, params):
    """A pytree of Python bools like params: which leaves get weight decay."""
    if mask is None:
        return jax.tree.map(lambda _: True, params)
    tree = mask(params) if callable(mask) else mask
    return jax.tree.map(bool, tree)


def adam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """Adam: momentum on g, scaled by a running RMS of g, both bias-corrected.

        m_t = β₁ m_{t−1} + (1 − β₁) g_t,        ν_t = β₂ ν_{t−1} + (1 − β₂) g_t²
        m̂_t = m_t / (1 − β₁^t),                 ν̂_t = ν_t / (1 − β₂^t)
        u_t = −α_t m̂_t / (√(ν̂_t + ε_root) + ε)

    t counts from 1 here (m_0 = ν_0 = 0); ε sits outside the root, ε_root inside. With
    `nesterov=True` (NAdam), m̂_t = β₁ m_t / (1 − β₁^{t+1}) + (1 − β₁) g_t / (1 − β₁^t).
    Matches `optax.adam`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxbp import optim
        >>> opt = optim.adam(0.1)
        >>> state = opt.init(jnp.zeros(2))
        >>> u, state = opt.update(jnp.array([3.0, -0.01]), state)
        >>> [round(float(v), 4) for v in u]  # the first step is ≈ −α sign(g), whatever |g|
        [-0.1, 0.1]
    """
    return _adam("adam", learning_rate, b1, b2, eps, eps_root, nesterov)


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask=None,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """AdamW: Adam plus weight decay applied to θ directly, not through the gradient.

        u_t = −α_t (m̂_t / (√(ν̂_t + ε_root) + ε) + λ θ_{t−1})

    with m̂, ν̂ as in `adam`. `mask` (a pytree of bools like params, or a function of params
    returning one) selects the leaves that decay — commonly the weights but not the biases.
    `weight_decay` may be a schedule. Matches `optax.adamw`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxbp import optim
        >>> opt = optim.adamw(0.1, weight_decay=0.5)
        >>> params = jnp.array([2.0])
        >>> u, _ = opt.update(jnp.array([0.0]), opt.init(params), params)
        >>> [round(float(v), 6) for v in u]  # zero gradient: only the decay −α λ θ = −0.1 · 0.5 · 2
        [-0.1]
    """
    return _adam("adamw", learning_rate, b1, b2, eps, eps_root, nesterov, weight_decay, mask)


# ----------------------------------------------------------------------------- clipping


class EmptyState(NamedTuple):
    """The clippings keep no state."""


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """Rescale the whole gradient when its global norm exceeds `max_norm`.

        ‖g‖ = √(Σ_leaves Σ g²);   g ← g                      if ‖g‖ < max_norm
                                   g ← g · max_norm / ‖g‖    otherwise

    The direction is kept; only the length is capped. Matches `optax.clip_by_global_norm`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxbp import optim
        >>> u, _ = optim.clip_by_global_norm(1.0).update(jnp.array([3.0, 4.0]), optim.EmptyState())
        >>> [round(float(v), 6) for v in u]
        [0.6, 0.8]
    """
    if not max_norm > 0:
        raise ValueError(f"clip_by_global_norm: max_norm must be > 0, got {max_norm}")

    def init(params):
        del params
        return EmptyState()

    def update(grads, state, params=None):
        del params
        norm = global_norm(grads)
        inside = norm < max_norm
        grads = jax.tree.map(
            lambda g: jax.lax.select(inside, g, (g / norm.astype(g.dtype)) * max_norm), grads
        )
        return grads, state

    return optax.GradientTransformation(init, update)


def clip_by_value(limit: float) -> optax.GradientTransformation:
    """Clip every gradient element to [−limit, limit]. Matches `optax.clip(limit)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxbp import optim
        >>> u, _ = optim.clip_by_value(1.0).update(jnp.array([-3.0, 0.5]), optim.EmptyState())
        >>> u.tolist()
        [-1.0, 0.5]
    """
    if not limit > 0:
        raise ValueError(f"clip_by_value: limit must be > 0, got {limit}")

    def init(params):
        del params
        return EmptyState()

    def update(grads, state, params=None):
        del params
        return jax.tree.map(lambda g: jnp.clip(g, -limit, limit), grads), state

    return optax.GradientTransformation(init, update)


def global_norm(tree) -> jax.Array:
    """√(Σ over all leaves of Σ x²), the Euclidean norm of the flattened pytree."""
    return jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(tree)))


__all__ = [
    "AdaGradState",
    "AdamState",
    "EmptyState",
    "RMSpropState",
    "SGDState",
    "adagrad",
    "adam",
    "adamw",
    "clip_by_global_norm",
    "clip_by_value",
    "global_norm",
    "rmsprop",
    "sgd",
]
