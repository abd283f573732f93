"""Ready-made models and the model-level gradient."""

from jaxbp.models import gpt
from jaxbp.models.gpt import GPT, token_cross_entropy
from jaxbp.models.grad import loss_and_grad, value_and_grad
from jaxbp.models.mlp import MLP

__all__ = ["GPT", "MLP", "gpt", "loss_and_grad", "token_cross_entropy", "value_and_grad"]
