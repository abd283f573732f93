"""Activations a = f(z), as plain functions with their derivatives f′ and as layers.

Each activation comes three ways:

* `f(z)`: the function, e.g. `sigmoid(z)`;
* `f_prime(z)`: its derivative f′(z) elementwise, e.g. `sigmoid_prime(z)` (softmax and
  log-softmax have Jacobians, not derivatives: see their `*_backward`);
* a layer, e.g. `Sigmoid()`, whose backward is dz = f′(z) ⊙ da — the ⊙ f′(zˡ) of the backprop
  recursion δˡ = (δˡ⁺¹ Wˡ⁺¹ᵀ) ⊙ f′(zˡ).

Where f′ can be written from the output a = f(z), the layer keeps `a` instead of `z` (the next
layer keeps `a` anyway, so this costs no memory): sigmoid a(1−a), tanh 1−a², relu [a>0],
leaky relu, elu (a+α for z<0), softplus 1−e^{−a}.

Kinks: at z = 0 the layers use the left derivative: ReLU′(0) = 0 (as `jax.nn.relu`),
LeakyReLU′(0) = α, ELU′(0) = α.

Example:
    >>> import jax.numpy as jnp
    >>> from jaxbp import activations as act
    >>> float(act.sigmoid_prime(jnp.array(0.0)))
    0.25
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

from jaxbp.layer import Layer, as_shape, check_float_input
from jaxbp.precision import accumulation_dtype


class Output(NamedTuple):
    a: jax.Array  # the layer's output a = f(z), same shape as z


class Input(NamedTuple):
    z: jax.Array  # the layer's input z


def _activation(name: str, f: Callable, backward_from: Callable, keep: str) -> Layer:
    """Layer for an elementwise (or last-axis) map a = f(z).

    `backward_from(kept, da) -> dz`, where `kept` is the output a (keep='a') or the input z.
    Half-precision inputs are mapped (and softmax-sums taken) in float32 and rounded once.
    """

    def init(key, in_shape):
        return as_shape(in_shape), (), ()

    def forward(params, state, z, *, key=None, train=False):
        check_float_input(name, z)
        a = f(z.astype(accumulation_dtype(z.dtype))).astype(z.dtype)
        return a, (Output(a) if keep == "a" else Input(z)), state

    def backward(params, residuals, da):
        acc = accumulation_dtype(da.dtype)
        return (), backward_from(residuals[0].astype(acc), da.astype(acc)).astype(da.dtype)

    return Layer(init, forward, backward, name)


# ------------------------------------------------------------------------------- identity


def identity(z):
    return z


def identity_prime(z):
    return jnp.ones_like(z)


def Identity() -> Layer:
    """a = z; dz = da."""
    return _activation("Identity", identity, lambda a, da: da, keep="a")


# -------------------------------------------------------------------------------- sigmoid


def sigmoid(z):
    """σ(z) = 1 / (1 + e^{−z}), computed without overflow for large |z|."""
    return jax.nn.sigmoid(z)


def sigmoid_prime(z):
    s = sigmoid(z)
    return s * (1 - s)


def Sigmoid() -> Layer:
    """a = σ(z); dz = a (1 − a) ⊙ da."""
    return _activation("Sigmoid", sigmoid, lambda a, da: da * a * (1 - a), keep="a")


# ----------------------------------------------------------------------------------- tanh


def tanh(z):
    return jnp.tanh(z)


def tanh_prime(z):
    return 1 - jnp.tanh(z) ** 2


def Tanh() -> Layer:
    """a = tanh(z); dz = (1 − a²) ⊙ da."""
    return _activation("Tanh", tanh, lambda a, da: da * (1 - a * a), keep="a")


# ----------------------------------------------------------------------------------- relu


def relu(z):
    return jnp.maximum(z, 0)


def relu_prime(z):
    """[z > 0]; 0 at the kink z = 0."""
    return (z > 0).astype(z.dtype)


def Relu() -> Layer:
    """a = max(z, 0); dz = [a > 0] ⊙ da (a > 0 exactly when z > 0; ReLU′(0) = 0)."""
    return _activation("Relu", relu, lambda a, da: jnp.where(a > 0, da, 0), keep="a")


# ----------------------------------------------------------------------------- leaky relu


def leaky_relu(z, negative_slope: float = 0.01):
    return jnp.where(z > 0, z, negative_slope * z)


def leaky_relu_prime(z, negative_slope: float = 0.01):
    """1 for z > 0, α for z ≤ 0 (left derivative at the kink)."""
    return jnp.where(z > 0, 1.0, negative_slope).astype(z.dtype)


def LeakyRelu(*, negative_slope: float = 0.01) -> Layer:
    """a = z for z > 0, α z otherwise; dz = (1 or α) ⊙ da, read from the sign of a (α ≥ 0)."""
    name = f"LeakyRelu({negative_slope})"
    if not isinstance(negative_slope, int | float) or not negative_slope >= 0:
        raise ValueError(f"{name}: negative_slope must be a number >= 0, got {negative_slope!r}")
    return _activation(
        name,
        lambda z: leaky_relu(z, negative_slope),
        lambda a, da: jnp.where(a > 0, da, negative_slope * da),
        keep="a",
    )


# ------------------------------------------------------------------------------------ elu


def elu(z, alpha: float = 1.0):
    """z for z > 0, α (e^z − 1) otherwise (expm1 for accuracy near 0; no overflow for z ≫ 0)."""
    return jnp.where(z > 0, z, alpha * jnp.expm1(jnp.minimum(z, 0)))


def elu_prime(z, alpha: float = 1.0):
    return jnp.where(z > 0, 1.0, alpha * jnp.exp(jnp.minimum(z, 0))).astype(z.dtype)


def Elu(*, alpha: float = 1.0) -> Layer:
    """a = elu(z); dz = da for a > 0, (a + α) ⊙ da otherwise (since α e^z = a + α), α > 0."""
    name = f"Elu({alpha})"
    if not isinstance(alpha, int | float) or not alpha > 0:
        raise ValueError(f"{name}: alpha must be a number > 0, got {alpha!r}")
    return _activation(
        name,
        lambda z: elu(z, alpha),
        lambda a, da: jnp.where(a > 0, da, (a + alpha) * da),
        keep="a",
    )


# ----------------------------------------------------------------------------------- gelu

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def gelu(z, approximate: bool = False):
    """z Φ(z) (exact, with erf) or its tanh form 0.5 z (1 + tanh(√(2/π)(z + 0.044715 z³)))."""
    if approximate:
        return 0.5 * z * (1 + jnp.tanh(_SQRT_2_OVER_PI * (z + 0.044715 * z**3)))
    return 0.5 * z * (1 + erf(z * _INV_SQRT_2))


def gelu_prime(z, approximate: bool = False):
    """Exact: Φ(z) + z φ(z).  Tanh form: 0.5(1 + t) + 0.5 z (1 − t²) √(2/π)(1 + 3·0.044715 z²)."""
    if approximate:
        t = jnp.tanh(_SQRT_2_OVER_PI * (z + 0.044715 * z**3))
        return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 0.134145 * z * z)
    cdf = 0.5 * (1 + erf(z * _INV_SQRT_2))
    pdf = _INV_SQRT_2PI * jnp.exp(-0.5 * z * z)
    return cdf + z * pdf


def Gelu(*, approximate: bool = False) -> Layer:
    """a = gelu(z); dz = gelu′(z) ⊙ da (keeps z)."""
    name = "Gelu(tanh)" if approximate else "Gelu"
    return _activation(
        name,
        lambda z: gelu(z, approximate),
        lambda z, da: gelu_prime(z, approximate) * da,
        keep="z",
    )


# ------------------------------------------------------------------------------- softplus


def softplus(z):
    """log(1 + e^z) = max(z, 0) + log1p(e^{−|z|}): finite for any z."""
    return jnp.maximum(z, 0) + jnp.log1p(jnp.exp(-jnp.abs(z)))


def softplus_prime(z):
    return sigmoid(z)


def Softplus() -> Layer:
    """a = softplus(z); dz = σ(z) ⊙ da = (1 − e^{−a}) ⊙ da, computed as −expm1(−a)."""
    return _activation("Softplus", softplus, lambda a, da: -jnp.expm1(-a) * da, keep="a")


# ----------------------------------------------------------------------------------- silu


def silu(z):
    """z σ(z) (swish)."""
    return z * sigmoid(z)


def silu_prime(z):
    s = sigmoid(z)
    return s * (1 + z * (1 - s))


def Silu() -> Layer:
    """a = z σ(z); dz = σ(z)(1 + z(1 − σ(z))) ⊙ da (keeps z)."""
    return _activation("Silu", silu, lambda z, da: silu_prime(z) * da, keep="z")


# ------------------------------------------------------------------- softmax, log-softmax


def softmax(z, axis: int = -1):
    """e^{z_i − max z} / Σ_j e^{z_j − max z} (shifted so no exponent overflows)."""
    e = jnp.exp(z - jax.lax.stop_gradient(z.max(axis=axis, keepdims=True)))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_backward(a, da, axis: int = -1):
    """Jacobian-vector product of softmax: dz = a ⊙ (da − Σ_j a_j da_j)."""
    return a * (da - (a * da).sum(axis=axis, keepdims=True))


def log_softmax(z, axis: int = -1):
    """z − logsumexp(z), with the max subtracted first."""
    shifted = z - jax.lax.stop_gradient(z.max(axis=axis, keepdims=True))
    return shifted - jnp.log(jnp.exp(shifted).sum(axis=axis, keepdims=True))


def log_softmax_backward(a, da, axis: int = -1):
    """With a = log softmax(z): dz = da − softmax(z) Σ_j da_j, softmax(z) = e^a."""
    return da - jnp.exp(a) * da.sum(axis=axis, keepdims=True)


def Softmax(*, axis: int = -1) -> Layer:
    """a = softmax(z) over `axis`; dz = a ⊙ (da − ⟨a, da⟩)."""
    return _activation(
        "Softmax", lambda z: softmax(z, axis), lambda a, da: softmax_backward(a, da, axis), "a"
    )


def LogSoftmax(*, axis: int = -1) -> Layer:
    """a = log softmax(z) over `axis`; dz = da − e^a Σ da."""
    return _activation(
        "LogSoftmax",
        lambda z: log_softmax(z, axis),
        lambda a, da: log_softmax_backward(a, da, axis),
        "a",
    )
