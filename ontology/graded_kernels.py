"""Compiled inner loops of the graded search (:func:`ontology.induction.graded_search`).

The greedy forward selection scores every candidate part at every step (~70 steps per neuron,
each a handful of (candidates × token states) sums): written as NumPy calls it cost ~1 ms a step,
nearly all of it call overhead. Here the whole selection, and the held-fold curve that chooses
the number of parts, run as one compiled loop each (numba, ``cache=True``: compiled once per
machine, then loaded from ``__pycache__``; ``nogil``: the pipeline's explainer threads run them
side by side).

They compute what the NumPy formulas of :mod:`ontology.induction` compute, in another order of
floating-point additions; every comparison that chooses something (a part raises the correlation
by ``min_gain``, a prefix raises the held-fold mean) allows for rounding (:data:`TIE`), so the
choices do not depend on that order.
"""

from __future__ import annotations

import numba
import numpy as np

TIE = 1e-9
"""Correlations closer than this are equal: a further part must raise the held-fold mean by more
than this (correlations that agree in exact arithmetic — a prediction with the same two values
and a shifted base — differ by ~1e-16 in floating point, which must not add a part)."""


@numba.njit(cache=True, nogil=True)
def _pearson(p: np.ndarray, a: np.ndarray) -> float:
    """Pearson correlation (0 when either is constant)."""
    n = len(p)
    if n == 0:
        return 0.0
    mp = 0.0
    ma = 0.0
    for i in range(n):
        mp += p[i]
        ma += a[i]
    mp /= n
    ma /= n
    spa = 0.0
    spp = 0.0
    saa = 0.0
    for i in range(n):
        dp = p[i] - mp
        da = a[i] - ma
        spa += dp * da
        spp += dp * dp
        saa += da * da
    if spp <= 0.0 or saa <= 0.0:
        return 0.0
    # a constant vector whose mean rounds away from its value leaves ~1e-30 of "variance"
    if spp <= 1e-24 * n * max(mp * mp, 1.0) or saa <= 1e-24 * n * max(ma * ma, 1.0):
        return 0.0
    r = spa / np.sqrt(spp * saa)
    return min(1.0, max(-1.0, r))


@numba.njit(cache=True, nogil=True)
def _pearson_sums(p: np.ndarray, a: np.ndarray, mp: float, ma: float, saa: float) -> float:
    """:func:`_pearson` given ``p``'s and ``a``'s means and ``a``'s sum of squared deviations (as
    :func:`_pearson` computes them: the same result)."""
    n = len(p)
    if n == 0:
        return 0.0
    spa = 0.0
    spp = 0.0
    for i in range(n):
        dp = p[i] - mp
        da = a[i] - ma
        spa += dp * da
        spp += dp * dp
    if spp <= 0.0 or saa <= 0.0:
        return 0.0
    if spp <= 1e-24 * n * max(mp * mp, 1.0) or saa <= 1e-24 * n * max(ma * ma, 1.0):
        return 0.0
    r = spa / np.sqrt(spp * saa)
    return min(1.0, max(-1.0, r))


