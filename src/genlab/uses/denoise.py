"""Denoising with any model that can reconstruct (a denoising AE, a plain AE, a VAE): x -> decode(encode(x)).

`add_noise` makes the known corruptions the benchmark and the demos use; the seed fixes the noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigError
from .images import check_shape

NOISE_KINDS = ("gaussian", "mask")


@dataclass(frozen=True)
class Noise:
    kind: (
        str  # "gaussian": x + level * N(0, 1), clamped to [0, 1]; "mask": a share `level` of pixels set to 0
    )
    level: float

    def __str__(self) -> str:
        return f"{self.kind}:{self.level:g}"


def parse_noise(spec: str) -> Noise:
    """'gaussian:0.3' or 'mask:0.5' -> Noise, with a one-line error for anything else."""
    kind, _, level_text = spec.partition(":")
    try:
        level = float(level_text)
    except ValueError:
        level = float("nan")
    if kind not in NOISE_KINDS or not level_text or not (level >= 0):
        raise ConfigError(
            f"bad noise {spec!r}: use gaussian:SIGMA (e.g. gaussian:0.3) or mask:SHARE (e.g. mask:0.5)"
        )
    if kind == "mask" and level > 1:
        raise ConfigError(f"bad noise {spec!r}: a mask share lies in [0, 1]")
    return Noise(kind, level)


def add_noise(images: Tensor, noise: Noise | str, seed: int = 0) -> Tensor:
    """Images in [0, 1] with `noise` added, clamped back to [0, 1]; the same seed gives the same noise."""
    noise = parse_noise(noise) if isinstance(noise, str) else noise
    generator = torch.Generator().manual_seed(seed)
    images = images.detach().cpu().float()
    if noise.kind == "gaussian":
        return (images + noise.level * torch.randn(images.shape, generator=generator)).clamp(0.0, 1.0)
    keep = torch.rand(images.shape, generator=generator) >= noise.level
    return images * keep


def require_autoencoder(run, use: str) -> None:
    if not hasattr(run.model, "reconstruct"):
        raise ConfigError(f"model {run.model.name!r} cannot {use}: it has no encoder (use an ae or vae run)")


def denoise(
    run,
    images: Tensor,
    labels: Tensor | None = None,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Noisy images (N, C, H, W) in [0, 1] -> the model's reconstructions, on the CPU.

    A conditional autoencoder takes the images' `labels`; `progress(k)` is told of each finished batch.
    """
    require_autoencoder(run, "denoise")
    check_shape(images, tuple(run.model.config.image_shape), "the input")
    model = run.model
    model.eval()
    conditional = bool(getattr(model, "is_conditional", False))
    if conditional and labels is None:
        raise ConfigError("this autoencoder is conditional: give the images' labels (an .npz with labels)")
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size].to(model.device)
            if conditional:
                chunk_labels = labels[start : start + batch_size].to(model.device)
                out.append(model.reconstruct(chunk, labels=chunk_labels).cpu())
            else:
                out.append(model.reconstruct(chunk).cpu())
            if progress is not None:
                progress(len(chunk))
    return torch.cat(out).clamp(0.0, 1.0)
