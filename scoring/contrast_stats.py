"""Pure statistics of a contrast between two sets of examples, vectorised over neurons.

Every function takes plain arrays whose last axis runs over examples (one row per neuron) and
returns arrays, one value per row; ``nan`` marks a value that is undefined for that row (the
callers turn it into ``None``). Hand-checked against scipy in ``tests/scoring/test_contrast_stats.py``:

- :func:`auroc`: the probability that a random example of A scores above a random example of B
  (ties count one half) = ``U_A / (n_A n_B)`` of the Mann–Whitney test;
- :func:`mann_whitney_p`: the two-sided asymptotic Mann–Whitney U p-value with tie and
  continuity correction (scipy's ``mannwhitneyu(method="asymptotic")``);
- :func:`permutation_p`: a two-sided permutation test of the difference of means;
- :func:`standardised_mean_difference`: Cohen's d from sufficient statistics (count, sum, sum of
  squares), so it can be computed from streaming sums over every example;
- :func:`benjamini_hochberg`: adjusted p-values (q-values) controlling the false discovery rate
  (scipy's ``false_discovery_control(method="bh")``).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr


def _rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[None, :] if x.ndim == 1 else x


def average_ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ranks, tie_term)`` of each row of ``x``: 1-based ranks with ties given their average
    rank, and ``sum(t**3 - t)`` over the row's groups of ``t`` tied values."""
    x = _rows(x)
    m, n = x.shape
    order = np.argsort(x, axis=1)  # any order within a group of ties: each gets the average rank
    xs = np.take_along_axis(x, order, axis=1)
    idx = np.broadcast_to(np.arange(n), (m, n))
    new = np.ones((m, n), dtype=bool)
    new[:, 1:] = xs[:, 1:] != xs[:, :-1]
    start = np.maximum.accumulate(np.where(new, idx, 0), axis=1)
    last = np.ones((m, n), dtype=bool)
    last[:, :-1] = new[:, 1:]
    end = np.minimum.accumulate(np.where(last, idx, n - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty((m, n))
    np.put_along_axis(ranks, order, (start + end) / 2.0 + 1.0, axis=1)
    t = (end - start + 1).astype(np.float64)
    tie_term = np.where(new, t**3 - t, 0.0).sum(axis=1)
    return ranks, tie_term


def rank_sum_u(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(U_A, tie_term)``: the Mann–Whitney statistic of A (rows of ``a`` against rows of
    ``b``, same number of rows) and the tie term of the pooled ranks."""
    a, b = _rows(a), _rows(b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a has {a.shape[0]} rows but b has {b.shape[0]}")
    n_a = a.shape[1]
    ranks, tie_term = average_ranks(np.concatenate([a, b], axis=1))
    u_a = ranks[:, :n_a].sum(axis=1) - n_a * (n_a + 1) / 2.0
    return u_a, tie_term


def auroc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, P(score of A > score of B) + ½ P(tie): 1 = A always higher, 0.5 = no
    separation; ``nan`` when a side is empty."""
    a, b = _rows(a), _rows(b)
    n_a, n_b = a.shape[1], b.shape[1]
    if n_a == 0 or n_b == 0:
        return np.full(a.shape[0], np.nan)
    u_a, _ = rank_sum_u(a, b)
    return u_a / (n_a * n_b)


def mann_whitney_p(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the two-sided p-value of the Mann–Whitney U test (normal approximation with
    tie and continuity correction); ``nan`` when a side is empty or every value is tied."""
    return mann_whitney(a, b)[1]


def mann_whitney(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(auroc, p)`` per row from one ranking of the pooled values: :func:`auroc` and
    :func:`mann_whitney_p` at the cost of one."""
    a, b = _rows(a), _rows(b)
    n_a, n_b = a.shape[1], b.shape[1]
    if n_a == 0 or n_b == 0:
        return np.full(a.shape[0], np.nan), np.full(a.shape[0], np.nan)
    u_a, tie_term = rank_sum_u(a, b)
    return u_a / (n_a * n_b), _u_p(u_a, tie_term, n_a, n_b)


def _u_p(u_a: np.ndarray, tie_term: np.ndarray, n_a: int, n_b: int) -> np.ndarray:
    n = n_a + n_b
    u = np.maximum(u_a, n_a * n_b - u_a)
    mu = n_a * n_b / 2.0
    var = n_a * n_b / 12.0 * ((n + 1) - tie_term / (n * (n - 1)))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (u - mu - 0.5) / np.sqrt(var)
        p = np.clip(2.0 * ndtr(-z), 0.0, 1.0)
    return np.where(var > 0, p, np.nan)


def permutation_p(a: np.ndarray, b: np.ndarray, *, n_permutations: int = 1000, seed: int = 0) -> np.ndarray:
    """Per row, the two-sided permutation p-value of ``mean(A) - mean(B)``: the share of
    random relabellings (the same ones for every row) whose absolute difference reaches the
    observed one, counting the observed labelling (``(1 + hits) / (1 + n_permutations)``)."""
    a, b = _rows(a), _rows(b)
    n_a, n_b = a.shape[1], b.shape[1]
    if n_a == 0 or n_b == 0:
        return np.full(a.shape[0], np.nan)
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    x = np.concatenate([a, b], axis=1)
    n = n_a + n_b
    total = x.sum(axis=1, keepdims=True)
    observed = np.abs(a.mean(axis=1) - b.mean(axis=1))
    rng = np.random.default_rng(seed)
    hits = np.zeros(x.shape[0])
    tol = 1e-12 * np.maximum(1.0, np.abs(x).max(axis=1))
    for start in range(0, n_permutations, 256):
        k = min(256, n_permutations - start)
        pick = np.zeros((n, k))
        for j in range(k):
            pick[rng.permutation(n)[:n_a], j] = 1.0
        sum_a = x @ pick  # [rows, k]
        diff = np.abs(sum_a / n_a - (total - sum_a) / n_b)
        hits += (diff >= observed[:, None] - tol[:, None]).sum(axis=1)
    return (1.0 + hits) / (1.0 + n_permutations)


def standardised_mean_difference(n_a: float, sum_a: np.ndarray, sumsq_a: np.ndarray,
                                 n_b: float, sum_b: np.ndarray, sumsq_b: np.ndarray) -> np.ndarray:
    """Cohen's d, ``(mean_A - mean_B) / pooled standard deviation`` (pooled with ``n - 1``
    weights), from each side's count, sum and sum of squares; ``nan`` when a side has fewer
    than two examples or the pooled deviation is zero."""
    sum_a, sumsq_a = np.asarray(sum_a, dtype=np.float64), np.asarray(sumsq_a, dtype=np.float64)
    sum_b, sumsq_b = np.asarray(sum_b, dtype=np.float64), np.asarray(sumsq_b, dtype=np.float64)
    if n_a < 2 or n_b < 2:
        return np.full(np.shape(sum_a), np.nan)
    mean_a, mean_b = sum_a / n_a, sum_b / n_b
    ss_a = np.maximum(sumsq_a - sum_a * mean_a, 0.0)
    ss_b = np.maximum(sumsq_b - sum_b * mean_b, 0.0)
    pooled = np.sqrt((ss_a + ss_b) / (n_a + n_b - 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (mean_a - mean_b) / pooled
    return np.where(pooled > 1e-12 * np.maximum(1.0, np.abs(mean_a) + np.abs(mean_b)), d, np.nan)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values of a flat array (``nan`` entries are left out of
    the number of tests and stay ``nan``)."""
    p = np.asarray(p, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(scaled[::-1])[::-1]
    out[order] = np.minimum(q, 1.0)
    return out
