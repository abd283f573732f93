"""jaxbp: backpropagation written out by hand in JAX, and proven equal to jax.grad.

Levels: ops (`jaxbp.layers.dense.forward/backward`, ...), layers (`Dense(256)`, `Relu()`, ...)
composed with `serial`/`residual`/`parallel`, and models (a layer plus a loss, differentiated by
`value_and_grad`). `jaxbp.check` verifies any backward; `jaxbp.autodiff` plugs a layer's
backward into `jax.grad`.
"""

import importlib

from jaxbp import activations, init, layers, losses, models
from jaxbp.activations import (
    Elu,
    Gelu,
    Identity,
    LeakyRelu,
    LogSoftmax,
    Relu,
    Sigmoid,
    Silu,
    Softmax,
    Softplus,
    Tanh,
)
from jaxbp.layer import Layer, parallel, residual, serial
from jaxbp.layers import GRU, LSTM, RNN, Bidirectional, Dense
from jaxbp.losses import Loss
from jaxbp.models import MLP, value_and_grad

__version__ = "0.1.0"

# `check` and `autodiff` load on first use, so that `python -m jaxbp.check` runs the module
# fresh instead of finding it half-imported by the package.
_LAZY = ("check", "autodiff")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"jaxbp.{name}")
    raise AttributeError(f"module 'jaxbp' has no attribute {name!r}")


__all__ = [
    "Bidirectional",
    "Dense",
    "Elu",
    "GRU",
    "Gelu",
    "Identity",
    "LSTM",
    "Layer",
    "LeakyRelu",
    "LogSoftmax",
    "Loss",
    "MLP",
    "RNN",
    "Relu",
    "Sigmoid",
    "Silu",
    "Softmax",
    "Softplus",
    "Tanh",
    "activations",
    "autodiff",
    "check",
    "init",
    "layers",
    "losses",
    "models",
    "parallel",
    "residual",
    "serial",
    "value_and_grad",
]
