"""Layer families, one module each: ops (init/forward/backward) and their Layer constructors."""

from jaxbp.layers import conv, dense, dropout, embedding, graph, norm, pool, recurrent, tree
from jaxbp.layers.conv import Conv1D, Conv2D
from jaxbp.layers.dense import Dense
from jaxbp.layers.dropout import Dropout
from jaxbp.layers.embedding import Embedding
from jaxbp.layers.graph import GAT, GCN, GraphReadout, NodeMap, Nodes, batch_graphs
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
from jaxbp.layers.recurrent import GRU, LSTM, RNN, Bidirectional
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
    "Bidirectional",
    "Conv1D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "GlobalAvgPool",
    "GraphReadout",
    "LayerNorm",
    "MaxPool1D",
    "MaxPool2D",
    "NodeMap",
    "Nodes",
    "Reshape",
    "TreeLSTM",
    "batch_graphs",
    "batch_trees",
    "conv",
    "dense",
    "dropout",
    "embedding",
    "graph",
    "norm",
    "pool",
    "recurrent",
    "tree",
]
