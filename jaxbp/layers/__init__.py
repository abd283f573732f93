"""Layer families, one module each: ops (init/forward/backward) and their Layer constructors."""

from jaxbp.layers import dense
from jaxbp.layers.dense import Dense

__all__ = ["Dense", "dense"]
