"""The metric formulas of train/eval/metrics.py on inputs with known answers, and the statistics cache."""
import json

import numpy as np
import pytest
import scipy.linalg

from train.eval import metrics, stats


def test_frechet_same_covariance_is_squared_mean_distance():
    d = 16
    m = np.arange(d) / 4.0
    assert metrics.frechet_distance(np.zeros(d), np.eye(d), m, np.eye(d)) == pytest.approx(np.sum(m ** 2), 1e-9)


def test_frechet_diagonal_closed_form():
    rng = np.random.RandomState(0)
    a, b = rng.uniform(0.1, 3, 12), rng.uniform(0.1, 3, 12)
    mu1, mu2 = rng.randn(12), rng.randn(12)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)   # tr(A + B - 2 sqrt(AB))
    assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-9)


def test_frechet_matches_scipy_sqrtm_on_random_covariances():
    rng = np.random.RandomState(1)
    x, y = rng.randn(200, 24), rng.randn(300, 24) @ rng.randn(24, 24) * 0.5 + 1.0
    (m1, s1), (m2, s2) = metrics.mean_cov(x), metrics.mean_cov(y)
    root = scipy.linalg.sqrtm(s1 @ s2)
    nv = np.real(np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * root))        # NV's formula
    assert metrics.frechet_distance(m1, s1, m2, s2) == pytest.approx(nv, rel=1e-8)
    assert metrics.frechet_distance_features(x, y) == pytest.approx(nv, rel=1e-8)


def test_frechet_low_rank_form_equals_full_form():
    rng = np.random.RandomState(2)
    x, y = rng.randn(10, 40), rng.randn(14, 40) + 0.3                         # fewer points than dimensions
    full = metrics.frechet_distance(*metrics.mean_cov(x), *metrics.mean_cov(y))
    assert metrics.frechet_distance_features(x, y) == pytest.approx(full, rel=1e-7, abs=1e-7)
    assert abs(metrics.frechet_distance_features(x, x)) < 1e-9


def _mmd_u(x, y):
    k = lambda a, b: (a @ b.T / x.shape[1] + 1) ** 3   # noqa: E731
    m = len(x)
    off = lambda kk: (kk.sum() - np.trace(kk)) / (m * (m - 1))   # noqa: E731
    return off(k(x, x)) + off(k(y, y)) - 2 * k(x, y).mean()


def test_kid_constant_sets_closed_form():
    x, y = np.full((20, 1), 0.5), np.full((20, 1), -1.0)
    want = (0.25 + 1) ** 3 + (1 + 1) ** 3 - 2 * (-0.5 + 1) ** 3
    assert metrics.kid(x, y, num_subsets=3) == pytest.approx(want, rel=1e-12)


def test_kid_whole_sets_equal_unbiased_mmd_and_vanish_for_one_distribution():
    rng = np.random.RandomState(3)
    x, y = rng.randn(30, 8), rng.randn(30, 8) + 0.5
    # subsets of m = N points are the whole sets: every subset gives the plain unbiased estimator
    assert metrics.kid(x, y, num_subsets=5, max_subset_size=1000) == pytest.approx(_mmd_u(x, y), rel=1e-10)
    same = metrics.kid(rng.randn(2000, 8), rng.randn(2000, 8), num_subsets=10, max_subset_size=500)
    assert abs(same) < 0.02 < metrics.kid(x, y)


def test_precision_recall_on_constructed_sets():
    grid = np.stack(np.meshgrid(np.arange(10.0), np.arange(10.0)), -1).reshape(-1, 2)   # 100 reals, spacing 1
    inside = grid[:25] + 0.3
    far = grid[:25] + 100.0
    p, r = metrics.precision_recall(grid, np.concatenate([inside, far]), k=3, batch=16)
    assert p == 0.5                         # the far half lies outside every real's 3-NN ball
    # the fakes' manifold: the 25 shifted grid points (and the far copy) cover a quarter-ish of the reals
    covered = metrics.in_manifold(np.concatenate([inside, far]),
                                  metrics.knn_radii(np.concatenate([inside, far]), 3), grid).mean()
    assert r == covered and 0.2 < r < 0.5


def test_knn_radii_excludes_the_point_itself():
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    np.testing.assert_allclose(metrics.knn_radii(x, k=1, batch=3), [1, 1, 2, 4])
    np.testing.assert_allclose(metrics.knn_radii(x, k=2, batch=2), [3, 2, 3, 6])


def test_ppl_mean_drops_the_outer_percentiles():
    d = np.concatenate([np.full(998, 2.0), [1e6, -1e6]])
    assert metrics.ppl_mean(d) == 2.0
    # with 100 values the 1st 'lower' / 99th 'higher' percentiles are the extremes themselves (NV keeps them)
    assert metrics.ppl_mean(np.concatenate([np.full(98, 2.0), [1e6, -1e6]])) == pytest.approx(1.96)
    assert metrics.ppl_mean(np.arange(1.0, 201.0)) == pytest.approx(np.arange(2.0, 200.0).mean())


def test_stats_cache_round_trip_keying_and_atomic_write(tmp_path):
    f = np.random.RandomState(4).randn(6, 5).astype(np.float32)
    st = stats.FeatureStats.of(f)
    key = stats.cache_key(tmp_path / "data", "train", 16, 6, "net-a")
    path = stats.save_cached(key, st, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]               # no temp file left beside it
    got = stats.load_cached(key, tmp_path)
    np.testing.assert_array_equal(got.features, f)
    np.testing.assert_allclose(got.sigma, np.cov(f, rowvar=False))
    for other in ({"num": 5}, {"network": "net-b"}, {"split": "test"}, {"resolution": 32}):
        k2 = {**key, **other}
        assert stats.cache_path(k2, tmp_path) != path and stats.load_cached(k2, tmp_path) is None
    # a file whose recorded key differs from the asked one (copied by hand) is not used
    with np.load(path) as z:
        fields = dict(z)
    fields["key"] = np.array(json.dumps({**key, "num": 99}, sort_keys=True))
    np.savez(path, **fields)
    assert stats.load_cached(key, tmp_path) is None
    path.write_bytes(b"torn")
    assert stats.load_cached(key, tmp_path) is None
