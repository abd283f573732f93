"""Layer families, one module each: ops (init/forward/backward) and their Layer constructors."""

from jaxbp.layers import dense, recurrent
from jaxbp.layers.dense import Dense
from jaxbp.layers.recurrent import GRU, LSTM, RNN, Bidirectional

__all__ = ["Bidirectional", "Dense", "GRU", "LSTM", "RNN", "dense", "recurrent"]
