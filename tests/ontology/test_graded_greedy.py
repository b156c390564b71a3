"""The graded search's greedy step counts per token state over the covered tokens only; it must
choose exactly what the dense formula over the whole tokens × candidates matrix chooses."""

from __future__ import annotations

import numpy as np
import pytest

from neurolabel.ontology.induction import GradedConfig, _corr, _greedy, part_weights, predict_graded


def _greedy_dense(X, a, cfg, max_parts, first_ok=None):
    """The reference: every token's change under every candidate, as an (n, K) matrix."""
    n = len(a)
    if n < 2 or a.std() == 0:
        return []
    cnt = X.sum(0).astype(np.float64)
    mean_all = float(a.mean())
    w = (a @ X + cfg.prior_count * mean_all) / (cnt + cfg.prior_count)
    usable = cnt >= 1
    Xf = X.astype(np.float64)
    chosen: list[int] = []
    p = np.full(n, mean_all)
    covered = np.zeros(n, dtype=bool)
    current = 0.0
    sa, saa = a.sum(), (a * a).sum()
    var_a = saa / n - (sa / n) ** 2
    for _ in range(max_parts):
        gap = w[None, :] - p[:, None]
        if cfg.lowering:
            delta = Xf * np.where(covered[:, None], np.maximum(gap, 0.0), gap)
        else:
            delta = Xf * np.maximum(gap, 0.0)
        sp = p.sum() + delta.sum(0)
        spa = p @ a + a @ delta
        spp = (p * p).sum() + (2 * p) @ delta + (delta * delta).sum(0)
        cov_pa = spa / n - (sp / n) * (sa / n)
        var_p = spp / n - (sp / n) ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where((var_p > 1e-15) & usable, cov_pa / np.sqrt(np.maximum(var_p, 1e-30) * max(var_a, 1e-30)), -1.0)
        if chosen:
            r[chosen] = -1.0
        elif first_ok is not None:
            r = np.where(first_ok, r, -1.0)
        k = int(np.argmax(r))
        if r[k] - current < cfg.min_gain:
            break
        chosen.append(k)
        weights, base_v = part_weights(X[:, chosen], a, cfg.prior_count)
        p = predict_graded(X[:, chosen], weights, base_v)
        covered = X[:, chosen].any(1)
        current = _corr(p, a)
    return chosen


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("lowering", [True, False])
def test_greedy_matches_the_dense_formula(seed, lowering):
    rng = np.random.default_rng(seed)
    n, K = int(rng.integers(50, 400)), int(rng.integers(5, 120))
    X = rng.random((n, K)) < rng.uniform(0.01, 0.3)
    X[:, K // 2] = X[:, 0]  # identical columns: the first one wins in both
    a = np.round(rng.normal(size=n) + 3.0 * X[:, 1] - 2.0 * X[:, 2], 1)  # ties among activations too
    first_ok = rng.random(K) < 0.7
    cfg = GradedConfig(lowering=lowering, prior_count=float(seed % 3), min_gain=0.0005)
    for ok in (None, first_ok):
        want = _greedy_dense(X, a, cfg, 20, ok)
        assert _greedy(X, a, cfg, 20, ok) == want
        assert want  # the planted parts are found at all
