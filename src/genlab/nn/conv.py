"""Convolutional stacks shared by the GAN, VAE and autoencoder (DCGAN-style, Radford et al. 2016).

Strided convolutions do all the resampling (no pooling): a downsampling stack halves H and W per stage
and doubles the channels; an upsampling stack does the reverse from a small (C0, h0, w0) block that a
linear layer makes from the latent code. `conv_plan` decides how many stages an image shape tiles into:
28x28 -> 14 -> 7 (two stages), 32x32 -> 4x4 and 64x64 -> 4x4 (three and four stages).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

MIN_BASE = 4  # the smallest block the stacks start from / end at


def conv_plan(image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """(C, H, W) -> (stages, h0, w0): halve H and W together while both stay even and >= MIN_BASE.

    Shapes that cannot halve at least twice (e.g. 30x30 -> 15) cannot be tiled by stride-2 stacks."""
    _, height, width = image_shape
    stages = 0
    while height % 2 == 0 and width % 2 == 0 and height // 2 >= MIN_BASE and width // 2 >= MIN_BASE:
        height, width, stages = height // 2, width // 2, stages + 1
    if stages < 2:
        raise ValueError(
            f"arch 'conv' cannot tile images of shape {tuple(image_shape)}: H and W must halve at least "
            f"twice to >= {MIN_BASE} pixels (e.g. 28x28, 32x32, 64x64); use arch 'mlp' for this shape"
        )
    return stages, height, width


def _maybe_sn(layer: nn.Module, spectral_norm: bool) -> nn.Module:
    return _spectral_norm(layer) if spectral_norm else layer


def conv_downsampler(
    image_shape: tuple[int, int, int],
    width: int,
    leaky_slope: float = 0.2,
    batch_norm: bool = False,
    spectral_norm: bool = False,
    dropout: float = 0.0,
) -> tuple[nn.Sequential, int]:
    """(B, C, H, W) -> flat features (B, F), and F. Stage i: 4x4 conv stride 2 to width * 2^i channels,
    [BatchNorm, not on the first stage as in DCGAN], LeakyReLU, [dropout]."""
    stages, h0, w0 = conv_plan(image_shape)
    channels = image_shape[0]
    layers: list[nn.Module] = []
    for stage in range(stages):
        out_channels = width * 2**stage
        layers.append(_maybe_sn(nn.Conv2d(channels, out_channels, 4, 2, 1), spectral_norm))
        if batch_norm and stage > 0:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.LeakyReLU(leaky_slope))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        channels = out_channels
    layers.append(nn.Flatten())
    return nn.Sequential(*layers), channels * h0 * w0


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose scale and shift are looked up per class (de Vries et al. 2017; Miyato & Koyama 2018):
    the class steers every layer of the generator, not only its input."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.scale = nn.Embedding(num_classes, channels)
        self.shift = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        scale = self.scale(labels)[:, :, None, None]  # (B, C, 1, 1)
        shift = self.shift(labels)[:, :, None, None]
        return self.norm(x) * scale + shift


class ConvUpsampler(nn.Module):
    """(B, in_features) [+ labels] -> (B, C, H, W): linear to (C0, h0, w0), then 4x4 transposed convs
    stride 2 halving the channels, ReLU between; [BatchNorm, or class-conditional BatchNorm when
    num_classes > 0]; the last stage outputs C channels through `final` ("tanh" or None for logits)."""

    def __init__(
        self,
        in_features: int,
        image_shape: tuple[int, int, int],
        width: int,
        batch_norm: bool = True,
        num_classes: int = 0,
        final: str | None = "tanh",
    ):
        super().__init__()
        stages, h0, w0 = conv_plan(image_shape)
        self.base_shape = (width * 2 ** (stages - 1), h0, w0)
        self.project = nn.Linear(in_features, self.base_shape[0] * h0 * w0)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        channels = self.base_shape[0]
        for stage in range(stages):
            out_channels = image_shape[0] if stage == stages - 1 else channels // 2
            self.norms.append(self._norm(channels, batch_norm, num_classes))
            self.convs.append(nn.ConvTranspose2d(channels, out_channels, 4, 2, 1))
            channels = out_channels
        self.conditional = batch_norm and num_classes > 0
        self.final = nn.Tanh() if final == "tanh" else nn.Identity()

    @staticmethod
    def _norm(channels: int, batch_norm: bool, num_classes: int) -> nn.Module:
        if not batch_norm:
            return nn.Identity()
        return ConditionalBatchNorm2d(channels, num_classes) if num_classes > 0 else nn.BatchNorm2d(channels)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        x = self.project(z).view(z.shape[0], *self.base_shape)  # (B, C0, h0, w0)
        for norm, conv in zip(self.norms, self.convs):
            x = norm(x, labels) if self.conditional else norm(x)
            x = conv(torch.relu(x))
        return self.final(x)


def conv_encoder(
    image_shape: tuple[int, int, int], width: int, out_features: int, leaky_slope: float = 0.2
) -> nn.Sequential:
    """(B, C, H, W) -> (B, out_features): the downsampling stack, then one linear layer (the codes of the
    VAE and autoencoder stay flat vectors, whatever the network)."""
    body, features = conv_downsampler(image_shape, width, leaky_slope=leaky_slope)
    return nn.Sequential(*body, nn.Linear(features, out_features))
