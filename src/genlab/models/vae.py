"""VAE: encoder -> (mu, log sigma^2), z = mu + sigma * eps, decoder; loss = reconstruction + beta * KL.

KL(q(z|x) || N(0, I)) in closed form: -1/2 sum(1 + log sigma^2 - mu^2 - sigma^2). Reconstruction is a
proper negative log-likelihood in nats, so the loss is the negative ELBO (beta = 1):
- bernoulli: sum of binary cross-entropies computed from logits;
- gaussian: 1/2 sum((x - x_hat)^2) / s^2 + D log(s sqrt(2 pi)) with a fixed decoder scale s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nn import mlp
from ..registry import register_model
from .base import Batch, GenerativeModel, ModelConfig, Preset, StepOutput


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, summed over latent dims: (B, d) -> (B,)."""
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)


def bernoulli_nll(logits: Tensor, target: Tensor) -> Tensor:
    """-log p(x | logits) per sample, summed over pixels: (B, ...) -> (B,)."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(dim=1)


def gaussian_nll(mean: Tensor, target: Tensor, scale: float) -> Tensor:
    """-log N(x; mean, scale^2 I) per sample, summed over pixels: (B, ...) -> (B,)."""
    squared = (target - mean).pow(2).flatten(1).sum(dim=1)
    pixels = target[0].numel()
    return 0.5 * squared / scale**2 + pixels * math.log(scale * math.sqrt(2.0 * math.pi))


@dataclass
class VAEConfig(ModelConfig):
    latent_dim: int = 16
    hidden: tuple[int, ...] = (512, 256)
    likelihood: str = "bernoulli"  # or "gaussian"
    gaussian_scale: float = 0.1  # decoder std for the gaussian likelihood, in [0, 1] pixel units
    beta: float = 1.0
    lr: float = 1e-3


@register_model("vae")
class VAE(GenerativeModel):
    Config = VAEConfig
    input_range = "unit"
    presets: ClassVar[dict[str, Preset]] = {
        "default": Preset(
            "MLP VAE 784-512-256-16, Bernoulli decoder, beta 1, Adam 1e-3", train={"epochs": 30}
        ),
        "beta4": Preset(
            "beta-VAE with beta = 4: smoother latent space, blurrier images", model={"beta": 4.0}
        ),
    }

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        if config.likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {config.likelihood!r}")
        pixels = math.prod(config.image_shape)
        self.encoder = mlp([pixels, *config.hidden, 2 * config.latent_dim], activation="relu")
        self.decoder = mlp([config.latent_dim, *reversed(config.hidden), pixels], activation="relu")

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"main": torch.optim.Adam(self.parameters(), lr=self.config.lr)}

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) in [0, 1] -> mu, logvar, each (B, latent_dim)."""
        mu, logvar = self.encoder(x.flatten(1)).chunk(2, dim=1)
        return mu, logvar

    def decode_logits(self, z: Tensor) -> Tensor:
        return self.decoder(z).view(z.shape[0], *self.config.image_shape)

    def decode(self, z: Tensor) -> Tensor:
        """The decoder's mean image in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def generate(self, z: Tensor) -> Tensor:
        return self.decode(z)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x)[0])

    def embed(self, x: Tensor) -> Tensor:
        return self.encode(x)[0]

    def reconstruction_nll(self, decoded_logits: Tensor, x: Tensor) -> Tensor:
        if self.config.likelihood == "bernoulli":
            return bernoulli_nll(decoded_logits, x)
        return gaussian_nll(torch.sigmoid(decoded_logits), x, self.config.gaussian_scale)

    def loss_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample reconstruction NLL and KL, each (B,), with one reparameterized z per image."""
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.reconstruction_nll(self.decode_logits(z), x), gaussian_kl(mu, logvar)

    def training_step(self, batch: Batch, optimizer_name: str) -> StepOutput:
        reconstruction, kl = self.loss_terms(batch.images)
        loss = (reconstruction + self.config.beta * kl).mean()
        logs = {
            "loss": loss.detach(),
            "reconstruction": reconstruction.mean().detach(),
            "kl": kl.mean().detach(),
        }
        return StepOutput(loss, logs)
