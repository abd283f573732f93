"""Multilayer perceptrons: Dense → f → Dense → f → ... → Dense."""

from __future__ import annotations

from jaxbp import activations
from jaxbp.layer import Layer, positive_int, serial
from jaxbp.layers.dense import Dense


def MLP(
    features: tuple[int, ...] | list[int],
    *,
    activation=activations.Relu,
    out_activation=None,
    w_init="xavier_uniform",
) -> Layer:
    """serial(Dense(n₁), f, ..., Dense(n_{k−1}), f, Dense(n_k)[, out_activation]) for
    `features` = [n₁, ..., n_k]: every layer's width, the last one the output's.

    `activation` and `out_activation` are layer constructors (e.g. `jaxbp.Tanh`), called once
    per use.

    Example:
        >>> import jax, jaxbp
        >>> net = jaxbp.MLP([64, 64, 10], activation=jaxbp.Tanh)
        >>> out_shape, params, state = net.init(jax.random.key(0), (784,))
        >>> out_shape, len(params)
        ((10,), 5)
    """
    if isinstance(features, int) or not features:
        raise ValueError(
            f"MLP: features must be a non-empty list of layer widths, the last the output's "
            f"(e.g. MLP([64, 64, 10])), got {features!r}"
        )
    widths = [positive_int("MLP", "features", n) for n in features]
    layers = []
    for width in widths[:-1]:
        layers += [Dense(width, w_init=w_init), activation()]
    layers.append(Dense(widths[-1], w_init=w_init))
    if out_activation is not None:
        layers.append(out_activation())
    return serial(*layers)
