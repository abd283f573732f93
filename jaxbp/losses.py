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

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxbp.activations import log_softmax, sigmoid, softplus
from jaxbp.indices import check_range
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
    probs: jax.Array  # softmax(z), (..., classes); float32 for half-precision logits
    target: jax.Array  # t as probabilities, (..., classes), in the logits' dtype


def softmax_cross_entropy() -> Loss:
    """L = −1/n Σᵢ Σ_c tᵢc log softmax(zᵢ)_c, from logits z of shape (n, classes), or of any
    shape (..., classes) whose leading axes together hold the n rows.

    `target` is either integer labels of the logits' leading shape, or probabilities of the
    logits' shape. ∂L/∂z = (softmax(z) Σ_c t_c − t) / n, which is (p − onehot)/n for labels. A
    zero probability row adds nothing to the value or the gradient (a masked row). The
    log-softmax is shifted by its max, so logits of any magnitude give a finite value and
    gradient.

    Labels must lie in [0, classes): ValueError otherwise, or under `jit` a checkify error inside
    `jaxbp.indices.checked`; under `jit` without it an out-of-range label is a zero target row
    (that example adds nothing to the loss or the gradient).

    Example:
        >>> import jax.numpy as jnp
        >>> ce = softmax_cross_entropy()
        >>> value, res = ce.forward(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3), jnp.int32))
        >>> round(float(value), 4), ce.backward(res).shape   # log 4
        (1.3863, (2, 3, 4))
    """
    name = "softmax_cross_entropy"

    def forward(logits, target):
        check_float_input(name, logits)
        if logits.ndim < 2:
            raise ValueError(f"{name}: expected logits (batch, ..., classes), got {logits.shape}")
        *lead, classes = logits.shape
        if jnp.issubdtype(jnp.result_type(target), jnp.integer):
            if target.shape != tuple(lead):
                raise ValueError(
                    f"{name}: integer labels must have shape {tuple(lead)} for logits "
                    f"{logits.shape}, got {target.shape}"
                )
            check_range(name, "label", target, 0, classes)
            target = jax.nn.one_hot(target, classes, dtype=logits.dtype)
        elif target.shape != logits.shape:
            raise ValueError(
                f"{name}: probability targets must have the logits' shape {logits.shape}, "
                f"got {target.shape}"
            )
        target = target.astype(logits.dtype)
        n = math.prod(lead)
        # half-precision logits: log-softmax, its sums and the probabilities in float32
        logp = log_softmax(logits.astype(accumulation_dtype(logits.dtype)))
        value = (-jnp.sum(target * logp) / n).astype(logits.dtype)
        return value, CrossEntropyResiduals(jnp.exp(logp), target)

    def backward(residuals, g=1.0):
        p, t = residuals  # (..., classes)
        n = math.prod(p.shape[:-1])
        return ((g / n) * (p * t.sum(axis=-1, keepdims=True) - t)).astype(t.dtype)

    return Loss(forward, backward, name)


# -------------------------------------------------------------------- binary cross-entropy


class BinaryCrossEntropyResiduals(NamedTuple):
    logits: jax.Array  # z
    target: jax.Array  # t ∈ [0, 1], same shape


def _wide_sigmoid(z):
    """σ(z) in the accumulation dtype (float32 for half precision), for the caller to round once:
    evaluated op by op in float16 it is ~1 ulp off, and the sigmoid losses' gradients often
    cancel in a parameter's sum (a GAN discriminator's last bias adds its real and fake halves),
    which magnifies that into several ulps."""
    return sigmoid(z.astype(accumulation_dtype(z.dtype)))


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
        return ((g / z.size) * (_wide_sigmoid(z) - t)).astype(z.dtype)

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


# ------------------------------------------------------------ generative models (VAE, GAN)
#
# Sums over latents/pixels and means over the batch accumulate in float32 when the inputs are
# half precision (bfloat16, float16); the value is returned in the input's dtype.


def _accumulator(x):
    """float32 for half-precision inputs, the input's own dtype otherwise."""
    dtype = jnp.result_type(x)
    return jnp.float32 if jnp.finfo(dtype).bits < 32 else dtype


def _sum(terms):
    return jnp.sum(terms, dtype=_accumulator(terms))


def _check_no_target(name, target):
    if target is not None:
        raise TypeError(f"{name}: takes no target (pass None), got {type(target).__name__}")


