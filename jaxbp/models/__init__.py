"""Ready-made models and the model-level gradient."""

from jaxbp.models.grad import loss_and_grad, value_and_grad
from jaxbp.models.mlp import MLP

__all__ = ["MLP", "loss_and_grad", "value_and_grad"]
