"""Losses as forward/backward pairs.

A `Loss` is a NamedTuple of two pure functions::

    forward(pred, target)   -> (value, residuals)     value is a scalar
    backward(residuals, g=1) -> dpred                  dpred = g · ∂L/∂pred

`target` gets no gradient. All losses average over the batch (the first axis), so the gradient
carries the 1/n of that mean explicitly — keep it in mind when you shard the batch.

| constructor                     | L                                                   |
|---------------------------------|-----------------------------------------------------|
| `half_mse()` (the article's)    | 1/(2n) Σᵢ ‖yᵢ − ŷᵢ‖²                                |
| `mse()`                         | mean over all elements of (y − ŷ)²                  |
| `softmax_cross_entropy()`       | −1/n Σᵢ Σ_c tᵢc log softmax(zᵢ)_c (labels or probs) |
| `sigmoid_binary_cross_entropy()`| 1/n Σ mean_k [softplus(z) − t z] (from logits)      |

Example:
    >>> import jax.numpy as jnp
    >>> from jaxbp import losses
    >>> loss = losses.half_mse()
    >>> value, res = loss.forward(jnp.array([[1.0], [3.0]]), jnp.array([[0.0], [1.0]]))
    >>> float(value), loss.backward(res).tolist()
    (1.25, [[0.5], [1.0]])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbp.activations import log_softmax, sigmoid, softplus
from jaxbp.layer import check_float_input
from jaxbp.precision import acc_sum, accumulation_dtype


class Loss(NamedTuple):
    forward: Callable
    backward: Callable
    name: str = "Loss"


def _check_same_shape(name, pred, target):
    check_float_input(name, pred)
    if jnp.shape(pred) != jnp.shape(target):
        raise ValueError(
            f"{name}: prediction and target must have the same shape, got prediction "
            f"{tuple(jnp.shape(pred))} and target {tuple(jnp.shape(target))}"
        )
    if jnp.ndim(pred) < 1:
        raise ValueError(f"{name}: expected a batch axis, got a scalar prediction")


# ------------------------------------------------------------------------------------ MSE


class MSEResiduals(NamedTuple):
    err: jax.Array  # ŷ − y, shape of pred
    scale: float  # L = scale · Σ err²


def _squared_error(name: str, per_sample: bool) -> Loss:
    def forward(pred, target):
        _check_same_shape(name, pred, target)
        err = pred - target.astype(pred.dtype)
        n = pred.shape[0] if per_sample else pred.size
        scale = 0.5 / n if per_sample else 1.0 / n
        return scale * acc_sum(err * err), MSEResiduals(err, scale)  # Σ in float32 for halves

    def backward(residuals, g=1.0):
        err, scale = residuals
        return (2 * scale * g) * err  # ∂/∂ŷ of scale Σ (ŷ − y)²

    return Loss(forward, backward, name)


def half_mse() -> Loss:
    """The article's L = 1/(2n) Σᵢ ‖yᵢ − ŷᵢ‖², n = batch size; ∂L/∂ŷ = (ŷ − y)/n."""
    return _squared_error("half_mse", per_sample=True)


def mse() -> Loss:
    """L = mean of (y − ŷ)² over all elements (m of them); ∂L/∂ŷ = 2(ŷ − y)/m."""
    return _squared_error("mse", per_sample=False)


# ------------------------------------------------------------------ softmax cross-entropy


class CrossEntropyResiduals(NamedTuple):
    probs: jax.Array  # softmax(z), (n, classes); float32 for half-precision logits
    target: jax.Array  # t as probabilities, (n, classes), in the logits' dtype


