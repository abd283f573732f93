"""The one registry of every built-in layer, loss and model, used by the tests and by
`python -m jaxbp.cases`. Each family adds its cases in a module of its own."""

from jaxbp.cases import (
    attention,
    conv,
    core,
    distributed,
    generative,
    memory,
    recurrent,
    structured,
)
from jaxbp.cases.base import Case, draw_batch, layer_case, loss_case, model_case, run_case

CASES: list[Case] = [
    *core.CASES,
    *conv.CASES,
    *recurrent.CASES,
    *memory.CASES,
    *attention.CASES,
    *generative.CASES,
    *structured.CASES,
    *distributed.CASES,
]

__all__ = ["CASES", "Case", "draw_batch", "layer_case", "loss_case", "model_case", "run_case"]
