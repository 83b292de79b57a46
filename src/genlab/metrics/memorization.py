"""Does the generator copy its training set? Nearest-neighbour distances in pixel space.

A sample's L2 distance to its closest training image means little on its own; held-out real images give
the scale: a real image the model never saw is typically this far from the training set. A sample closer
to a training image than almost every test image (below the `threshold_quantile` quantile) is a near copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError


def _as_flat(x: Tensor | np.ndarray, name: str) -> Tensor:
    """Images (N, ...) or vectors (N, D) as a validated (N, D) view, still in their own dtype."""
    t = torch.from_numpy(np.asarray(x)) if not isinstance(x, Tensor) else x.detach()
    if t.ndim < 2 or t.shape[0] == 0:
        raise DataError(
            f"{name} must be a non-empty batch (N, ...) of images or vectors, got shape {tuple(t.shape)}"
        )
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise DataError(f"{name} contains NaN or inf values")
    return t.reshape(t.shape[0], -1)


def _unit(t: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast to a float dtype, mapping uint8 0..255 to [0, 1] so uint8 and float images compare."""
    return t.to(dtype) / 255.0 if t.dtype == torch.uint8 else t.to(dtype)


def nearest_neighbors(
    queries: Tensor | np.ndarray,
    references: Tensor | np.ndarray,
    chunk: int = 1024,
    reference_chunk: int = 8192,
) -> tuple[Tensor, Tensor]:
    """For each query, the L2 distance to its nearest reference and that reference's index.

    queries (N, ...) and references (M, ...) are flattened to (N, D), (M, D). The search runs in float32
    blocks of chunk x reference_chunk (so memory stays bounded for any M); the returned distances are then
    recomputed exactly in float64 from the chosen pairs, so an exact copy gives 0.
    Returns distances (N,) float64 and indices (N,) int64, on the queries' device.
    """
    q_raw = _as_flat(queries, "queries")  # (N, D) in the caller's dtype
    r_raw = _as_flat(references, "references").to(q_raw.device)  # (M, D)
    if q_raw.shape[1] != r_raw.shape[1]:
        raise DataError(
            f"queries have {q_raw.shape[1]} values each but references {r_raw.shape[1]}; use the same image size"
        )
    device = q_raw.device
    r = _unit(r_raw, torch.float32)  # (M, D)
    center = r.mean(dim=0, keepdim=True)  # (1, D): distances are translation invariant, round-off is not
    qc, rc = _unit(q_raw, torch.float32) - center, r - center  # (N, D), (M, D)
    best_idx = torch.empty(qc.shape[0], dtype=torch.int64, device=device)  # (N,)
    for qs in range(0, qc.shape[0], chunk):
        block = qc[qs : qs + chunk]  # (b, D)
        best_d = torch.full((block.shape[0],), float("inf"), device=device)  # (b,)
        best_i = torch.zeros(block.shape[0], dtype=torch.int64, device=device)  # (b,)
        for rs in range(0, rc.shape[0], reference_chunk):
            d = torch.cdist(block, rc[rs : rs + reference_chunk])  # (b, m)
            d_min, i_min = d.min(dim=1)  # (b,)
            better = d_min < best_d
            best_d = torch.where(better, d_min, best_d)
            best_i = torch.where(better, i_min + rs, best_i)
        best_idx[qs : qs + chunk] = best_i
    exact = (_unit(q_raw, torch.float64) - _unit(r_raw[best_idx], torch.float64)).norm(dim=1)  # (N,) float64
    return exact, best_idx


def memorization_report(
    samples: Tensor | np.ndarray,
    train_images: Tensor | np.ndarray,
    test_images: Tensor | np.ndarray,
    threshold_quantile: float = 0.01,
    top_k: int = 8,
    chunk: int = 1024,
) -> dict[str, Any]:
    """How many samples are near copies of training images, judged against held-out real images.

    All three sets are images (N, C, H, W) of one size, floats in [0, 1] or uint8 (scaled by 1/255).
    Returns a JSON-friendly dict: the distance threshold, the share and count of near copies, median
    nearest-train distances of samples and of test images, and `closest_pairs`, the top_k (sample, train)
    pairs by distance so a caller can show them side by side.
    """
    if not 0.0 < threshold_quantile < 1.0:
        raise ValueError(f"threshold_quantile must be in (0, 1), got {threshold_quantile}")
    sample_d, sample_i = nearest_neighbors(samples, train_images, chunk=chunk)  # (N,), (N,)
    test_d, _ = nearest_neighbors(test_images, train_images, chunk=chunk)  # (T,)
    sample_np, test_np = sample_d.cpu().numpy(), test_d.cpu().numpy()
    threshold = float(np.quantile(test_np, threshold_quantile))
    near = sample_np < threshold  # (N,) bool
    order = np.argsort(sample_np, kind="stable")[:top_k]
    sample_idx = sample_i.cpu().numpy()
    return {
        "num_samples": int(sample_np.shape[0]),
        "num_test": int(test_np.shape[0]),
        "threshold_quantile": threshold_quantile,
        "threshold": threshold,
        "near_copy_share": float(near.mean()),
        "num_near_copies": int(near.sum()),
        "median_sample_distance": float(np.median(sample_np)),
        "median_test_distance": float(np.median(test_np)),
        "closest_pairs": [
            {"sample": int(i), "train": int(sample_idx[i]), "distance": float(sample_np[i])} for i in order
        ],
    }