@numba.njit(cache=True, nogil=True)
def greedy(row_ptr: np.ndarray, cols: np.ndarray, a: np.ndarray, n_cand: int, max_parts: int,
           prior: float, min_gain: float, lowering: bool, first_ok: np.ndarray, use_first_ok: bool) -> np.ndarray:
    """:func:`ontology.induction._greedy` on the coverage given row-major (``cols[row_ptr[i]:row_ptr[i + 1]]``:
    the candidates covering token *i*): the chosen candidates in order."""
    n = len(a)
    W = max_parts + 1
    # column-major copy: the tokens each candidate covers
    cnt_i = np.zeros(n_cand, dtype=np.int64)
    for idx in range(len(cols)):
        cnt_i[cols[idx]] += 1
    col_ptr = np.zeros(n_cand + 1, dtype=np.int64)
    for j in range(n_cand):
        col_ptr[j + 1] = col_ptr[j] + cnt_i[j]
    fill = col_ptr[:-1].copy()
    col_rows = np.empty(len(cols), dtype=np.int64)
    # each candidate's count and activation sum in state 0 (all tokens), summed in token order, in the
    # same pass as the column-major copy
    c = np.zeros((n_cand, W))
    A = np.zeros((n_cand, W))
    for i in range(n):
        for idx in range(row_ptr[i], row_ptr[i + 1]):
            j = cols[idx]
            col_rows[fill[j]] = i
            fill[j] += 1
            c[j, 0] += 1.0
            A[j, 0] += a[i]

    sa = 0.0
    saa = 0.0
    for i in range(n):
        sa += a[i]
        saa += a[i] * a[i]
    mean_all = sa / n
    var_a = saa / n - (sa / n) ** 2
    w = np.empty(n_cand)
    for j in range(n_cand):
        w[j] = (A[j, 0] + prior * mean_all) / (c[j, 0] + prior)
    # the states each candidate has tokens in (c[j, s] > 0), ascending: the scan below visits these
    # only, in the order the full loop over states would (a candidate covers tokens of few states)
    st = np.empty((n_cand, W), dtype=np.int64)
    nst = np.zeros(n_cand, dtype=np.int64)
    for j in range(n_cand):
        if c[j, 0] != 0.0:
            st[j, 0] = 0
            nst[j] = 1
    values = np.zeros(W)
    values[0] = mean_all
    state = np.zeros(n, dtype=np.int64)
    covered = np.zeros(n, dtype=np.bool_)
    is_chosen = np.zeros(n_cand, dtype=np.bool_)
    chosen = np.empty(max_parts, dtype=np.int64)
    n_chosen = 0
    p = np.full(n, mean_all)
    current = 0.0
    r = np.empty(n_cand)
    var_floor = max(var_a, 1e-30)
    # sums over the prediction p, made in the pass that writes p (the same additions, in the same
    # order, as a pass of their own at the start of each step)
    psum = 0.0
    pa = 0.0
    pp = 0.0
    for i in range(n):
        psum += p[i]
        pa += p[i] * a[i]
        pp += p[i] * p[i]
    # _pearson's sums over a alone: the same every step
    ma = sa / n
    a_dev2 = 0.0
    for i in range(n):
        da = a[i] - ma
        a_dev2 += da * da
    for step in range(max_parts):
        S = step + 1
        for j in range(n_cand):
            if cnt_i[j] < 1 or is_chosen[j] or (step == 0 and use_first_ok and not first_ok[j]):
                r[j] = -1.0
                continue
            sp = psum
            spa = pa
            spp = pp
            for q in range(nst[j]):
                s = st[j, q]
                cjs = c[j, s]
                if cjs == 0.0:
                    continue
                g = w[j] - values[s]
                # the largest covering weight wins: on a token a chosen part covers, a part can only raise
                if g < 0.0 and (s > 0 or not lowering):
                    g = 0.0
                cg = cjs * g
                sp += cg
                spa += A[j, s] * g
                spp += cg * (2.0 * values[s] + g)
            cov_pa = spa / n - (sp / n) * (sa / n)
            var_p = spp / n - (sp / n) ** 2
            if var_p > 1e-15:
                r[j] = cov_pa / np.sqrt(max(var_p, 1e-30) * var_floor)
            else:
                r[j] = -1.0
        k = 0
        for j in range(1, n_cand):
            if r[j] > r[k]:
                k = j
        if r[k] - current < min_gain:
            break
        chosen[n_chosen] = k
        n_chosen += 1
        is_chosen[k] = True
        # the new part's weight (its covered tokens' shrunk mean) and the tokens it now sets
        s_k = 0.0
        for idx in range(col_ptr[k], col_ptr[k + 1]):
            s_k += a[col_rows[idx]]
        values[S] = (s_k + prior * mean_all) / max(cnt_i[k] + prior, 1e-12)
        for idx in range(col_ptr[k], col_ptr[k + 1]):
            i = col_rows[idx]
            old = state[i]
            if not covered[i] or values[S] > values[old]:
                for jdx in range(row_ptr[i], row_ptr[i + 1]):
                    j = cols[jdx]
                    c[j, old] -= 1.0
                    c[j, S] += 1.0
                    A[j, old] -= a[i]
                    A[j, S] += a[i]
                    if c[j, old] == 0.0:  # no token of j left in state old
                        m = nst[j]
                        q = 0
                        while st[j, q] != old:
                            q += 1
                        for q2 in range(q, m - 1):
                            st[j, q2] = st[j, q2 + 1]
                        nst[j] = m - 1
                    if c[j, S] == 1.0:  # j's first token in the new state (the largest so far)
                        st[j, nst[j]] = S
                        nst[j] += 1
                state[i] = S
            covered[i] = True
        rest = 0.0
        n_rest = 0
        for i in range(n):
            if not covered[i]:
                rest += a[i]
                n_rest += 1
        values[0] = rest / n_rest if n_rest else mean_all
        psum = 0.0
        pa = 0.0
        pp = 0.0
        for i in range(n):
            v = values[state[i]]
            p[i] = v
            psum += v
            pa += v * a[i]
            pp += v * v
        current = _pearson_sums(p, a, psum / n, ma, a_dev2)
    return chosen[:n_chosen]


