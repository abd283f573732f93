"""Ready-made models and the model-level gradient."""

from jaxbp.models import autoencoder, gan, gpt
from jaxbp.models.autoencoder import VAE, Autoencoder
from jaxbp.models.generate import generate
from jaxbp.models.gpt import GPT
from jaxbp.models.grad import loss_and_grad
from jaxbp.models.mlp import MLP

__all__ = [
    "GPT",
    "MLP",
    "VAE",
    "Autoencoder",
    "autoencoder",
    "gan",
    "generate",
    "gpt",
    "loss_and_grad",
]
