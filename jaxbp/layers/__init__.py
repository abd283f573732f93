"""Layer families, one module each: ops (init/forward/backward) and their Layer constructors."""

from jaxbp.layers import (
    attention,
    conv,
    dense,
    dropout,
    embedding,
    graph,
    latent,
    norm,
    pool,
    recurrent,
    transformer,
    tree,
)
from jaxbp.layers.attention import MultiHeadAttention
from jaxbp.layers.conv import Conv1D, Conv2D
from jaxbp.layers.dense import Dense
from jaxbp.layers.dropout import Dropout
from jaxbp.layers.embedding import Embedding
from jaxbp.layers.graph import GAT, GCN, GraphReadout, Nodes, batch_graphs, node_map
from jaxbp.layers.latent import GaussianSample
from jaxbp.layers.norm import BatchNorm, LayerNorm
from jaxbp.layers.pool import (
    AvgPool1D,
    AvgPool2D,
    Flatten,
    GlobalAvgPool,
    MaxPool1D,
    MaxPool2D,
    Reshape,
)
from jaxbp.layers.recurrent import GRU, LSTM, RNN, bidirectional
from jaxbp.layers.transformer import FeedForward, PositionalEmbedding, TransformerBlock
from jaxbp.layers.tree import TreeLSTM, batch_trees

__all__ = [
    "GAT",
    "GCN",
    "GRU",
    "LSTM",
    "RNN",
    "AvgPool1D",
    "AvgPool2D",
    "BatchNorm",
    "bidirectional",
    "Conv1D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Embedding",
    "FeedForward",
    "Flatten",
    "GaussianSample",
    "GlobalAvgPool",
    "GraphReadout",
    "LayerNorm",
    "MaxPool1D",
    "MaxPool2D",
    "MultiHeadAttention",
    "PositionalEmbedding",
    "Reshape",
    "TransformerBlock",
    "attention",
    "node_map",
    "Nodes",
    "TreeLSTM",
    "batch_graphs",
    "batch_trees",
    "conv",
    "dense",
    "dropout",
    "embedding",
    "latent",
    "norm",
    "pool",
    "recurrent",
    "transformer",
    "graph",
    "tree",
]
