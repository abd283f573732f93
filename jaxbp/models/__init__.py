"""Ready-made models and the model-level gradient."""

from jaxbp.models import autoencoder, gan
from jaxbp.models.autoencoder import VAE, Autoencoder, vae_loss
from jaxbp.models.grad import loss_and_grad, value_and_grad
from jaxbp.models.mlp import MLP

__all__ = [
    "MLP",
    "VAE",
    "Autoencoder",
    "autoencoder",
    "gan",
    "loss_and_grad",
    "vae_loss",
    "value_and_grad",
]