def _check_batch(name, x, what):
    check_float_input(name, x)
    if jnp.ndim(x) < 2:
        raise ValueError(f"{name}: expected {what} of shape (batch, ...), got {jnp.shape(x)}")


class GaussianKLResiduals(NamedTuple):
    mu: jax.Array  # μ, (n, ..., d)
    logvar: jax.Array  # log σ², (n, ..., d)


def gaussian_kl_terms(mu, logvar):
    """Elementwise KL(N(μ, σ²) ‖ N(0, 1)) = ½ (μ² + σ² − 1 − log σ²), σ² = exp(log σ²)."""
    return 0.5 * (mu * mu + jnp.exp(logvar) - 1.0 - logvar)


def gaussian_kl() -> Loss:
    """L = 1/n Σᵢ KL(N(μᵢ, diag σᵢ²) ‖ N(0, I)) = 1/n Σᵢ Σ_j ½ (μ² + σ² − 1 − log σ²)_ij.

    `pred` is h = [μ, log σ²] on the last axis (n, ..., 2d), an encoder's output; `target` must
    be None (the prior has no data). The gradient, written from the formula:

        ∂L/∂μ = μ / n,      ∂L/∂log σ² = ½ (σ² − 1) / n

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxbp import losses
        >>> kl = losses.gaussian_kl()
        >>> value, res = kl.forward(jnp.array([[1.0, 0.0]]), None)   # μ = 1, σ = 1
        >>> float(value), kl.backward(res).tolist()
        (0.5, [[1.0, 0.0]])
    """
    name = "gaussian_kl"

    def forward(h, target=None):
        _check_no_target(name, target)
        _check_batch(name, h, "h = [μ, log σ²]")
        if h.shape[-1] % 2:
            raise ValueError(f"{name}: h = [μ, log σ²] needs an even last axis, got {h.shape}")
        d = h.shape[-1] // 2
        mu, logvar = h[..., :d], h[..., d:]
        value = _sum(gaussian_kl_terms(mu, logvar)) / h.shape[0]
        return value.astype(h.dtype), GaussianKLResiduals(mu, logvar)

    def backward(residuals, g=1.0):
        mu, logvar = residuals
        scale = g / mu.shape[0]
        dmu = scale * mu  # ∂/∂μ of ½ μ²
        dlogvar = (0.5 * scale) * jnp.expm1(logvar)  # ∂/∂log σ² of ½ (σ² − log σ²)
        return jnp.concatenate([dmu, dlogvar], axis=-1).astype(mu.dtype)

    return Loss(forward, backward, name)


def bernoulli_log_prob(logits, x):
    """log p(x | logits) = Σ_k [x z − softplus(z)] per example (every axis after the first).

    The Bernoulli log-likelihood from logits z, for x in [0, 1] (grey pixels included, as a VAE
    on [0, 1] images uses it); finite for any z. Returns shape (n,).
    """
    terms = x * logits - softplus(logits)
    return jnp.sum(terms.reshape(terms.shape[0], -1), axis=-1, dtype=_accumulator(terms))


def bernoulli_nll() -> Loss:
    """L = −1/n Σᵢ log p(xᵢ | zᵢ) = 1/n Σᵢ Σ_k [softplus(z) − x z]_ik, nats per example.

    The negative Bernoulli log-likelihood from logits z (summed over the pixels, averaged over the
    batch — the reconstruction term of a VAE's ELBO). ∂L/∂z = (σ(z) − x) / n.
    `sigmoid_binary_cross_entropy` is the same per element, averaged over every element.
    """
    name = "bernoulli_nll"

    def forward(logits, target):
        _check_same_shape(name, logits, target)
        t = target.astype(logits.dtype)
        value = -jnp.sum(bernoulli_log_prob(logits, t)) / logits.shape[0]
        return value.astype(logits.dtype), BinaryCrossEntropyResiduals(logits, t)

    def backward(residuals, g=1.0):
        z, t = residuals
        return ((g / z.shape[0]) * (_wide_sigmoid(z) - t)).astype(z.dtype)

    return Loss(forward, backward, name)


class GANResiduals(NamedTuple):
    real: jax.Array | None  # discriminator logits on real data, (n, 1); None in the G loss
    fake: jax.Array  # discriminator logits on generated data, (m, 1)


