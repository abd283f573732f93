"""jaxbp: backpropagation written out by hand in JAX, and proven equal to JAX's autodiff.

Levels: ops (`jaxbp.layers.dense.forward/backward`, ...), layers (`Dense(256)`, `Relu()`, ...)
composed with `serial`/`residual`/`parallel`, and models (a layer plus a loss, differentiated by
`value_and_grad`). `jaxbp.check` verifies any backward; `jaxbp.autodiff` plugs a layer's
backward into JAX's own differentiation.
"""

import importlib

from jaxbp import (
    activations,
    checkpoint,
    data,
    distributed,
    indices,
    init,
    layers,
    loop,
    losses,
    metrics,
    models,
    optim,
    pipeline,
    precision,
    recompute,
    step,
    train,
)
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
from jaxbp.layers import (
    GAT,
    GCN,
    GRU,
    LSTM,
    RNN,
    AvgPool1D,
    AvgPool2D,
    BatchNorm,
    Bidirectional,
    Conv1D,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    FeedForward,
    Flatten,
    GaussianSample,
    GlobalAvgPool,
    GraphReadout,
    LayerNorm,
    MaxPool1D,
    MaxPool2D,
    MultiHeadAttention,
    NodeMap,
    Nodes,
    PositionalEmbedding,
    Reshape,
    TransformerBlock,
    TreeLSTM,
)
from jaxbp.losses import Loss
from jaxbp.models import GPT, MLP, value_and_grad
from jaxbp.precision import dynamic_loss_scale
from jaxbp.recompute import checkpointed, remat
from jaxbp.step import TrainState, init_train_state, make_train_step
from jaxbp.train import DivergenceError, FitResult, fit

__version__ = "0.1.0"

# `check` and `autodiff` load on first use, so that `python -m jaxbp.check` runs the module
# fresh instead of finding it half-imported by the package.
_LAZY = ("check", "autodiff")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"jaxbp.{name}")
    raise AttributeError(f"module 'jaxbp' has no attribute {name!r}")


__all__ = [
    "AvgPool1D",
    "AvgPool2D",
    "BatchNorm",
    "Bidirectional",
    "Conv1D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Elu",
    "Embedding",
    "FeedForward",
    "Flatten",
    "GPT",
    "GAT",
    "GCN",
    "GRU",
    "GaussianSample",
    "Gelu",
    "GlobalAvgPool",
    "GraphReadout",
    "Identity",
    "LSTM",
    "Layer",
    "LayerNorm",
    "LeakyRelu",
    "LogSoftmax",
    "Loss",
    "MLP",
    "MaxPool1D",
    "MaxPool2D",
    "MultiHeadAttention",
    "PositionalEmbedding",
    "NodeMap",
    "Nodes",
    "RNN",
    "Relu",
    "Reshape",
    "Sigmoid",
    "Silu",
    "Softmax",
    "Softplus",
    "Tanh",
    "TransformerBlock",
    "TreeLSTM",
    "activations",
    "autodiff",
    "check",
    "checkpoint",
    "checkpointed",
    "data",
    "distributed",
    "dynamic_loss_scale",
    "DivergenceError",
    "FitResult",
    "TrainState",
    "fit",
    "init_train_state",
    "loop",
    "metrics",
    "pipeline",
    "step",
    "indices",
    "init",
    "layers",
    "losses",
    "make_train_step",
    "models",
    "optim",
    "parallel",
    "precision",
    "recompute",
    "remat",
    "residual",
    "serial",
    "train",
    "value_and_grad",
]
