"""Features of real images, cached per (dataset, split, extractor hash, split content).

FID needs the mean and covariance of the whole split; KID and precision/recall/density/coverage need
the features themselves, of a fixed subset (the first REAL_FEATURE_CAP of a fixed permutation). Both are
stored as safetensors beside a JSON file that says what they are, so a repeated eval skips the pass.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..data import ImageDataset, data_dir
from .extractors import FeatureExtractor, dataset_fingerprint, dataset_slug

REAL_FEATURE_CAP = 10_000  # real features kept for KID / PRDC (the default sample count)
SUBSET_SEED = 0  # fixed forever: the subset must not depend on the user's --seed, or caching breaks
EXTRACT_CHUNK = 2000  # images converted to float per pass, to bound memory on large splits


@dataclass
class RealStats:
    mu: np.ndarray  # (D,) float64, over the whole split
    sigma: np.ndarray  # (D, D) float64, unbiased, over the whole split
    features: Tensor  # (M, D) float32: the fixed subset, M = min(REAL_FEATURE_CAP, split size)
    num_images: int  # split size
    path: Path
    from_cache: bool

    def subset(self, n: int) -> Tensor:
        """The first n features of the fixed subset (all of them if n is larger)."""
        return self.features[:n]


def stats_path(dataset: ImageDataset, name: str, split: str, extractor: FeatureExtractor) -> Path:
    key = f"{dataset_slug(name)}-{split}-{extractor.name}-{extractor.hash[:16]}-{dataset_fingerprint(dataset)[:12]}"
    return data_dir() / "eval-stats" / f"{key}.safetensors"


def real_statistics(
    dataset: ImageDataset, name: str, split: str, extractor: FeatureExtractor, use_cache: bool = True
) -> RealStats:
    """The split's feature statistics under `extractor`, from the cache or computed (and cached)."""
    path = stats_path(dataset, name, split, extractor)
    if use_cache and path.is_file() and path.with_suffix(".json").is_file():
        try:
            tensors = load_file(str(path))
            meta = json.loads(path.with_suffix(".json").read_text())
            return RealStats(
                tensors["mu"].numpy(),
                tensors["sigma"].numpy(),
                tensors["features"],
                int(meta["num_images"]),
                path,
                True,
            )
        except (OSError, SafetensorError, KeyError, json.JSONDecodeError):
            pass  # a damaged cache entry is recomputed and overwritten below
    return _compute_and_store(dataset, name, split, extractor, path)


def _compute_and_store(
    dataset: ImageDataset, name: str, split: str, extractor: FeatureExtractor, path: Path
) -> RealStats:
    n = len(dataset)
    features = torch.cat(
        [
            extractor.features(dataset.images[start : start + EXTRACT_CHUNK].float() / 255.0)
            for start in range(0, n, EXTRACT_CHUNK)
        ]
    )  # (N, D) float32
    f64 = features.double().numpy()
    mu = f64.mean(axis=0)  # (D,)
    sigma = np.atleast_2d(np.cov(f64, rowvar=False))  # (D, D), ddof=1 as in pytorch-fid
    order = np.random.RandomState(SUBSET_SEED).permutation(n)[:REAL_FEATURE_CAP]
    subset = features[torch.from_numpy(order)].contiguous()  # (M, D)
    meta: dict[str, Any] = {
        "dataset": name,
        "split": split,
        "num_images": n,
        "subset_size": len(order),
        "subset_seed": SUBSET_SEED,
        "extractor": extractor.describe(),
        "dataset_sha256": dataset_fingerprint(dataset),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(
        {
            "mu": torch.from_numpy(mu),
            "sigma": torch.from_numpy(np.ascontiguousarray(sigma)),
            "features": subset,
        },
        str(temp),
    )
    temp_meta = path.with_name(f".{path.stem}.{os.getpid()}.json.tmp")
    temp_meta.write_text(json.dumps(meta, indent=2))
    os.replace(temp_meta, path.with_suffix(".json"))
    os.replace(temp, path)
    return RealStats(mu, sigma, subset, n, path, False)