@numba.njit(cache=True, nogil=True)
def prefix_curve(train_cover: np.ndarray, a_train: np.ndarray, test_cover: np.ndarray, a_test: np.ndarray,
                 prior: float) -> np.ndarray:
    """Held-fold correlation of every prefix of the parts (columns): weights
    (:func:`ontology.induction.part_weights`) fitted on the training tokens, the graded prediction
    (:func:`ontology.induction.predict_graded`) correlated with the held tokens' activations."""
    n_tr, P = train_cover.shape
    n_te = test_cover.shape[0]
    out = np.zeros(P)
    if n_tr == 0 or n_te == 0:
        return out
    total = 0.0
    for i in range(n_tr):
        total += a_train[i]
    mean_all = total / n_tr
    w = np.empty(P)
    for j in range(P):
        s = 0.0
        m = 0
        for i in range(n_tr):
            if train_cover[i, j]:
                s += a_train[i]
                m += 1
        w[j] = (s + prior * mean_all) / max(m + prior, 1e-12)
    covered = np.zeros(n_tr, dtype=np.bool_)
    rest = total
    n_rest = n_tr
    best = np.full(n_te, -np.inf)  # the largest weight of the parts so far covering each held token
    pred = np.empty(n_te)
    for k in range(P):
        for i in range(n_tr):
            if train_cover[i, k] and not covered[i]:
                covered[i] = True
                rest -= a_train[i]
                n_rest -= 1
        if n_rest > 0:
            base = 0.0
            for i in range(n_tr):  # summed afresh, not by subtraction: no drift over 30 parts
                if not covered[i]:
                    base += a_train[i]
            base /= n_rest
        else:
            base = mean_all
        for i in range(n_te):
            if test_cover[i, k] and w[k] > best[i]:
                best[i] = w[k]
            pred[i] = best[i] if best[i] > -np.inf else base
        out[k] = _pearson(pred, a_test)
    return out


@numba.njit(cache=True, nogil=True)
def prefix_last(train_cover: np.ndarray, a_train: np.ndarray, test_cover: np.ndarray, a_test: np.ndarray,
                prior: float) -> float:
    """The last value of :func:`prefix_curve` (all parts), computed as it computes it (the same
    weights, base and prediction, summed in the same order) without the prefixes before it
    (0.0 without parts)."""
    n_tr, P = train_cover.shape
    n_te = test_cover.shape[0]
    if P == 0 or n_tr == 0 or n_te == 0:
        return 0.0
    total = 0.0
    for i in range(n_tr):
        total += a_train[i]
    mean_all = total / n_tr
    w = np.empty(P)
    for j in range(P):
        s = 0.0
        m = 0
        for i in range(n_tr):
            if train_cover[i, j]:
                s += a_train[i]
                m += 1
        w[j] = (s + prior * mean_all) / max(m + prior, 1e-12)
    base = 0.0
    n_rest = 0
    for i in range(n_tr):
        hit = False
        for k in range(P):
            if train_cover[i, k]:
                hit = True
                break
        if not hit:
            base += a_train[i]
            n_rest += 1
    base = base / n_rest if n_rest > 0 else mean_all
    pred = np.empty(n_te)
    for i in range(n_te):
        best = -np.inf
        for k in range(P):
            if test_cover[i, k] and w[k] > best:
                best = w[k]
        pred[i] = best if best > -np.inf else base
    return _pearson(pred, a_test)


