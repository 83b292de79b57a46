"""Paired image quality: MSE, PSNR and SSIM between reconstructions and their originals.

Images are (N, C, H, W) floats in [0, 1] (uint8 tensors are divided by 255); each metric is computed per
image in float64 and then averaged, so a batch of one image gives the textbook number. SSIM follows
Wang et al. 2004 as in skimage `structural_similarity(gaussian_weights=True, use_sample_covariance=False,
data_range=1.0)`: an 11-tap Gaussian window (sigma 1.5, truncate 3.5), K1=0.01, K2=0.03, only windows
fully inside the image, per channel, averaged over the channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError

_RANGE_TOLERANCE = 1e-3  # float round-off above 1.0 or below 0.0 is fine; [-1, 1] or 0..255 data is not


def _as_image_pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Validate two image batches and return them as float64 (N, C, H, W) in [0, 1]."""
    pair = []
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor):
            raise DataError(f"{name} must be a torch tensor of images (N, C, H, W), got {type(t).__name__}")
        if t.ndim == 3:
            t = t.unsqueeze(0)  # a single (C, H, W) image
        if t.ndim != 4:
            raise DataError(f"{name} must be images (N, C, H, W), got shape {tuple(t.shape)}")
        t = t.detach().double() / 255.0 if t.dtype == torch.uint8 else t.detach().double()
        if not torch.isfinite(t).all():
            raise DataError(f"{name} contains NaN or inf pixels")
        lo, hi = float(t.min()), float(t.max())
        if lo < -_RANGE_TOLERANCE or hi > 1.0 + _RANGE_TOLERANCE:
            raise DataError(
                f"{name} must be in [0, 1] but spans [{lo:.3g}, {hi:.3g}]; rescale it "
                "(e.g. (x + 1) / 2 for tanh outputs, x / 255 for 0..255 data)"
            )
        pair.append(t)
    if pair[0].shape != pair[1].shape:
        raise DataError(f"image batches differ in shape: {tuple(pair[0].shape)} vs {tuple(pair[1].shape)}")
    return pair[0], pair[1].to(pair[0].device)


def mse_per_image(x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error of each image pair: (N, C, H, W) x2 -> (N,) float64."""
    x, y = _as_image_pair(x, y)
    return (x - y).pow(2).flatten(1).mean(dim=1)


def mse(x: Tensor, y: Tensor) -> float:
    """Mean over images of the per-image MSE (equal to the pixel-wise MSE, since images have equal size)."""
    return float(mse_per_image(x, y).mean())


def psnr_per_image(x: Tensor, y: Tensor, max_db: float | None = 100.0) -> Tensor:
    """10 log10(1 / MSE) per image pair (data range 1): (N,) float64 in dB.

    Identical images have MSE 0 and an infinite PSNR; one such pair would make the batch mean inf, so each
    value is capped at `max_db` (100 dB is far above any lossy reconstruction). max_db=None keeps inf.
    """
    err = mse_per_image(x, y)  # (N,)
    db = -10.0 * torch.log10(err)  # inf where err == 0
    return db if max_db is None else db.clamp(max=max_db)


def psnr(x: Tensor, y: Tensor, max_db: float | None = 100.0) -> float:
    """Mean over images of the per-image PSNR in dB (not the PSNR of the mean MSE)."""
    return float(psnr_per_image(x, y, max_db=max_db).mean())


def gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> Tensor:
    """Normalized 1-D Gaussian taps (2r+1,), r = int(truncate*sigma + 0.5) as scipy.ndimage: 11 for 1.5."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


def _blur_valid(img: Tensor, taps: Tensor) -> Tensor:
    """Separable Gaussian filter keeping only fully inside windows: (B, 1, H, W) -> (B, 1, H-2r, W-2r)."""
    n = taps.numel()
    out = F.conv2d(img, taps.view(1, 1, n, 1))  # along H
    return F.conv2d(out, taps.view(1, 1, 1, n))  # along W


def ssim_per_image(
    x: Tensor, y: Tensor, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03, batch_size: int = 256
) -> Tensor:
    """Mean SSIM of each image pair, averaged over channels: (N, C, H, W) x2 -> (N,) float64 in [-1, 1].

    Images must be at least as large as the window (11x11 for sigma 1.5).
    """
    x, y = _as_image_pair(x, y)
    n, c, h, w = x.shape
    taps = gaussian_window(sigma).to(x.device)  # (win,)
    win = taps.numel()
    if h < win or w < win:
        raise DataError(
            f"SSIM needs images of at least {win}x{win} pixels, got {h}x{w}; use mse/psnr instead"
        )
    c1, c2 = k1**2, k2**2  # (K * data_range)^2 with data_range = 1
    out = torch.empty(n, dtype=torch.float64, device=x.device)
    for start in range(0, n, batch_size):
        a = x[start : start + batch_size].reshape(-1, 1, h, w)  # (b*C, 1, H, W): channels are independent
        b = y[start : start + batch_size].reshape(-1, 1, h, w)
        mu_a, mu_b = _blur_valid(a, taps), _blur_valid(b, taps)  # (b*C, 1, H', W')
        var_a = _blur_valid(a * a, taps) - mu_a**2  # population (weighted) moments, as Wang et al.
        var_b = _blur_valid(b * b, taps) - mu_b**2
        cov_ab = _blur_valid(a * b, taps) - mu_a * mu_b
        s = ((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        out[start : start + batch_size] = s.reshape(-1, c, s.shape[-2] * s.shape[-1]).mean(dim=(1, 2))
    return out


def ssim(x: Tensor, y: Tensor, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> float:
    """Mean over images of the per-image SSIM (1 = identical)."""
    return float(ssim_per_image(x, y, sigma=sigma, k1=k1, k2=k2).mean())
