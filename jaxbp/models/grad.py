"""A model is a Layer plus a Loss; `loss_and_grad` runs forward, loss, and the manual backward.

    L = loss(model(θ, x), y)
    ∂L/∂ŷ = loss.backward(1)          (the output error δ of the article's step 2)
    ∂L/∂θ = model.backward(θ, ∂L/∂ŷ)   (the backward recursion, layer by layer)

No autodiff is involved: the gradient is the chain rule as the layers wrote it.
"""

from __future__ import annotations

import jax

from jaxbp.layer import Layer
from jaxbp.losses import Loss


def _check_model_and_loss(model, loss):
    if not isinstance(model, Layer):
        raise TypeError(f"loss_and_grad: model must be a Layer, got {type(model).__name__}")
    if not isinstance(loss, Loss):
        hint = " (call the constructor, e.g. losses.mse())" if callable(loss) else ""
        raise TypeError(f"loss_and_grad: loss must be a Loss, got {type(loss).__name__}{hint}")


def loss_and_grad(model: Layer, loss: Loss, *, train: bool = True, jit: bool = True):
    """`(params, state, x, y, key=None) -> (loss, grads, new_state)`, jit-compiled unless
    `jit=False`.

    `grads` has the structure and dtypes of `params`; it comes from the hand-written backward
    only. `train` is passed to every layer (dropout and batch norm use it). Unlike
    `jax.value_and_grad` it differentiates a (model, loss) pair, not a function, and also
    returns the model's new state — hence its own name.

    Example:
        >>> import jax, jax.numpy as jnp, jaxbp
        >>> model = jaxbp.serial(jaxbp.Dense(4), jaxbp.Relu(), jaxbp.Dense(1))
        >>> _, params, state = model.init(jax.random.key(0), (3,))
        >>> step = jaxbp.loss_and_grad(model, jaxbp.losses.mse())
        >>> loss, grads, state = step(params, state, jnp.ones((8, 3)), jnp.zeros((8, 1)))
        >>> jax.tree.structure(grads) == jax.tree.structure(params)
        True
    """
    _check_model_and_loss(model, loss)

    def step(params, state, x, y, key=None):
        pred, residuals, new_state = model.forward(params, state, x, key=key, train=train)
        value, loss_residuals = loss.forward(pred, y)
        dpred = loss.backward(loss_residuals, 1.0)  # ∂L/∂ŷ
        grads, _ = model.backward(params, residuals, dpred)  # ∂L/∂θ; ∂L/∂x is dropped by XLA
        return value, grads, new_state

    return jax.jit(step) if jit else step
