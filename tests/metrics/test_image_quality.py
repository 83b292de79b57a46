"""MSE / PSNR hand values; SSIM against an independent scipy.ndimage implementation (and skimage if present)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from genlab.errors import DataError
from genlab.metrics.image_quality import mse, mse_per_image, psnr, psnr_per_image, ssim, ssim_per_image


def _images(n: int = 4, c: int = 3, h: int = 32, w: int = 28, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Smooth-ish images: blurred noise, so SSIM is far from 0 and from 1.
    x = torch.rand(n, c, h, w, generator=g, dtype=torch.float64)
    return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004 for one (H, W) channel, data range 1, via scipy.ndimage.gaussian_filter."""
    sigma, truncate = 1.5, 3.5
    c1, c2 = 0.01**2, 0.03**2

    def blur(z):
        return gaussian_filter(z, sigma=sigma, truncate=truncate)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    pad = int(truncate * sigma + 0.5)  # drop the borders where the window leaves the image
    return float(s[pad:-pad, pad:-pad].mean())


def test_mse_and_psnr_hand_values():
    x = torch.zeros(2, 1, 4, 4)
    y = torch.zeros(2, 1, 4, 4)
    y[0] = 0.1  # MSE 0.01 -> 20 dB
    y[1, 0, 0, :] = 1.0  # one row of 4 out of 16 pixels off by 1 -> MSE 0.25 -> 10 log10(4) dB
    assert mse_per_image(x, y).tolist() == pytest.approx([0.01, 0.25])
    assert mse(x, y) == pytest.approx(0.13)
    assert psnr_per_image(x, y).tolist() == pytest.approx([20.0, 10 * math.log10(4)])
    assert psnr(x, y) == pytest.approx((20.0 + 10 * math.log10(4)) / 2)  # mean of per-image dB


def test_psnr_of_identical_images_is_capped_or_inf():
    x = _images(2)
    assert psnr(x, x) == 100.0
    assert psnr(x, x, max_db=None) == math.inf
    assert mse(x, x) == 0.0


def test_uint8_images_are_scaled():
    x = torch.full((1, 1, 4, 4), 255, dtype=torch.uint8)
    assert mse(x, torch.ones(1, 1, 4, 4)) == 0.0


def test_out_of_range_and_mismatched_images_are_rejected():
    x = _images(2)
    with pytest.raises(DataError):
        mse(x * 255, x)
    with pytest.raises(DataError):
        mse(x * 2 - 1, x)
    with pytest.raises(DataError):
        mse(x, x[:1])
    with pytest.raises(DataError):
        ssim(x[..., :8, :8], x[..., :8, :8])  # smaller than the 11x11 window


def test_ssim_of_identical_images_is_one():
    x = _images()
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_independent_scipy_implementation():
    x = _images(3, 3, 32, 28, seed=1)
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=x.dtype)).clamp(
        0, 1
    )
    got = ssim_per_image(x, y)
    xs, ys = x.numpy(), y.numpy()
    expected = [np.mean([_reference_ssim(xs[i, c], ys[i, c]) for c in range(3)]) for i in range(3)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-10)
    assert ssim(x, y) == pytest.approx(float(np.mean(expected)), abs=1e-10)
    # float32 input and a batch split across chunks give the same numbers
    np.testing.assert_allclose(
        ssim_per_image(x.float(), y.float(), batch_size=2).numpy(), expected, rtol=0, atol=1e-6
    )


def test_ssim_matches_skimage_when_available():
    metrics = pytest.importorskip("skimage.metrics")
    x = _images(1, 3, 32, 32, seed=3)
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=x.dtype)).clamp(
        0, 1
    )
    expected = metrics.structural_similarity(
        x[0].numpy(),
        y[0].numpy(),
        channel_axis=0,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert ssim(x, y) == pytest.approx(float(expected), abs=1e-8)


def test_ssim_decreases_with_noise():
    x = _images(4, 1, 28, 28, seed=5)
    g = torch.Generator().manual_seed(6)
    noise = torch.randn(x.shape, generator=g, dtype=x.dtype)
    values = [ssim(x, (x + s * noise).clamp(0, 1)) for s in (0.0, 0.02, 0.05, 0.1, 0.3)]
    assert values[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] < 0.5
