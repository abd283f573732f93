"""Multilayer perceptrons: Dense → f → Dense → f → ... → Dense."""

from __future__ import annotations

from jaxbp import activations
from jaxbp.layer import Layer, serial
from jaxbp.layers.dense import Dense


def MLP(
    hidden: tuple[int, ...] | list[int],
    out_dim: int,
    activation=activations.Relu,
    w_init="xavier_uniform",
    out_activation=None,
) -> Layer:
    """serial(Dense(h₁), f, ..., Dense(h_k), f, Dense(out_dim)[, out_activation]).

    `activation` and `out_activation` are layer constructors (e.g. `jaxbp.Tanh`), called once
    per use.

    Example:
        >>> import jax, jaxbp
        >>> net = jaxbp.models.MLP([64, 64], 10, activation=jaxbp.Tanh)
        >>> out_shape, params, state = net.init(jax.random.key(0), (784,))
        >>> out_shape
        (10,)
    """
    layers = []
    for width in hidden:
        layers += [Dense(width, w_init=w_init), activation()]
    layers.append(Dense(out_dim, w_init=w_init))
    if out_activation is not None:
        layers.append(out_activation())
    return serial(*layers)
