"""The contrast statistics against scipy and hand-checked values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from neurolabel.scoring.contrast_stats import (
    auroc,
    average_ranks,
    benjamini_hochberg,
    mann_whitney,
    mann_whitney_p,
    permutation_p,
    standardised_mean_difference,
)


def test_hand_checked_values():
    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0]))[0] == 1.0
    assert auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0]))[0] == 0.0
    # one tie out of four pairs counts one half: (1 + 1 + 0.5 + 0) / 4
    assert auroc(np.array([2.0, 3.0]), np.array([1.0, 3.0]))[0] == pytest.approx(0.625)
    ranks, tie = average_ranks(np.array([10.0, 20.0, 20.0, 5.0]))
    assert ranks.tolist() == [[2.0, 3.5, 3.5, 1.0]]
    assert tie.tolist() == [6.0]
    assert benjamini_hochberg(np.array([0.01, 0.04, 0.03])).tolist() == pytest.approx([0.03, 0.04, 0.04])
    # A = [2, 2], B = [0, 2]: pooled sd = sqrt((0 + 2) / 2) = 1, d = (2 - 1) / 1
    d = standardised_mean_difference(2, np.array([4.0]), np.array([8.0]), 2, np.array([2.0]), np.array([4.0]))
    assert d.tolist() == [1.0]


@pytest.mark.parametrize("seed", range(6))
def test_against_scipy_on_random_rows(seed):
    rng = np.random.default_rng(seed)
    n_a, n_b = rng.integers(3, 15), rng.integers(3, 15)
    a = rng.normal(0.5, 1.0, size=(4, n_a)).round(1)  # rounding makes ties
    b = rng.normal(0.0, 1.0, size=(4, n_b)).round(1)
    got_auc, got_p = auroc(a, b), mann_whitney_p(a, b)
    both = mann_whitney(a, b)  # one ranking for both
    assert np.array_equal(both[0], got_auc) and np.array_equal(both[1], got_p)
    for r in range(4):
        res = stats.mannwhitneyu(a[r], b[r], alternative="two-sided", method="asymptotic")
        assert got_p[r] == pytest.approx(res.pvalue, rel=1e-9, abs=1e-12)
        assert got_auc[r] == pytest.approx(res.statistic / (n_a * n_b), rel=1e-12)
        ranks, _ = average_ranks(np.concatenate([a[r], b[r]]))
        assert ranks[0] == pytest.approx(stats.rankdata(np.concatenate([a[r], b[r]])))
        d = standardised_mean_difference(n_a, a[r].sum(), (a[r] ** 2).sum(), n_b, b[r].sum(), (b[r] ** 2).sum())
        pooled = np.sqrt(((n_a - 1) * a[r].var(ddof=1) + (n_b - 1) * b[r].var(ddof=1)) / (n_a + n_b - 2))
        assert float(d) == pytest.approx((a[r].mean() - b[r].mean()) / pooled, rel=1e-9)


def test_benjamini_hochberg_against_scipy():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=200) ** 3
    assert benjamini_hochberg(p) == pytest.approx(stats.false_discovery_control(p, method="bh"), rel=1e-12)
    with_nan = np.array([0.01, np.nan, 0.02])
    q = benjamini_hochberg(with_nan)
    assert np.isnan(q[1]) and q[[0, 2]] == pytest.approx(stats.false_discovery_control([0.01, 0.02]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        benjamini_hochberg(np.array([0.5, 1.5]))


def test_permutation_p_against_scipy_exact():
    a = np.array([1.2, 2.3, 3.1, 2.8, 4.0])
    b = np.array([0.5, 1.1, 0.9, 2.0])
    exact = stats.permutation_test((a, b), lambda x, y: np.mean(x) - np.mean(y), permutation_type="independent",
                                   alternative="two-sided", n_resamples=np.inf).pvalue
    got = permutation_p(a, b, n_permutations=20000, seed=3)[0]
    assert got == pytest.approx(exact, abs=0.01)


def test_undefined_values_are_nan():
    same = np.ones((1, 4))
    assert np.isnan(mann_whitney_p(same, same)[0])
    assert auroc(same, same)[0] == 0.5
    assert np.isnan(auroc(np.ones((1, 0)), same)[0])
    assert np.isnan(standardised_mean_difference(4, 4.0, 4.0, 4, 4.0, 4.0))
    assert np.isnan(standardised_mean_difference(1, 1.0, 1.0, 4, 4.0, 4.0))
