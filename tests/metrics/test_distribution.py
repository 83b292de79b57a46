"""FID, KID and precision/recall/density/coverage, each held to an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.distance import cdist

from genlab.errors import DataError
from genlab.metrics.distribution import (
    feature_statistics,
    fid,
    frechet_distance,
    kid,
    precision_recall_density_coverage,
)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- FID ----------------------------------------------------------------------------------------------


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula, written out with scipy only."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))


def test_feature_statistics_is_float64_mean_and_unbiased_cov():
    x = _rng().normal(size=(40, 5)).astype(np.float32)
    mu, sigma = feature_statistics(torch.from_numpy(x))
    assert mu.dtype == np.float64 and sigma.shape == (5, 5)
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0))
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False))


def test_fid_matches_plain_scipy_computation():
    rng = _rng(1)
    a = rng.normal(size=(400, 16))
    b = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16)) * 0.5 + 0.3
    expected = _scipy_fid(a, b)
    assert fid(a, b) == pytest.approx(expected, rel=1e-9)
    assert fid(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(expected, rel=1e-5)


def test_eigh_path_equals_sqrtm_path():
    rng = _rng(2)
    a = rng.normal(size=(500, 64))
    b = rng.normal(size=(500, 64)) @ rng.normal(size=(64, 64)) * 0.2 + 0.1
    assert fid(a, b, method="eigh") == pytest.approx(fid(a, b, method="sqrtm"), rel=1e-8)


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    # For commuting (here diagonal) covariances: ||mu1-mu2||^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 5.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    for method in ("sqrtm", "eigh"):
        assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method) == pytest.approx(expected)


def test_fid_same_gaussian_is_small_and_shift_gives_mu_part():
    rng = _rng(3)
    a, b = rng.normal(size=(5000, 8)), rng.normal(size=(5000, 8))
    assert 0.0 <= fid(a, b) < 0.03
    shift = np.array([1.0, -2.0, 0.5, 0, 0, 0, 0, 3.0])
    # Same draws shifted: identical covariances, so FID is exactly ||shift||^2.
    assert fid(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-9)
    # Independent draws: the mean part dominates, the covariance part stays tiny.
    assert fid(a, b + shift) == pytest.approx(float(shift @ shift), abs=0.2)


def test_fid_is_symmetric():
    rng = _rng(4)
    a, b = rng.normal(size=(200, 10)), rng.gamma(2.0, size=(250, 10))
    assert fid(a, b) == pytest.approx(fid(b, a), rel=1e-8)


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_fid_with_fewer_samples_than_dimensions_does_not_crash(method):
    rng = _rng(5)
    a, b = rng.normal(size=(20, 64)), rng.normal(size=(15, 64)) + 0.1
    value = fid(a, b, method=method)
    assert np.isfinite(value) and value > 0
    assert value == pytest.approx(fid(a, b, method="eigh"), rel=1e-4)


def test_fid_rejects_bad_input():
    a = np.zeros((10, 4))
    with pytest.raises(DataError):
        fid(a, np.zeros((10, 5)))
    with pytest.raises(DataError):
        fid(np.zeros(10), a)
    with pytest.raises(DataError):
        fid(a, np.full((10, 4), np.nan))


# --- KID ----------------------------------------------------------------------------------------------


def _direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 written as explicit double sums with k(a, b) = (a.b / d + 1)^3."""
    n, d = x.shape

    def k(a, b):
        return (float(a @ b) / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(n)) / (n * n)
    return xx + yy - 2 * xy


def test_kid_matches_direct_formula():
    rng = _rng(6)
    x, y = rng.normal(size=(25, 6)), rng.normal(size=(25, 6)) * 1.3 + 0.2
    mean, std = kid(x, y, num_subsets=1, subset_size=25)
    assert mean == pytest.approx(_direct_mmd2(x, y), rel=1e-10)
    assert std == 0.0


