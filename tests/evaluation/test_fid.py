"""FID / KID: the formulas on features with known answers, and the shipped FID Inception."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from components.errors import EarshotError
from components.evaluation.fid import (FEATURE_DIM, INCEPTION_SHA256, file_sha256, fid, fid_low_rank, frechet_distance,
                                       inception_features, kid, load_inception, packaged_inception_path)


def with_moments(n: int, mean: np.ndarray, cov: np.ndarray, seed: int) -> np.ndarray:
    """n samples whose sample mean and (n - 1) covariance are exactly ``mean`` and ``cov``."""
    x = np.random.default_rng(seed).normal(size=(n, len(mean)))
    x -= x.mean(0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T  # whitened exactly
    return x @ np.linalg.cholesky(cov).T + mean


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def test_fid_of_commuting_gaussians_is_the_hand_computed_value():
    # |(1, 2)|^2 + (1 + 4 - 2*2) + (4 + 9 - 2*6) = 5 + 1 + 1
    value = frechet_distance(np.zeros(2), np.diag([1.0, 4.0]), np.array([1.0, 2.0]), np.diag([4.0, 9.0]))
    assert value == pytest.approx(7.0, abs=1e-9)


def test_fid_equals_the_closed_form_on_samples_with_known_moments():
    rng = np.random.default_rng(1)
    dim = 6
    a, b = rng.normal(size=(dim, dim)), rng.normal(size=(dim, dim))
    cov_a, cov_b = a @ a.T + 0.1 * np.eye(dim), b @ b.T + 0.1 * np.eye(dim)  # non-commuting
    mean_a, mean_b = rng.normal(size=dim), rng.normal(size=dim)
    root_a = psd_sqrt(cov_a)
    expected = (np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
                - 2 * np.trace(psd_sqrt(root_a @ cov_b @ root_a)))
    feats_a, feats_b = with_moments(50, mean_a, cov_a, 2), with_moments(80, mean_b, cov_b, 3)
    assert fid(feats_a, feats_b) == pytest.approx(expected, rel=1e-6)
    assert fid(feats_b, feats_a) == pytest.approx(expected, rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero_even_with_singular_covariance():
    feats = np.random.default_rng(0).normal(size=(20, 64))  # 20 samples in 64-d: rank 19
    assert abs(fid(feats, feats)) < 1e-4  # round-off of sqrtm on a rank-deficient product (trace 64)
    assert fid(feats, feats + 0.5) == pytest.approx(64 * 0.25, rel=1e-6)  # a shift adds |shift|^2 only


def test_fid_refuses_single_samples():
    with pytest.raises(ValueError, match="at least 2"):
        fid(np.zeros((1, 4)), np.zeros((5, 4)))


def reference_kid(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written out pair by pair."""
    kernel = lambda a, b: (a @ b / x.shape[1] + 1.0) ** 3  # noqa: E731
    m = len(x)
    xx = sum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(kernel(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_with_whole_sets_equals_the_pairwise_definition():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.7, 1.3, size=(7, 3))
    mean, std = kid(x, y, subsets=3, subset_size=7, seed=0)  # every subset is the whole set, reordered
    assert mean == pytest.approx(reference_kid(x, y), rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same, _ = kid(a, b, subsets=20, subset_size=100, seed=1)
    shifted, shifted_std = kid(a, b + 1.0, subsets=20, subset_size=100, seed=1)
    assert abs(same) < 0.05
    assert shifted > 1.0 and shifted > 10 * shifted_std
    assert kid(a, b, 20, 100, seed=1) == (same, _)  # seeded


def test_kid_std_is_the_population_std_over_subsets():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(40, 4)), rng.normal(0.3, 1.0, size=(40, 4))
    first, _ = kid(a, b, subsets=1, subset_size=10, seed=3)  # the first subset alone (same draws)
    mean, std = kid(a, b, subsets=2, subset_size=10, seed=3)
    assert std == pytest.approx(abs(mean - first), rel=1e-9)  # |v1 - v2| / 2 with v2 = 2 mean - v1
    assert std > 0
    with pytest.raises(ValueError, match="subset_size"):
        kid(a, b, subsets=2, subset_size=301, seed=0)


# --------------------------------------------------------------------------- the Inception


@pytest.fixture(scope="module")
def inception():
    return load_inception("cpu")


def test_the_packaged_file_has_the_recorded_hash():
    assert file_sha256(packaged_inception_path()) == INCEPTION_SHA256


def test_any_other_file_is_refused(tmp_path: Path):
    other = tmp_path / "default_1.pt"
    other.write_bytes(b"not the inception")
    with pytest.raises(EarshotError, match="refused"):
        load_inception("cpu", other)
    with pytest.raises(EarshotError, match="missing"):
        load_inception("cpu", tmp_path / "absent.pt")


def test_features_are_batch_independent(inception):
    images = torch.rand(3, 3, 40, 56, generator=torch.Generator().manual_seed(0)) * 2 - 1
    whole = inception_features(inception, [images], batch_size=3)
    one_by_one = inception_features(inception, list(images), batch_size=1)
    regrouped = inception_features(inception, [images[:1], images[1:]], batch_size=2)
    assert whole.shape == (3, FEATURE_DIM) and whole.dtype == np.float64
    assert np.isfinite(whole).all() and (whole >= 0).all()  # after ReLU and average pooling
    np.testing.assert_allclose(one_by_one, whole, atol=1e-4)
    np.testing.assert_allclose(regrouped, whole, atol=1e-4)
    assert inception_features(inception, [], batch_size=4).shape == (0, FEATURE_DIM)


# Features of stills/voxceleb2_00022.png (128 px, to [-1, 1]) from pytorch-fid 0.3.0's FID
# network carrying the TorchScript's weights (scripts/check_fid_inception.py's mapping).
REAL_STILL = "voxceleb2_00022.png"
REAL_FEATURES = {1621: 2.10185, 1547: 2.09285, 1504: 1.98936, 7: 0.10748}  # its three largest, and one
REAL_FEATURE_MEAN = 0.273676


@pytest.mark.realdata
def test_features_of_a_real_still_are_pytorch_fids(inception, real_data: Path):
    pixels = np.asarray(Image.open(real_data / "stills" / REAL_STILL).convert("RGB"), np.float32)
    image = torch.from_numpy(pixels).permute(2, 0, 1) / 127.5 - 1
    feats = inception_features(inception, [image], batch_size=1)[0]
    assert feats.mean() == pytest.approx(REAL_FEATURE_MEAN, abs=1e-5)
    for index, value in REAL_FEATURES.items():
        assert feats[index] == pytest.approx(value, abs=1e-4)


@pytest.mark.parametrize("n", [40, 300])
def test_low_rank_fid_equals_the_matrix_square_root_one(n: int):
    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, 64)) @ rng.normal(size=(64, 64))
    b = rng.normal(size=(n + 7, 64)) @ rng.normal(size=(64, 64)) + 0.3
    mu_a, mu_b = a.mean(0), b.mean(0)
    direct = frechet_distance(mu_a, np.cov(a, rowvar=False), mu_b, np.cov(b, rowvar=False))
    assert fid_low_rank(a, b) == pytest.approx(direct, rel=1e-6, abs=1e-6)
    assert fid(a, b) == pytest.approx(direct, rel=1e-6, abs=1e-6)
    assert fid_low_rank(a, a) == pytest.approx(0.0, abs=1e-6)
