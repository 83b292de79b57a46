"""Distances between two sets of features: FID, KID and precision / recall / density / coverage.

Every function takes feature matrices (N, D) as numpy arrays or torch tensors, from any extractor
(Inception, the domain classifier, raw pixels). The definitions follow the reference implementations so
numbers are comparable with published ones:

- FID: Heusel et al. 2017, computed like pytorch-fid (scipy `sqrtm`, eps fallback, imaginary check).
- KID: Binkowski et al. 2018, unbiased MMD^2 with the cubic polynomial kernel, subsets drawn like
  torch-fidelity (`np.random.RandomState(seed).choice(..., replace=False)`), std with ddof=0.
- Precision / recall: Kynkaanniemi et al. 2019; density / coverage: Naeem et al. 2020, both with the
  strict `<` comparisons and the k-th neighbour radius of clovaai/generative-evaluation-prdc.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from ..errors import DataError

ArrayLike = np.ndarray | Tensor
FrechetMethod = Literal["sqrtm", "eigh"]


def as_feature_tensor(x: ArrayLike, name: str = "features", dtype: torch.dtype = torch.float64) -> Tensor:
    """(N, D) finite features as a torch tensor of `dtype`, on the tensor's own device (CPU for numpy)."""
    t = torch.from_numpy(np.asarray(x)) if not isinstance(x, Tensor) else x.detach()
    if t.ndim != 2:
        raise DataError(
            f"{name} must be a 2-D (N, D) matrix, got shape {tuple(t.shape)}; flatten with .reshape(N, -1)"
        )
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise DataError(f"{name} is empty (shape {tuple(t.shape)}); pass at least a few samples")
    t = t.to(dtype)
    if not torch.isfinite(t).all():
        raise DataError(f"{name} contains NaN or inf values; check the images and the feature extractor")
    return t


def _as_numpy64(x: ArrayLike, name: str) -> np.ndarray:
    return as_feature_tensor(x, name).cpu().numpy()


def _check_same_dim(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise DataError(
            f"real and fake features have different widths ({a.shape[1]} vs {b.shape[1]}); "
            "extract both with the same feature extractor"
        )


# --- FID ----------------------------------------------------------------------------------------------


def feature_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) in float64: the Gaussian that FID compares."""
    f = _as_numpy64(features, "features")  # (N, D)
    if f.shape[0] < 2:
        raise DataError(f"need at least 2 samples for a covariance, got {f.shape[0]}")
    mu = f.mean(axis=0)  # (D,)
    sigma = np.cov(f, rowvar=False)  # (D, D), ddof=1 as in pytorch-fid
    return mu, np.atleast_2d(sigma)


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    """Tr sqrtm(S1 S2) the pytorch-fid way: scipy sqrtm, eps*I if singular, drop small imaginary parts."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)  # (D, D), possibly complex
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            largest = float(np.max(np.abs(covmean.imag)))
            raise DataError(
                f"FID matrix square root has a large imaginary part ({largest:.3g}); the covariances are "
                "degenerate: use more samples than feature dimensions, or method='eigh'"
            )
        covmean = covmean.real
    return float(np.trace(covmean))


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root via eigh; tiny negative eigenvalues from round-off are clipped to 0."""
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)  # w (D,), v (D, D)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr sqrtm(S1 S2) exactly, via the symmetric PSD matrix sqrt(S1) S2 sqrt(S1) with the same spectrum."""
    root1 = _psd_sqrt(sigma1)  # (D, D)
    m = root1 @ sigma2 @ root1  # (D, D), similar to S1 S2
    w = np.linalg.eigvalsh((m + m.T) / 2)  # (D,) real, >= 0 up to round-off
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = 1e-6,
    method: FrechetMethod = "sqrtm",
) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)) between two Gaussians.

    method="sqrtm" reproduces pytorch-fid; method="eigh" is exact for PSD inputs, several times faster at
    D=2048 and well defined for singular covariances (N < D).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise DataError(
            f"Gaussian statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
            f"{sigma2.shape}; compute both with the same feature extractor"
        )
    diff = mu1 - mu2  # (D,)
    if method == "sqrtm":
        tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
    elif method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
    else:
        raise ValueError(f"unknown method {method!r}; use 'sqrtm' or 'eigh'")
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def fid(real_features: ArrayLike, fake_features: ArrayLike, method: FrechetMethod = "sqrtm") -> float:
    """Frechet distance between Gaussians fitted to two feature sets (lower is better, 0 = same stats)."""
    mu1, sigma1 = feature_statistics(real_features)
    mu2, sigma2 = feature_statistics(fake_features)
    return frechet_distance(mu1, sigma1, mu2, sigma2, method=method)


