"""Differentiable augmentation for a GAN's discriminator (DiffAugment, Zhao et al. 2020).

With a few thousand training images D memorizes them: it scores real digits ~0.9 and fakes ~0.1 within a
few epochs and G's gradients turn to noise. Showing D every image, real or generated, through the same
random translation / cutout / brightness-contrast change makes memorizing useless, and because each op
is differentiable G still learns through it. The same ops go on real and fake images in D's step and on
fakes in G's step, so the augmented distributions match exactly when G matches the data.

Randomness comes from torch's default generator on the images' device, which the trainer seeds and saves
with each checkpoint (resume stays exact).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..constraints import Policy

TRANSLATION_RATIO = 0.125  # shift by up to 1/8 of the side: 3 pixels on 28x28
CUTOUT_RATIO = 0.5  # erase a square of half the side


def translate(x: Tensor, ratio: float = TRANSLATION_RATIO) -> Tensor:
    """Shift each image (B, C, H, W) by its own integer offset in [-ratio*side, ratio*side] per axis; the
    pixels shifted in repeat the border (the background, for digits)."""
    b, _, h, w = x.shape
    max_y, max_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    shift_y = torch.randint(-max_y, max_y + 1, (b, 1, 1), device=x.device)
    shift_x = torch.randint(-max_x, max_x + 1, (b, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device)[None, :, None] - shift_y).clamp(0, h - 1)  # (B, H, 1)
    cols = (torch.arange(w, device=x.device)[None, None, :] - shift_x).clamp(0, w - 1)  # (B, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # gather (B, H, W, C) -> back


def cutout(x: Tensor, ratio: float = CUTOUT_RATIO, fill: float = 0.0) -> Tensor:
    """Set one square of side ratio*side per image (B, C, H, W), at a random centre, to `fill`."""
    b, _, h, w = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + 1 - size_y % 2, (b, 1, 1), device=x.device) - size_y // 2
    left = torch.randint(0, w + 1 - size_x % 2, (b, 1, 1), device=x.device) - size_x // 2
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= top) & (ys < top + size_y) & (xs >= left) & (xs < left + size_x)  # (B, H, W)
    keep = (~inside).unsqueeze(1).to(x.dtype)  # (B, 1, H, W)
    return x * keep + fill * (1.0 - keep)


def color(x: Tensor) -> Tensor:
    """Random brightness (+-0.5) and contrast (x0.5..1.5 around each image's mean), per image."""
    b = x.shape[0]
    brightness = torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5
    contrast = torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5
    x = x + brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast + mean


OPS = {"color": color, "translation": translate, "cutout": cutout}


def parse_policy(policy: str) -> tuple[str, ...]:
    """'translation,cutout' -> ('translation', 'cutout'); '' -> (). Unknown names raise ValueError."""
    names = Policy.names(policy)
    unknown = [name for name in names if name not in OPS]
    if unknown:
        raise ValueError(
            f"unknown augmentation {unknown[0]!r}: choose from {', '.join(OPS)} (comma-separated)"
        )
    return names


def augment(x: Tensor, policy: tuple[str, ...], fill: float = 0.0) -> Tensor:
    """Apply the policy's ops in order; `fill` is the value cutout writes (the data's background)."""
    for name in policy:
        x = cutout(x, fill=fill) if name == "cutout" else OPS[name](x)
    return x
