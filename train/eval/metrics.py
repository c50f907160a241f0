"""The metric formulas on feature arrays: Fréchet distance, KID, precision/recall, PPL's percentile filter.

Fréchet distance (Heusel et al. 2017), ||mu1 - mu2||² + tr(S1 + S2 - 2 (S1 S2)^½). NVlabs computes the trace of
the root with scipy.linalg.sqrtm (metrics/frechet_inception_distance.py); here it is the same number by a cheaper,
symmetric route: with R = S1^½ (eigh), S1 S2 is similar to R S2 R, so tr (S1 S2)^½ = Σ √λ(R S2 R), two eigh
instead of a Schur form (tests/test_eval_metrics.py checks both against sqrtm). When features are at hand and
fewer than the dimension, tr (S1 S2)^½ is the nuclear norm of A Bᵀ / √((n1-1)(n2-1)) for the centred feature
matrices A, B (the non-zero eigenvalues of AᵀA BᵀB are the squared singular values of A Bᵀ), an [n1, n2] SVD.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def mean_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """features [N,D] -> (mu [D], unbiased covariance [D,D]) in float64 (as NV's FeatureStats.get_mean_cov)."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors [N,D] for a covariance; got shape {f.shape}")
    mu = f.mean(axis=0)
    c = f - mu
    return mu, c.T @ c / (len(f) - 1)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr (S1 S2)^½ for symmetric PSD S1, S2: Σ √λ(R S2 R) with R = S1^½."""
    r = _psd_sqrt(np.asarray(s1, np.float64))
    m = r @ np.asarray(s2, np.float64) @ r
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, S1) and N(mu2, S2)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    m = float(np.square(mu1 - mu2).sum())
    return m + float(np.trace(s1) + np.trace(s2)) - 2.0 * trace_sqrt_product(s1, s2)


def frechet_distance_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet distance of the Gaussians fitted to two feature sets [N1,D], [N2,D]; the low-rank form when
    min(N1, N2) < D (the same number, exactly, without any D x D root)."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if min(len(f1), len(f2)) >= f1.shape[1]:
        return frechet_distance(*mean_cov(f1), *mean_cov(f2))
    mu1, mu2 = f1.mean(0), f2.mean(0)
    a, b = f1 - mu1, f2 - mu2                                                  # [N1,D], [N2,D]
    n1, n2 = len(f1) - 1, len(f2) - 1
    if n1 < 1 or n2 < 1:
        raise ValueError(f"need at least 2 feature vectors per set; got {len(f1)} and {len(f2)}")
    cross = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt(n1 * n2)   # tr (S1 S2)^½
    tr1, tr2 = np.square(a).sum() / n1, np.square(b).sum() / n2              # tr S1, tr S2
    return float(np.square(mu1 - mu2).sum() + tr1 + tr2 - 2.0 * cross)


def kid(fake: np.ndarray, real: np.ndarray, num_subsets: int = 100, max_subset_size: int = 1000,
        seed: int = 0) -> float:
    """Kernel Inception Distance (Bińkowski et al. 2018) as NV's kernel_inception_distance.py: the unbiased MMD²
    with the cubic polynomial kernel k(x, y) = (xᵀy / D + 1)³, averaged over `num_subsets` random subsets of
    m = min(N_fake, N_real, max_subset_size) of each set (drawn without replacement)."""
    x_all, y_all = np.asarray(fake, np.float64), np.asarray(real, np.float64)
    n = x_all.shape[1]
    m = min(len(x_all), len(y_all), max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 features per set; got {len(x_all)} fake, {len(y_all)} real")
    rng = np.random.RandomState(seed)
    t = 0.0
    for _ in range(num_subsets):
        x = x_all[rng.choice(len(x_all), m, replace=False)]
        y = y_all[rng.choice(len(y_all), m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3                   # [m,m]
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / num_subsets / m)


@jax.jit
def _sq_dists(rows: jax.Array, cols: jax.Array) -> jax.Array:
    """[R,D], [C,D] -> squared Euclidean distances [R,C] (clipped at 0 against rounding)."""
    d = (jnp.sum(rows * rows, 1)[:, None] + jnp.sum(cols * cols, 1)[None, :] - 2.0 * rows @ cols.T)
    return jnp.maximum(d, 0.0)


def _pad_rows(x: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([x, np.zeros((n - len(x),) + x.shape[1:], x.dtype)]) if len(x) < n else x


def _blocks(x: np.ndarray, size: int):
    """(start, padded block [size,D]) over x: every block one shape, so the distance program compiles once."""
    for i in range(0, len(x), size):
        yield i, _pad_rows(x[i:i + size], size)


def knn_radii(manifold: np.ndarray, k: int = 3, batch: int = 10000) -> np.ndarray:
    """Distance of every point to its k-th nearest neighbour in `manifold` (itself excluded: the (k+1)-th
    smallest distance, as NV's kthvalue(nhood_size + 1)). float32 [N]."""
    m = np.asarray(manifold, np.float32)
    if len(m) <= k:
        raise ValueError(f"precision/recall with neighbourhood {k} needs more than {k} points; got {len(m)}")
    batch = min(batch, len(m))
    cols = jnp.asarray(_pad_rows(m, -(-len(m) // batch) * batch)).reshape(-1, batch, m.shape[1])
    out = np.empty(len(m), np.float32)
    for i, rows in _blocks(m, batch):
        d = np.concatenate([np.asarray(_sq_dists(jnp.asarray(rows), c)) for c in cols], axis=1)[:, :len(m)]
        out[i:i + batch] = np.sqrt(np.partition(d, k, axis=1)[:, k])[:len(m) - i]
    return out


def in_manifold(manifold: np.ndarray, radii: np.ndarray, probes: np.ndarray, batch: int = 10000) -> np.ndarray:
    """bool [P]: probe p lies within radii[j] of some manifold point j (NV: (dist <= kth).any(dim=1))."""
    m, p = np.asarray(manifold, np.float32), np.asarray(probes, np.float32)
    r2 = np.square(radii.astype(np.float32))
    out = np.zeros(len(p), bool)
    for j, cols in _blocks(m, min(batch, len(m))):
        valid = r2[j:j + len(cols)]
        valid = np.concatenate([valid, np.full(len(cols) - len(valid), -1.0, np.float32)])   # pads never cover
        for i, rows in _blocks(p, min(batch, len(p))):
            d = np.asarray(_sq_dists(jnp.asarray(rows), jnp.asarray(cols)))
            out[i:i + len(rows)] |= (d <= valid[None, :]).any(axis=1)[:len(p) - i]
    return out


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, batch: int = 10000) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) as NV's precision_recall.py: precision is the
    share of fakes inside the real manifold (k-NN balls of the reals), recall the share of reals inside the
    fake one."""
    precision = in_manifold(real, knn_radii(real, k, batch), fake, batch).mean()
    recall = in_manifold(fake, knn_radii(fake, k, batch), real, batch).mean()
    return float(precision), float(recall)


def ppl_mean(dist: np.ndarray) -> float:
    """NV's PPL reduction: the mean of the distances between the 1st ('lower') and 99th ('higher') percentile."""
    d = np.asarray(dist, np.float64)
    lo = np.percentile(d, 1, method="lower")
    hi = np.percentile(d, 99, method="higher")
    return float(d[(d >= lo) & (d <= hi)].mean())