def softmax_cross_entropy() -> Loss:
    """L = −1/n Σᵢ Σ_c tᵢc log softmax(zᵢ)_c, from logits z of shape (n, classes).

    `target` is either integer labels of shape (n,) or probabilities of shape (n, classes).
    ∂L/∂z = (softmax(z) Σ_c t_c − t) / n, which is (p − onehot)/n for labels. The log-softmax is
    shifted by its max, so logits of any magnitude give a finite value and gradient.
    """
    name = "softmax_cross_entropy"

    def forward(logits, target):
        check_float_input(name, logits)
        if logits.ndim != 2:
            raise ValueError(f"{name}: expected logits (batch, classes), got {logits.shape}")
        n, classes = logits.shape
        if jnp.issubdtype(jnp.result_type(target), jnp.integer):
            if target.shape != (n,):
                raise ValueError(
                    f"{name}: integer labels must have shape ({n},) for logits {logits.shape}, "
                    f"got {target.shape}"
                )
            target = jax.nn.one_hot(target, classes, dtype=logits.dtype)
        elif target.shape != logits.shape:
            raise ValueError(
                f"{name}: probability targets must have the logits' shape {logits.shape}, "
                f"got {target.shape}"
            )
        target = target.astype(logits.dtype)
        # half-precision logits: log-softmax, its sums and the probabilities in float32
        logp = log_softmax(logits.astype(accumulation_dtype(logits.dtype)))
        value = (-jnp.sum(target * logp) / n).astype(logits.dtype)
        return value, CrossEntropyResiduals(jnp.exp(logp), target)

    def backward(residuals, g=1.0):
        p, t = residuals
        n = p.shape[0]
        return ((g / n) * (p * t.sum(axis=-1, keepdims=True) - t)).astype(t.dtype)

    return Loss(forward, backward, name)


# -------------------------------------------------------------------- binary cross-entropy


class BinaryCrossEntropyResiduals(NamedTuple):
    logits: jax.Array  # z
    target: jax.Array  # t ∈ [0, 1], same shape


def sigmoid_binary_cross_entropy() -> Loss:
    """L = mean of −[t log σ(z) + (1 − t) log(1 − σ(z))] = mean of softplus(z) − t z.

    Averaged over all elements (batch and outputs). From logits, so finite for any z;
    ∂L/∂z = (σ(z) − t) / m with m the number of elements.
    """
    name = "sigmoid_binary_cross_entropy"

    def forward(logits, target):
        _check_same_shape(name, logits, target)
        t = target.astype(logits.dtype)
        z = logits.astype(accumulation_dtype(logits.dtype))  # float32 for half precision
        value = jnp.mean(softplus(z) - t * z).astype(logits.dtype)
        return value, BinaryCrossEntropyResiduals(logits, t)

    def backward(residuals, g=1.0):
        z, t = residuals
        acc = accumulation_dtype(z.dtype)
        return ((g / z.size) * (sigmoid(z.astype(acc)) - t)).astype(z.dtype)

    return Loss(forward, backward, name)


# --------------------------------------------------------------------- multi-task losses


def multi_task(*losses: Loss, weights=None) -> Loss:
    """L = Σ_k w_k L_k(pred_k, target_k) for a `parallel` model with one head per task.

    `pred` and `target` are tuples; backward hands each head g · w_k · ∂L_k/∂pred_k.
    """
    weights = tuple(1.0 for _ in losses) if weights is None else tuple(weights)
    if len(weights) != len(losses):
        raise ValueError(f"multi_task: {len(losses)} losses but {len(weights)} weights")
    name = "multi_task(" + ", ".join(loss.name for loss in losses) + ")"

    def forward(pred, target):
        if len(pred) != len(losses) or len(target) != len(losses):
            raise ValueError(
                f"{name}: expected {len(losses)} predictions and targets, "
                f"got {len(pred)} and {len(target)}"
            )
        values, residuals = zip(*(loss.forward(p, t) for loss, p, t in zip(losses, pred, target)))
        return sum(w * v for w, v in zip(weights, values)), tuple(residuals)

    def backward(residuals, g=1.0):
        return tuple(loss.backward(r, g * w) for loss, r, w in zip(losses, residuals, weights))

    return Loss(forward, backward, name)
