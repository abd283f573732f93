"""jaxbp: backpropagation written out by hand in JAX, and proven equal to JAX's autodiff.

Levels: ops (`jaxbp.layers.dense.dense_forward/dense_backward`, ...), layers (`Dense(256)`,
`Relu()`, ...) composed with `serial`/`residual`/`parallel`, and models (a layer plus a loss,
differentiated by `loss_and_grad`). `jaxbp.check` verifies any backward; `jaxbp.autodiff` plugs
a layer's backward into JAX's own differentiation. The naming rules are in
docs/conventions.md, which also lists every name exported here.
"""

from jaxbp import (
    activations,
    autodiff,
    check,
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
from jaxbp.distributed import data_parallel
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
    Nodes,
    PositionalEmbedding,
    Reshape,
    TransformerBlock,
    TreeLSTM,
    bidirectional,
    node_map,
)
from jaxbp.losses import Loss
from jaxbp.models import GPT, MLP, VAE, Autoencoder, generate, loss_and_grad
from jaxbp.precision import dynamic_loss_scale
from jaxbp.recompute import remat, remat_sequence
from jaxbp.step import TrainState, init_train_state, make_train_step
from jaxbp.train import DivergenceError, FitResult, fit

__version__ = "0.1.0"

# The same list, in the same groups, is written in docs/conventions.md ("Public names");
# tests/test_conventions.py holds the two equal.
__all__ = [
    # layer constructors
    "AvgPool1D",
    "AvgPool2D",
    "BatchNorm",
    "Conv1D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Embedding",
    "FeedForward",
    "Flatten",
    "GAT",
    "GCN",
    "GRU",
    "GaussianSample",
    "GlobalAvgPool",
    "GraphReadout",
    "LSTM",
    "LayerNorm",
    "MaxPool1D",
    "MaxPool2D",
    "MultiHeadAttention",
    "Nodes",
    "PositionalEmbedding",
    "RNN",
    "Reshape",
    "TransformerBlock",
    "TreeLSTM",
    # activation constructors
    "Elu",
    "Gelu",
    "Identity",
    "LeakyRelu",
    "LogSoftmax",
    "Relu",
    "Sigmoid",
    "Silu",
    "Softmax",
    "Softplus",
    "Tanh",
    # models
    "Autoencoder",
    "GPT",
    "MLP",
    "VAE",
    # combinators
    "bidirectional",
    "data_parallel",
    "node_map",
    "parallel",
    "remat",
    "remat_sequence",
    "residual",
    "serial",
    # types
    "Layer",
    "Loss",
    # training
    "DivergenceError",
    "FitResult",
    "TrainState",
    "dynamic_loss_scale",
    "fit",
    "generate",
    "init_train_state",
    "loss_and_grad",
    "make_train_step",
    # modules
    "activations",
    "autodiff",
    "check",
    "checkpoint",
    "data",
    "distributed",
    "indices",
    "init",
    "layers",
    "loop",
    "losses",
    "metrics",
    "models",
    "optim",
    "pipeline",
    "precision",
    "recompute",
    "step",
    "train",
]