# --- KID ----------------------------------------------------------------------------------------------


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3 for all pairs: (m, d), (n, d) -> (m, n)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-size samples (m, d): off-diagonal within-set means minus the cross mean."""
    m = x.shape[0]
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)  # (m, m)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kid(
    real_features: ArrayLike,
    fake_features: ArrayLike,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance: (mean, std) of unbiased MMD^2 over random subsets (~0 for equal laws).

    Unlike FID it is unbiased in the sample size, so it can be compared across runs with few samples.
    subset_size is clipped to the smaller set; the same seed draws the same subsets.
    """
    real = _as_numpy64(real_features, "real_features")  # (N1, D)
    fake = _as_numpy64(fake_features, "fake_features")  # (N2, D)
    _check_same_dim(real, fake)
    if num_subsets < 1 or subset_size < 2:
        raise ValueError(f"need num_subsets >= 1 and subset_size >= 2, got {num_subsets}, {subset_size}")
    m = min(subset_size, real.shape[0], fake.shape[0])
    if m < 2:
        raise DataError(f"KID needs at least 2 samples in each set, got {real.shape[0]} and {fake.shape[0]}")
    rng = np.random.RandomState(seed)
    mmds = np.empty(num_subsets)
    for i in range(num_subsets):
        x = real[rng.choice(real.shape[0], m, replace=False)]  # (m, D)
        y = fake[rng.choice(fake.shape[0], m, replace=False)]  # (m, D)
        mmds[i] = _mmd2_unbiased(x, y)
    return float(mmds.mean()), float(mmds.std())


# --- precision / recall / density / coverage ----------------------------------------------------------


def _kth_neighbour_radii(x: Tensor, k: int, batch_size: int) -> Tensor:
    """Distance from each row to its k-th nearest other row (self counts as the 0-th): (N, D) -> (N,)."""
    radii = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        d = torch.cdist(x[start : start + batch_size], x)  # (b, N)
        radii[start : start + batch_size] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return radii


def precision_recall_density_coverage(
    real_features: ArrayLike,
    fake_features: ArrayLike,
    k: int = 3,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Fidelity (precision, density) and diversity (recall, coverage) from k-NN balls around samples.

    precision: share of fakes inside some real k-NN ball; recall: share of reals inside some fake ball;
    density: mean count of real balls holding a fake, / k (can exceed 1); coverage: share of real balls
    holding at least one fake. Distances are float64, in row blocks of `batch_size`, so memory stays
    O(batch_size * N) and 10k x 10k runs in well under a GB.
    """
    real = as_feature_tensor(real_features, "real_features")  # (N, D) float64
    fake = as_feature_tensor(fake_features, "fake_features")  # (M, D) float64
    _check_same_dim(real, fake)
    if device is not None or real.device != fake.device:
        real, fake = real.to(device or "cpu"), fake.to(device or "cpu")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if real.shape[0] <= k or fake.shape[0] <= k:
        raise DataError(
            f"need more than k={k} samples in each set, got {real.shape[0]} real and {fake.shape[0]} fake"
        )
    # Distances are translation invariant; centring shrinks norms and so the round-off of cdist's matmul path.
    center = real.mean(dim=0, keepdim=True)  # (1, D)
    real, fake = real - center, fake - center

    real_radii = _kth_neighbour_radii(real, k, batch_size)  # (N,)
    fake_radii = _kth_neighbour_radii(fake, k, batch_size)  # (M,)
    balls_holding_fake = torch.zeros(fake.shape[0], dtype=torch.int64, device=fake.device)  # (M,)
    recall_hits = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)  # (N,)
    coverage_hits = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)  # (N,)
    for start in range(0, real.shape[0], batch_size):
        stop = min(start + batch_size, real.shape[0])
        d = torch.cdist(real[start:stop], fake)  # (b, M)
        inside_real_ball = d < real_radii[start:stop, None]  # (b, M)
        balls_holding_fake += inside_real_ball.sum(dim=0)
        recall_hits[start:stop] = (d < fake_radii[None, :]).any(dim=1)
        coverage_hits[start:stop] = d.min(dim=1).values < real_radii[start:stop]
    return {
        "precision": float((balls_holding_fake > 0).double().mean()),
        "recall": float(recall_hits.double().mean()),
        "density": float(balls_holding_fake.double().mean() / k),
        "coverage": float(coverage_hits.double().mean()),
    }
