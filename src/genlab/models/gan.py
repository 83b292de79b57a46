"""GAN: generator G(z) and discriminator D, the spec's objective computed from logits.

L_D = -log D(x) - log(1 - D(G(z)))   and   L_G = -log D(G(z))     (non-saturating generator loss)
With D(x) = sigmoid(d(x)) these are softplus(-d(x)) + softplus(d(G(z))) and softplus(-d(G(z))), which
never take the log of 0. D trains on real images and on G(z) detached; then G trains with D frozen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from ..nn import mlp
from ..registry import register_model
from .base import Batch, GenerativeModel, ModelConfig, Preset, StepOutput


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, real_label: float = 1.0) -> Tensor:
    """Mean over the batch of -t log D(x) - (1 - t) log(1 - D(x)) - log(1 - D(G(z))), t = real_label.

    real_label < 1 is one-sided label smoothing (Salimans et al. 2016); 1.0 is the spec's exact L_D.
    """
    real_term = real_label * F.softplus(-real_logits) + (1.0 - real_label) * F.softplus(real_logits)
    return real_term.mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: Tensor) -> Tensor:
    """L_G = -log D(G(z)), averaged over the batch."""
    return F.softplus(-fake_logits).mean()


@dataclass
class GANConfig(ModelConfig):
    latent_dim: int = 100
    g_hidden: tuple[int, ...] = (128, 256, 512, 1024)
    d_hidden: tuple[int, ...] = (512, 256, 128)
    leaky_slope: float = 0.2
    g_batch_norm: bool = False
    d_dropout: float = 0.3
    d_spectral_norm: bool = False
    label_smoothing: float = 0.0  # one-sided: real targets become 1 - label_smoothing
    # Minibatch discrimination (Salimans et al. 2016, sec. 3.2): D's last hidden layer also sees, per sample,
    # how close it is to the other samples of its batch, so a generator that collapses onto a few modes is
    # easy to tell from real data. 0 disables it; else the number of kernels B (each of kernel_dim C).
    # Measured on mnist-5k with 50 kernels: D wins outright (D(G(z)) ~ 0) within a few epochs.
    d_minibatch_kernels: int = 0
    d_minibatch_kernel_dim: int = 5
    # Minibatch standard deviation (Karras et al. 2018): one extra feature, the mean over features of the
    # batch's standard deviation at D's last hidden layer. A cheaper, weaker anti-collapse signal.
    d_minibatch_stddev: bool = False
    lr_d: float = 2e-4
    lr_g: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999


@register_model("gan")
class GAN(GenerativeModel):
    Config = GANConfig
    input_range = "tanh"
    presets: ClassVar[dict[str, Preset]] = {
        "article": Preset(
            "the article's MLP GAN exactly: G 100-128-256-512-1024-784, D 784-512-256-128-1 with dropout 0.3, "
            "Adam 2e-4 (D) / 1e-4 (G), batch 128",
            model={},
            train={"batch_size": 128, "epochs": 30},
        ),
        # Measured with benchmarks/sample_quality.py (see benchmarks/README.md): on mnist-5k with a few CPU
        # minutes the article's recipe collapses onto a few classes; BatchNorm in G, Adam 2e-4 for both nets,
        # a minibatch-stddev feature in D and an EMA of the weights give all ten digits in similar shares.
        "default": Preset(
            "the article's MLP nets + BatchNorm in G and a minibatch-stddev feature in D, Adam 2e-4 for both, "
            "batch 64, EMA 0.999 for sampling: all ten digits in about 4 CPU minutes",
            model={"g_batch_norm": True, "d_minibatch_stddev": True, "lr_g": 2e-4},
            train={"batch_size": 64, "epochs": 80, "ema_decay": 0.999},
        ),
    }

    def __init__(self, config: GANConfig):
        super().__init__(config)
        pixels = math.prod(config.image_shape)
        self.generator = mlp(
            [config.latent_dim, *config.g_hidden, pixels],
            leaky_slope=config.leaky_slope,
            batch_norm=config.g_batch_norm,
            final_activation="tanh",
        )
        self.discriminator = mlp(
            [pixels, *config.d_hidden, 1],
            leaky_slope=config.leaky_slope,
            dropout=config.d_dropout,
            spectral_norm=config.d_spectral_norm,
        )
        batch_layers, width = _minibatch_layers(config)
        if batch_layers:  # they go between the last hidden layer and the output layer, which grows to match
            output = nn.Linear(width, 1)
            output = spectral_norm(output) if config.d_spectral_norm else output
            self.discriminator = nn.Sequential(*self.discriminator[:-1], *batch_layers, output)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        betas = (c.beta1, c.beta2)
        return {
            "d": torch.optim.Adam(self.discriminator.parameters(), lr=c.lr_d, betas=betas),
            "g": torch.optim.Adam(self.generator.parameters(), lr=c.lr_g, betas=betas),
        }

    def private_parts(self) -> dict[str, nn.Module]:
        # Only D sees real images; G learns from D's output alone, so a private D makes G private too
        # (post-processing; Xie et al. 2018, DPGAN).
        return {"d": self.discriminator}

    def _generate_tanh(self, z: Tensor) -> Tensor:
        return self.generator(z).view(z.shape[0], *self.config.image_shape)  # (B, C, H, W) in [-1, 1]

    def discriminate(self, images: Tensor) -> Tensor:
        return self.discriminator(images.flatten(1)).squeeze(1)  # (B,) logits

    def generate(self, z: Tensor) -> Tensor:
        return (self._generate_tanh(z) + 1.0) / 2.0

    def training_step(self, batch: Batch, optimizer_name: str) -> StepOutput:
        real = batch.images
        z = torch.randn(real.shape[0], self.config.latent_dim, device=real.device)
        if optimizer_name == "d":
            fake = self._generate_tanh(z).detach()  # D must not push gradients into G
            real_logits, fake_logits = self.discriminate(real), self.discriminate(fake)
            loss = discriminator_loss(real_logits, fake_logits, 1.0 - self.config.label_smoothing)
            logs = {
                "loss_d": loss.detach(),
                "d_real": torch.sigmoid(real_logits).mean().detach(),
                "d_fake": torch.sigmoid(fake_logits).mean().detach(),
            }
            return StepOutput(loss, logs)
        if optimizer_name == "g":
            # Freeze D while its graph is recorded: no weight gradients are computed for it at all.
            self.discriminator.requires_grad_(False)
            try:
                fake_logits = self.discriminate(self._generate_tanh(z))
            finally:
                self.discriminator.requires_grad_(True)
            loss = generator_loss(fake_logits)
            return StepOutput(loss, {"loss_g": loss.detach()})
        raise ValueError(f"unknown optimizer {optimizer_name!r}")


def _minibatch_layers(config: GANConfig) -> tuple[list[nn.Module], int]:
    """D's batch-statistics layers (possibly none) and the width of the features they output."""
    width = config.d_hidden[-1] if config.d_hidden else math.prod(config.image_shape)
    layers: list[nn.Module] = []
    if config.d_minibatch_kernels > 0:
        layers.append(
            MinibatchDiscrimination(width, config.d_minibatch_kernels, config.d_minibatch_kernel_dim)
        )
        width += config.d_minibatch_kernels
    if config.d_minibatch_stddev:
        layers.append(MinibatchStdDev())
        width += 1
    return layers, width