@numba.njit(cache=True, nogil=True)
def conjunction_counts(X: np.ndarray, atoms: np.ndarray, roles: np.ndarray, pos: np.ndarray, win: np.ndarray,
                       n_win: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every conjunction of column ``atoms[i]`` and column ``roles[j]`` of ``X`` (tokens ×
    candidates; pair ``i * len(roles) + j``): the tokens both cover, whether a positive (``pos``)
    is among them, and in how many distinct windows (``win``: each token's window 0 …
    ``n_win`` - 1; ``n_win`` 0: not counted)."""
    na, nr = len(atoms), len(roles)
    cnt = np.zeros(na * nr, dtype=np.int64)
    has_pos = np.zeros(na * nr, dtype=np.bool_)
    n_seen = np.zeros(na * nr, dtype=np.int64)
    seen = np.zeros((na * nr, max(n_win, 1)), dtype=np.bool_)
    hit_r = np.empty(nr, dtype=np.int64)
    for t in range(X.shape[0]):
        m = 0
        for j in range(nr):
            if X[t, roles[j]]:
                hit_r[m] = j
                m += 1
        if m == 0:
            continue
        for i in range(na):
            if not X[t, atoms[i]]:
                continue
            for q in range(m):
                k = i * nr + hit_r[q]
                cnt[k] += 1
                if pos[t]:
                    has_pos[k] = True
                if n_win > 0 and not seen[k, win[t]]:
                    seen[k, win[t]] = True
                    n_seen[k] += 1
    return cnt, has_pos, n_seen


@numba.njit(cache=True, nogil=True)
def nonzero_2d(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero(X)`` of a C-ordered 2-d boolean array (row-major pairs), in one pass each."""
    n, K = X.shape
    m = 0
    for i in range(n):
        for j in range(K):
            if X[i, j]:
                m += 1
    rows = np.empty(m, dtype=np.int64)
    cols = np.empty(m, dtype=np.int64)
    m = 0
    for i in range(n):
        for j in range(K):
            if X[i, j]:
                rows[m] = i
                cols[m] = j
                m += 1
    return rows, cols


@numba.njit(cache=True, nogil=True)
def fold_rows(row_ptr: np.ndarray, cols: np.ndarray, keep: np.ndarray, pos: np.ndarray,
              n_cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows ``keep`` of a coverage given as rows (``cols[row_ptr[i]:row_ptr[i + 1]]``), as rows
    again (``(row_ptr, cols)`` of the kept rows, in order), and which columns cover a kept row
    that is ``pos``."""
    n = len(keep)
    m = 0
    n_keep = 0
    for i in range(n):
        if keep[i]:
            m += row_ptr[i + 1] - row_ptr[i]
            n_keep += 1
    out_ptr = np.zeros(n_keep + 1, dtype=np.int64)
    out_cols = np.empty(m, dtype=np.int64)
    covers_pos = np.zeros(n_cols, dtype=np.bool_)
    r = 0
    q = 0
    for i in range(n):
        if keep[i]:
            for idx in range(row_ptr[i], row_ptr[i + 1]):
                out_cols[q] = cols[idx]
                q += 1
                if pos[i]:
                    covers_pos[cols[idx]] = True
            r += 1
            out_ptr[r] = q
    return out_ptr, out_cols, covers_pos


@numba.njit(cache=True, nogil=True)
def group_rows(rows: np.ndarray, cols: np.ndarray, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """The (row, column) pairs grouped by column, in one counting pass: ``(ptr, by_col)`` with
    the rows of column *j* at ``by_col[ptr[j]:ptr[j + 1]]``, in the pairs' order."""
    ptr = np.zeros(n_cols + 1, dtype=np.int64)
    for idx in range(len(cols)):
        ptr[cols[idx] + 1] += 1
    for j in range(n_cols):
        ptr[j + 1] += ptr[j]
    fill = ptr[:-1].copy()
    out = np.empty(len(cols), dtype=np.int64)
    for idx in range(len(cols)):
        j = cols[idx]
        out[fill[j]] = rows[idx]
        fill[j] += 1
    return ptr, out


def warm_up() -> None:
    """Compile (first time on a machine) or load (from the cache) every loop here, on tiny inputs:
    a factory calls it so that the first neuron does not pay for it, and worker processes forked
    afterwards inherit the compiled code."""
    X = np.zeros((4, 2), dtype=np.bool_)
    X[0, 0] = X[1, 0] = X[2, 1] = True
    a = np.array([3.0, 2.0, 1.0, 0.0])
    rows, cols = nonzero_2d(X)
    row_ptr = np.zeros(5, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=4), out=row_ptr[1:])
    greedy(row_ptr, cols, a, 2, 2, 1.0, 0.0, True, np.ones(2, dtype=np.bool_), False)
    prefix_curve(X, a, X, a, 1.0)
    prefix_last(X, a, X, a, 1.0)
    conjunction_counts(X, np.zeros(1, dtype=np.int64), np.ones(1, dtype=np.int64), X[:, 0].copy(),
                       np.zeros(4, dtype=np.int64), 1)
    group_rows(rows, cols, 2)
    fold_rows(row_ptr, cols, np.ones(4, dtype=np.bool_), X[:, 0].copy(), 2)