def gan_discriminator_loss() -> Loss:
    """The discriminator's cross-entropy: real data labelled 1, generated data labelled 0.

        L_D = −1/n Σᵢ log σ(rᵢ) − 1/m Σ_j log(1 − σ(f_j))
            =  1/n Σᵢ softplus(−rᵢ) + 1/m Σ_j softplus(f_j)

    `pred` is the pair (r, f) of logits on a real and a generated batch; `target` must be None.
    ∂L/∂r = −σ(−r)/n = (σ(r) − 1)/n and ∂L/∂f = σ(f)/m; backward returns the pair.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxbp import losses
        >>> loss = losses.gan_discriminator_loss()
        >>> value, res = loss.forward((jnp.zeros((2, 1)), jnp.zeros((4, 1))), None)
        >>> round(float(value), 4), [d.shape for d in loss.backward(res)]   # 2 log 2
        (1.3863, [(2, 1), (4, 1)])
    """
    name = "gan_discriminator_loss"

    def forward(pred, target=None):
        _check_no_target(name, target)
        if not isinstance(pred, tuple | list) or len(pred) != 2:
            raise TypeError(f"{name}: pred must be the pair (real_logits, fake_logits)")
        real, fake = pred
        _check_batch(name, real, "real logits")
        _check_batch(name, fake, "fake logits")
        value = _sum(softplus(-real)) / real.shape[0] + _sum(softplus(fake)) / fake.shape[0]
        return value.astype(real.dtype), GANResiduals(real, fake)

    def backward(residuals, g=1.0):
        real, fake = residuals
        dreal = (g / real.shape[0]) * -_wide_sigmoid(-real)  # ∂/∂r softplus(−r) = −σ(−r)
        dfake = (g / fake.shape[0]) * _wide_sigmoid(fake)  # ∂/∂f softplus(f) = σ(f)
        return dreal.astype(real.dtype), dfake.astype(fake.dtype)

    return Loss(forward, backward, name)


def gan_generator_loss() -> Loss:
    """The non-saturating generator loss L_G = −1/m Σ_j log σ(f_j) = 1/m Σ_j softplus(−f_j).

    `pred` is the discriminator's logits f on generated data (m, 1); `target` must be None.
    ∂L/∂f = −σ(−f)/m: it stays near −1/m where D rejects the samples (f ≪ 0), where the
    minimax form log(1 − σ(f)) would have a vanishing gradient σ(f)/m.
    """
    name = "gan_generator_loss"

    def forward(fake, target=None):
        _check_no_target(name, target)
        _check_batch(name, fake, "fake logits")
        value = _sum(softplus(-fake)) / fake.shape[0]
        return value.astype(fake.dtype), GANResiduals(None, fake)

    def backward(residuals, g=1.0):
        fake = residuals.fake
        return ((g / fake.shape[0]) * -_wide_sigmoid(-fake)).astype(fake.dtype)

    return Loss(forward, backward, name)


# ------------------------------------------------------------------ model losses


def token_cross_entropy() -> Loss:
    """L = −1/(B·T) Σ_{b,t} log softmax(logits[b, t])[targets[b, t]] for logits (B, T, V) and
    integer targets (B, T); ∂L/∂logits = (softmax(logits) − onehot(targets)) / (B·T).

    It is `softmax_cross_entropy` on the B·T positions as rows (the GPT's loss).
    """
    name = "token_cross_entropy"
    rows = softmax_cross_entropy()

    def forward(logits, targets):
        if jnp.ndim(logits) != 3 or tuple(jnp.shape(targets)) != tuple(jnp.shape(logits))[:2]:
            raise ValueError(
                f"{name}: expected logits (batch, time, vocab) and targets (batch, time), got "
                f"{tuple(jnp.shape(logits))} and {tuple(jnp.shape(targets))}"
            )
        return rows.forward(logits, targets)

    def backward(residuals, g=1.0):
        return rows.backward(residuals, g)  # (B, T, V)

    return Loss(forward, backward, name)


def vae_loss() -> Loss:
    """−ELBO per example of `jaxbp.models.VAE`: bernoulli_nll(ℓ, x) + gaussian_kl(h), the
    prediction (ℓ, h) and the target (x, None)."""
    return multi_task(bernoulli_nll(), gaussian_kl())
