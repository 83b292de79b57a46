"""Autoencoder: h = f(W x + b), x' = f(W' h + b'), trained on reconstruction loss.

A denoising mode corrupts the input and keeps the clean target. After each epoch a Gaussian mixture is
fitted to the training codes, so `sample(n)` can generate by decoding codes drawn from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..constraints import FLAG, MAX_CHANNELS, Check, OneOf, Sizes, at_least, fraction, positive
from ..nn import ConvUpsampler, conv_encoder, mlp
from ..nn.mlp import ACTIVATIONS
from ..registry import register_model
from .base import ARCHS, Batch, GenerativeModel, ModelConfig, Preset, StepOutput
from .gmm import GaussianMixture, codes_of


def reconstruction_loss(logits: Tensor, target: Tensor, kind: str) -> Tensor:
    """Mean over the batch of the per-image reconstruction loss summed over pixels.

    bce: binary cross-entropy from logits (targets in [0, 1]); mse: squared error of sigmoid(logits).
    """
    if kind == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    elif kind == "mse":
        per_pixel = (torch.sigmoid(logits) - target).pow(2)
    else:
        raise ValueError(f"loss must be 'bce' or 'mse', got {kind!r}")
    return per_pixel.flatten(1).sum(dim=1).mean()


@dataclass
class AEConfig(ModelConfig):
    latent_dim: int = 32
    arch: str = "mlp"  # or "conv"; the codes are flat (B, latent_dim) vectors either way
    hidden: tuple[int, ...] = (512, 256)  # () gives the spec's single-layer h = f(Wx + b)
    conv_width: int = 32  # conv: channels of the encoder's first stage / the decoder's last
    activation: str = "relu"
    loss: str = "bce"  # or "mse"
    noise_std: float = 0.0  # denoising: Gaussian noise added to the input, the target stays clean
    mask_prob: float = 0.0  # denoising: share of input pixels set to 0
    noise_uniform: bool = False  # draw each image's noise std / mask share uniformly from [0, the above]
    gmm_components: int = 10
    lr: float = 1e-3
    constraints: ClassVar[dict[str, Check]] = {
        **ModelConfig.constraints,
        "arch": OneOf(ARCHS),
        "hidden": Sizes(),
        "conv_width": at_least(1, MAX_CHANNELS),
        "activation": OneOf(ACTIVATIONS),
        "loss": OneOf(("bce", "mse")),
        "noise_std": at_least(0),
        "mask_prob": fraction(),
        "noise_uniform": FLAG,
        "gmm_components": at_least(1, 1000),
        "lr": positive(),
    }


_CONV = Preset(
    "conv autoencoder: 2 strided-conv stages (width 32) to 16 dims and back, BCE, 10-component GMM sampler, "
    "30 epochs",
    model={"arch": "conv", "latent_dim": 16},
    train={"epochs": 30},
)


@register_model("ae")
class Autoencoder(GenerativeModel):
    Config = AEConfig
    input_range = "unit"
    presets: ClassVar[dict[str, Preset]] = {
        # Measured on mnist-5k (README zoo table, 2-minute budget): the conv autoencoder's GMM samples are
        # recognized 74.6% of the time (FID 57.8) against 68.0% (66.7) for the MLP one at equal test SSIM
        # (0.87), so it is the default; the MLP recipe stays as `mlp`.
        "default": _CONV,
        "conv": _CONV,
        # After 60 epochs the judge recognizes about two thirds of the GMM samples, digits in 8-12% shares.
        "mlp": Preset(
            "MLP autoencoder 784-512-256-32, BCE, 10-component GMM sampler, 60 epochs", train={"epochs": 60}
        ),
        "article": Preset(
            "the article's single-layer autoencoder: h = sigmoid(Wx + b), 784-32-784",
            model={"hidden": (), "activation": "sigmoid"},
        ),
        "denoising": Preset(
            "denoising autoencoder: Gaussian noise (std 0.3) on the input, clean target",
            model={"noise_std": 0.3},
        ),
        # benchmarks/denoise.py: 22.0 dB at sigma 0.3 on held-out digits, 4.8 dB over the best classical filter
        "conv-denoising": Preset(
            "conv denoising autoencoder: Gaussian noise (std 0.3) on the input, 64-dim code, 30 epochs",
            model={"arch": "conv", "latent_dim": 64, "noise_std": 0.3, "gmm_components": 1},
            train={"epochs": 30},
        ),
        "blind-denoising": Preset(
            "denoising autoencoder for any level: per-image Gaussian std in [0, 0.5] and mask share in [0, 0.5]",
            model={"noise_std": 0.5, "mask_prob": 0.5, "noise_uniform": True},
        ),
    }
    setting_help: ClassVar[dict[str, str]] = {
        "image_shape": "(C, H, W) of the data; set from the dataset",
        "num_classes": "classes of the data; set from the dataset (unused: the autoencoder is unconditional)",
        "latent_dim": "size of the code: more dims reconstruct better, but the GMM sampler fits them worse",
        "arch": "mlp or conv (strided conv encoder/decoder: sharper reconstructions, fewer weights)",
        "hidden": "MLP layer widths (the decoder mirrors them); () is the article's single layer",
        "conv_width": "conv channels of the first encoder stage (doubled per stage)",
        "activation": "hidden activation (relu; sigmoid in the article's single layer)",
        "loss": "bce (for near-binary images) or mse",
        "noise_std": "denoising: Gaussian noise on the input, the target stays clean",
        "mask_prob": "denoising: share of input pixels zeroed",
        "noise_uniform": "denoising: each image draws its noise std / mask share uniformly up to the settings",
        "gmm_components": "components of the Gaussian mixture fitted to the codes for sampling",
        "lr": "Adam learning rate",
    }

    def __init__(self, config: AEConfig):
        super().__init__(config)
        pixels = math.prod(config.image_shape)
        hidden = tuple(config.hidden)
        if config.arch == "conv":
            self.encoder = conv_encoder(tuple(config.image_shape), config.conv_width, config.latent_dim)
            self.decoder = ConvUpsampler(
                config.latent_dim, tuple(config.image_shape), config.conv_width, batch_norm=False, final=None
            )
        elif config.arch == "mlp":
            # With hidden=() the encoder is the spec's h = f(Wx + b): f applies to the code itself.
            code_activation = config.activation if not hidden else None
            self.encoder = mlp(
                [pixels, *hidden, config.latent_dim],
                activation=config.activation,
                final_activation=code_activation,
            )
            self.decoder = mlp([config.latent_dim, *reversed(hidden), pixels], activation=config.activation)
        else:
            raise ValueError(f"arch must be 'mlp' or 'conv', got {config.arch!r}")
        self.prior = GaussianMixture(config.gmm_components, config.latent_dim)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        return {"main": torch.optim.Adam(params, lr=self.config.lr)}

    def private_parts(self) -> dict[str, torch.nn.Module]:
        # What DP-SGD covers; the Gaussian-mixture sampler fitted to training codes is not covered.
        return {"main": torch.nn.ModuleList([self.encoder, self.decoder])}

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x if self.config.arch == "conv" else x.flatten(1))  # (B, latent_dim)

    def decode_logits(self, h: Tensor) -> Tensor:
        return self.decoder(h).view(h.shape[0], *self.config.image_shape)

    def decode(self, h: Tensor) -> Tensor:
        return torch.sigmoid(self.decode_logits(h))

    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        self.validate_labels(labels, z.shape[0])  # unconditional: labels are an error
        return self.decode(z)

    embed = encode

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def corrupt(self, x: Tensor) -> Tensor:
        """The denoising mode's input: noise and masking as configured, clamped back to [0, 1].

        With noise_uniform each image draws its own level in [0, noise_std] (and [0, mask_prob]): one
        "blind" denoiser for every level up to the configured one, which also leaves clean images alone
        (a fixed-level DAE never sees a clean input and blurs it)."""
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # one level per image, broadcast over its pixels

        def level(top: float) -> Tensor | float:
            return top * torch.rand(shape, device=x.device) if self.config.noise_uniform else top

        if self.config.noise_std > 0:
            x = x + level(self.config.noise_std) * torch.randn_like(x)
        if self.config.mask_prob > 0:
            x = x * (torch.rand_like(x) >= level(self.config.mask_prob))
        return x.clamp(0.0, 1.0)

    def training_step(self, batch: Batch, optimizer_name: str) -> StepOutput:
        clean = batch.images
        logits = self.decode_logits(self.encode(self.corrupt(clean)))
        loss = reconstruction_loss(logits, clean, self.config.loss)
        return StepOutput(loss, {"loss": loss.detach()})

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.prior.sample(n, generator)

    def interpolate_latents(self, a: Tensor, b: Tensor, t: Tensor) -> Tensor:
        """Straight lines: the code space has no Gaussian shell to stay on."""
        return torch.lerp(a, b, t[:, None])

    def fit_sampler(self, images: Tensor, labels: Tensor | None = None) -> None:
        """Fit the mixture to the codes of (a spread of at most 10,000) training images."""
        self.prior.fit(codes_of(self, lambda x, _: self.encode(x), images)[0])
