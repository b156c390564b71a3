"""The graded search's compiled loops against the NumPy formulas they replace."""

from __future__ import annotations

import numpy as np
import pytest

from neurolabel.ontology import graded_kernels as k
from neurolabel.ontology.induction import _corr, part_weights, predict_graded


@pytest.mark.parametrize("seed", range(6))
def test_nonzero_2d_is_numpys(seed):
    rng = np.random.default_rng(seed)
    X = rng.random((int(rng.integers(0, 60)), int(rng.integers(0, 40)))) < rng.uniform(0, 0.5)
    got, want = k.nonzero_2d(X), np.nonzero(X)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("seed", range(6))
def test_conjunction_counts_equal_the_dense_conjunctions(seed):
    rng = np.random.default_rng(seed)
    n, K = 200, 30
    X = rng.random((n, K)) < 0.2
    pos = rng.random(n) < 0.3
    win = np.sort(rng.integers(0, 12, n))
    atoms, roles = np.array([0, 3, 5, 7], dtype=np.int64), np.array([1, 2, 9], dtype=np.int64)
    cnt, has_pos, n_win = k.conjunction_counts(X, atoms, roles, pos, win, 12)
    C = (X[:, atoms][:, :, None] & X[:, roles][:, None, :]).reshape(n, -1)
    assert cnt.tolist() == C.sum(0).tolist()
    assert has_pos.tolist() == C[pos].any(0).tolist()
    assert n_win.tolist() == [len(set(win[C[:, j]])) for j in range(C.shape[1])]


@pytest.mark.parametrize("seed", range(6))
def test_prefix_curve_equals_the_numpy_formula(seed):
    rng = np.random.default_rng(seed)
    S = rng.random((300, 8)) < 0.15
    a = rng.normal(size=300) + 3 * S[:, 0] - 2 * S[:, 3]
    train = rng.random(300) < 0.5
    prior = float(seed % 3)
    got = k.prefix_curve(S[train].copy(), a[train], S[~train].copy(), a[~train], prior)
    want = []
    for j in range(1, 9):
        w, b = part_weights(S[train][:, :j], a[train], prior)
        want.append(_corr(predict_graded(S[~train][:, :j], w, b), a[~train]))
    assert got == pytest.approx(want, abs=1e-12)


def test_pearson_hand_checked():
    assert k._pearson(np.array([1.0, 0.0]), np.array([1.0, 0.0])) == 1.0
    assert k._pearson(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    assert k._pearson(np.full(5, 0.1), np.arange(5.0)) == 0.0  # constant: 0, not rounding noise
    x, y = np.array([1.0, 3.0, 2.0, 5.0]), np.array([2.0, 1.0, 4.0, 3.0])
    assert k._pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])


def test_warm_up_compiles_every_loop():
    k.warm_up()
    assert all(len(f.signatures) >= 1 for f in (k.greedy, k.prefix_curve, k.conjunction_counts, k.nonzero_2d))


@pytest.mark.parametrize("n_windows", [3, 12])
def test_cross_validated_correlation_equals_the_numpy_formula(n_windows):
    from neurolabel.ontology.induction import cross_validated_correlation

    rng = np.random.default_rng(n_windows)
    S = rng.random((240, 5)) < 0.2
    a = rng.normal(size=240) + 2 * S[:, 0] + S[:, 2]
    g = np.repeat(np.arange(n_windows), -(-240 // n_windows))[:240]
    uniq = np.unique(g)
    if len(uniq) < 4:
        w, b = part_weights(S, a, 1.0)
        want = _corr(predict_graded(S, w, b), a)
    else:
        fold = np.isin(g, uniq[1::2])
        want = np.mean([_corr(predict_graded(S[t], *part_weights(S[~t], a[~t], 1.0)), a[t]) for t in (fold, ~fold)])
    assert cross_validated_correlation(S, a, g, 1.0) == pytest.approx(want, abs=1e-12)
    assert cross_validated_correlation(S[:, :0], a, g, 1.0) == 0.0


@pytest.mark.parametrize("seed", range(12))
def test_prefix_last_is_the_last_value_of_the_prefix_curve(seed):
    rng = np.random.default_rng(seed)
    n_tr, n_te, parts = int(rng.integers(1, 60)), int(rng.integers(1, 60)), int(rng.integers(1, 9))
    density = [0.0, 0.05, 0.3, 1.0][seed % 4]  # no token covered, few, many, every one
    tr, te = rng.random((n_tr, parts)) < density, rng.random((n_te, parts)) < density
    a_tr, a_te = rng.normal(size=n_tr), rng.normal(size=n_te)
    for prior in (0.0, 1.0, 2.5):
        assert k.prefix_last(tr, a_tr, te, a_te, prior) == k.prefix_curve(tr, a_tr, te, a_te, prior)[-1]
    empty = np.zeros((0, parts), dtype=bool)
    assert k.prefix_last(empty, a_tr[:0], te, a_te, 1.0) == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_fold_rows_are_the_kept_rows_pairs(seed):
    rng = np.random.default_rng(seed)
    X = rng.random((int(rng.integers(1, 50)), 7)) < 0.3
    keep, pos = rng.random(len(X)) < 0.5, rng.random(len(X)) < 0.3
    row, col = np.nonzero(X)
    row_ptr = np.zeros(len(X) + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=len(X)), out=row_ptr[1:])
    ptr, cols, covers = k.fold_rows(row_ptr, col.astype(np.int64), keep, pos, 7)
    sub_row, sub_col = np.nonzero(X[keep])
    assert cols.tolist() == sub_col.tolist()
    assert ptr.tolist() == np.r_[0, np.cumsum(np.bincount(sub_row, minlength=int(keep.sum())))].tolist()
    assert covers.tolist() == X[keep & pos].any(0).tolist()