class MinibatchDiscrimination(nn.Module):
    """Appends to each sample's features x_i (B, F) the closeness o_i = sum_j exp(-|M_i - M_j|_1) of its
    projection M_i = x_i T (kernels, kernel_dim) to the rest of the batch: (B, F) -> (B, F + kernels)."""

    # Each output row depends on the whole batch, so per-sample gradients (DP-SGD) are undefined; it has
    # weights of its own, so there is no drop-in stand-in: DP training refuses it.
    mixes_samples: ClassVar[bool] = True

    def __init__(self, in_features: int, kernels: int, kernel_dim: int):
        super().__init__()
        self.kernels, self.kernel_dim = kernels, kernel_dim
        self.projection = nn.Parameter(torch.randn(in_features, kernels * kernel_dim) * 0.1)

    def forward(self, x: Tensor) -> Tensor:
        m = (x @ self.projection).view(-1, self.kernels, self.kernel_dim)  # (B, K, C)
        distances = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(3)  # (B, B, K) L1 between samples
        closeness = torch.exp(-distances).sum(1) - 1.0  # (B, K); minus exp(0) of each sample with itself
        return torch.cat([x, closeness], dim=1)


class MinibatchStdDev(nn.Module):
    """Appends the batch's mean feature standard deviation as one constant feature: (B, F) -> (B, F + 1)."""

    mixes_samples: ClassVar[bool] = True  # the appended feature depends on the whole batch

    def per_sample_replacement(self) -> nn.Module:
        """What DP training puts in its place: the same shape, a constant 0 feature (no weights lost)."""
        return ZeroFeatures(1)

    def forward(self, x: Tensor) -> Tensor:
        spread = x.std(dim=0, unbiased=False).mean() if x.shape[0] > 1 else x.new_zeros(())
        return torch.cat([x, spread.expand(x.shape[0], 1)], dim=1)


class ZeroFeatures(nn.Module):
    """Appends `count` zero features: (B, F) -> (B, F + count). The per-sample stand-in for a batch layer."""

    def __init__(self, count: int):
        super().__init__()
        self.count = count

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, x.new_zeros(x.shape[0], self.count)], dim=1)