def test_kid_near_zero_for_same_distribution_and_positive_for_different():
    rng = _rng(7)
    a, b = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    mean_same, std_same = kid(a, b, num_subsets=20, subset_size=300)
    assert abs(mean_same) < 0.02 and std_same > 0
    mean_diff, _ = kid(a, b + 1.0, num_subsets=20, subset_size=300)
    assert mean_diff > 1.0 and mean_diff > 50 * abs(mean_same)


def test_kid_is_reproducible_with_seed_and_clips_subset_size():
    rng = _rng(8)
    a, b = rng.normal(size=(80, 4)), rng.normal(size=(50, 4)) + 0.5
    assert kid(a, b, num_subsets=5, subset_size=30, seed=3) == kid(
        a, b, num_subsets=5, subset_size=30, seed=3
    )
    assert kid(a, b, num_subsets=5, subset_size=30, seed=3) != kid(
        a, b, num_subsets=5, subset_size=30, seed=4
    )
    # subset_size above both set sizes is clipped to 50: every subset of b is all of b.
    mean, _ = kid(a, b, num_subsets=3, subset_size=1000)
    assert np.isfinite(mean)


# --- precision / recall / density / coverage ----------------------------------------------------------


def _direct_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Full distance matrices, k-th neighbour radii with self at rank 0, strict comparisons (Naeem et al.)."""
    r_radii = np.sort(cdist(real, real), axis=1)[:, k]  # (N,)
    f_radii = np.sort(cdist(fake, fake), axis=1)[:, k]  # (M,)
    d = cdist(real, fake)  # (N, M)
    inside = d < r_radii[:, None]
    return {
        "precision": inside.any(axis=0).mean(),
        "recall": (d < f_radii[None, :]).any(axis=1).mean(),
        "density": inside.sum(axis=0).mean() / k,
        "coverage": (d.min(axis=1) < r_radii).mean(),
    }


def test_prdc_matches_direct_computation_and_is_chunk_invariant():
    rng = _rng(9)
    real = rng.normal(size=(300, 8))
    fake = rng.normal(size=(250, 8)) * 1.2 + 0.3
    expected = _direct_prdc(real, fake, k=5)
    for batch_size in (37, 4096):
        got = precision_recall_density_coverage(real, fake, k=5, batch_size=batch_size)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-12), key


def test_prdc_identical_sets_are_perfect():
    real = _rng(10).normal(size=(200, 4))
    got = precision_recall_density_coverage(real, torch.from_numpy(real.copy()), k=3)
    assert got["precision"] == got["recall"] == got["coverage"] == 1.0


def test_prdc_far_apart_sets_score_zero():
    rng = _rng(11)
    got = precision_recall_density_coverage(rng.normal(size=(200, 4)), rng.normal(size=(200, 4)) + 100.0)
    assert got == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_prdc_fake_on_one_of_two_modes():
    rng = _rng(12)
    modes = np.array([[-10.0, 0.0], [10.0, 0.0]])
    real = np.concatenate([rng.normal(size=(500, 2)) + modes[0], rng.normal(size=(500, 2)) + modes[1]])
    fake = rng.normal(size=(500, 2)) + modes[0]  # mode collapse onto the first mode
    got = precision_recall_density_coverage(real, fake, k=5)
    assert got["precision"] > 0.9
    assert 0.4 < got["recall"] <= 0.5
    assert 0.4 < got["coverage"] <= 0.5


def test_prdc_hand_checked_1d_example():
    # real 0,1,2,3 -> every 1-NN radius is 1; fake 0.5 and 10 -> both 1-NN radii are 9.5.
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.5], [10.0]])
    got = precision_recall_density_coverage(real, fake, k=1)
    assert got["precision"] == 0.5  # 0.5 sits in the balls of 0 and 1; 10 in none
    assert got["recall"] == 1.0  # every real point is within 9.5 of the fake 0.5
    assert got["density"] == 1.0  # (2 balls + 0 balls) / 2 fakes / k
    assert got["coverage"] == 0.5  # balls of 0 and 1 hold a fake, those of 2 and 3 do not


def test_prdc_needs_more_than_k_samples():
    with pytest.raises(DataError):
        precision_recall_density_coverage(np.zeros((3, 2)), np.ones((10, 2)), k=3)
