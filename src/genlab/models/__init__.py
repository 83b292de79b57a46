"""Built-in model families; importing this module registers them."""

from .ae import Autoencoder
from .base import Batch, GenerativeModel, ModelConfig, Preset, StepOutput
from .gan import GAN
from .vae import VAE

__all__ = ["GAN", "VAE", "Autoencoder", "Batch", "GenerativeModel", "ModelConfig", "Preset", "StepOutput"]
