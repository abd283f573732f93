"""Ready-made models and the model-level gradient."""

from jaxbp.models import autoencoder, gan, gpt
from jaxbp.models.autoencoder import VAE, Autoencoder, vae_loss
from jaxbp.models.generate import generate
from jaxbp.models.gpt import GPT, token_cross_entropy
from jaxbp.models.grad import loss_and_grad, value_and_grad
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
    "token_cross_entropy",
    "vae_loss",
    "value_and_grad",
]
