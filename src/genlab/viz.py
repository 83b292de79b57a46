"""Image grids, loss curves and interpolation strips, written with Pillow and matplotlib (no torchvision)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> (N, H, W, C) uint8."""
    array = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    return array.transpose(0, 2, 3, 1)


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> one (rows*H', cols*W', C) uint8 image with `padding` pixels between tiles."""
    tiles = to_uint8_hwc(images)
    n, h, w, c = tiles.shape
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + padding) + padding, cols * (w + padding) + padding, c), dtype=np.uint8)
    for index in range(n):
        r, col = divmod(index, cols)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = tiles[index]
    return grid


def save_image(
    array: np.ndarray, path: str | Path | BinaryIO, scale: int = 1, provenance: dict[str, Any] | None = None
) -> None:
    """Save an (H, W, C) uint8 array as PNG to a path or a binary file object (a served response),
    optionally upscaled with nearest neighbour for visibility. Every PNG carries provenance metadata
    (genlab.provenance): the given record, else the basic one."""
    from . import provenance as prov

    image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    if isinstance(path, (str, Path)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", pnginfo=prov.png_info(provenance or prov.basic()))


def save_grid(
    images: torch.Tensor,
    path: str | Path | BinaryIO,
    nrow: int | None = None,
    scale: int = 2,
    provenance: dict[str, Any] | None = None,
) -> None:
    save_image(make_grid(images, nrow), path, scale, provenance)


def plot_losses(records: list[dict], path: str | Path) -> None:
    """One panel per logged quantity against the training step, from metrics.jsonl records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for record in records:
        for key, value in record.items():
            if key not in ("step", "epoch", "time", "images_per_sec") and isinstance(value, (int, float)):
                series[key][0].append(record["step"])
                series[key][1].append(value)
    if not series:
        return
    fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3), squeeze=False)
    for axis, (key, (steps, values)) in zip(axes[0], sorted(series.items())):
        axis.plot(steps, values, linewidth=1)
        axis.set_title(key)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows a and b (d,) at fractions t (T,) -> (T, d); the path a
    Gaussian prior's typical set follows (a straight line passes through atypically short codes)."""
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if omega.abs() < 1e-6:
        return torch.lerp(a, b, t[:, None])
    return (torch.sin((1 - t) * omega)[:, None] * a + torch.sin(t * omega)[:, None] * b) / torch.sin(omega)
