"""Contrast studies on a tiny model with a planted unit that fires only on set A's marker."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from neurolabel.core.errors import ConfigError, CorpusError, ModelError
from neurolabel.core.types import NeuronId
from neurolabel.pipeline.contrast import ContrastSpec, contrast
from tests.pipeline.planted import N_LAYERS, N_UNITS, PLANTED


def test_planted_unit_ranks_first(planted, sets):
    a, b = sets
    study = contrast(planted, a, b, spec=ContrastSpec(name="planted"))
    assert study.n_tested == N_LAYERS * N_UNITS
    first = study.neurons[0]
    assert first.neuron == NeuronId(0, PLANTED)
    assert first.auroc == 1.0
    assert first.mean_b == 0.0 and first.mean_a > 0
    assert first.q_value == min(c.q_value for c in study.neurons)
    assert first.p_value < min(c.p_value for c in study.neurons[1:])
    assert study.set_a.n_examples == 30 and study.set_b.n_examples == 30
    assert study.params["exact"] is True
    # ranks are consecutive and effects never increase down the ranking
    assert [c.rank for c in study.neurons] == list(range(len(study.neurons)))
    effects = [abs(c.auroc - 0.5) for c in study.neurons]
    assert effects == sorted(effects, reverse=True)


def test_statistics_match_scipy_on_the_samples(planted, sets):
    a, b = sets
    study = contrast(planted, a, b, spec=ContrastSpec(name="check", min_effect=0.0, alpha=1.0, keep=10_000))
    assert len(study.neurons) == study.n_tested  # every neuron kept
    p_all = []
    for c in study.neurons:
        xa, xb = np.array(c.sample_a), np.array(c.sample_b)
        assert len(xa) == 30 and len(xb) == 30
        res = stats.mannwhitneyu(xa, xb, alternative="two-sided", method="asymptotic")
        assert c.p_value == pytest.approx(res.pvalue, rel=1e-6, abs=1e-12)
        assert c.auroc == pytest.approx(res.statistic / 900, abs=1e-9)
        assert c.mean_a == pytest.approx(xa.mean(), rel=1e-4, abs=1e-5)
        if c.smd is not None:
            pooled = np.sqrt((29 * xa.var(ddof=1) + 29 * xb.var(ddof=1)) / 58)
            assert c.smd == pytest.approx((xa.mean() - xb.mean()) / pooled, rel=1e-3, abs=1e-3)
        p_all.append(c.p_value)
    q = {c.neuron: c.q_value for c in study.neurons}
    expected = stats.false_discovery_control(p_all, method="bh")
    assert [q[c.neuron] for c in study.neurons] == pytest.approx(list(expected), rel=1e-9)


def test_batching_and_padding_do_not_change_the_scores(planted, sets):
    a, b = sets
    one = contrast(planted, a, b, spec=ContrastSpec(batch_size=1, min_effect=0.0, alpha=1.0, keep=10_000))
    many = contrast(planted, a, b, spec=ContrastSpec(batch_size=16, min_effect=0.0, alpha=1.0, keep=10_000))
    by = {c.neuron: c for c in one.neurons}
    for c in many.neurons:
        o = by[c.neuron]
        assert sorted(c.sample_a) == pytest.approx(sorted(o.sample_a), abs=1e-4)
        assert c.mean_b == pytest.approx(o.mean_b, abs=1e-5)


def test_reservoir_bounds_the_samples_but_sums_see_every_example(planted, sets):
    a, b = sets
    full = contrast(planted, a, b, spec=ContrastSpec(min_effect=0.0, alpha=1.0, keep=10_000))
    small = contrast(planted, a, b, spec=ContrastSpec(reservoir=8, min_effect=0.0, alpha=1.0, keep=10_000))
    assert small.params["exact"] is False
    by = {c.neuron: c for c in full.neurons}
    for c in small.neurons:
        assert len(c.sample_a) == 8 and len(c.sample_b) == 8
        assert set(c.sample_a) <= set(by[c.neuron].sample_a)  # a sample of the same per-example scores
        assert c.mean_a == pytest.approx(by[c.neuron].mean_a, rel=1e-6, abs=1e-9)
        assert c.std_b == pytest.approx(by[c.neuron].std_b, rel=1e-6, abs=1e-9)


def test_mean_score_and_permutation_test(planted, sets):
    a, b = sets
    study = contrast(planted, a, b, spec=ContrastSpec(score="mean", test="permutation", n_permutations=200))
    first = study.neurons[0]
    assert first.neuron == NeuronId(0, PLANTED) and first.auroc == 1.0
    assert first.p_value == pytest.approx(1 / 201)


def test_bad_input_is_refused_with_a_clear_error(planted, sets):
    a, b = sets
    with pytest.raises(CorpusError, match="set 'b' holds 1 example"):
        contrast(planted, a, b[:1], spec=ContrastSpec())
    with pytest.raises(ModelError, match="layer"):
        contrast(planted, a, b, spec=ContrastSpec(layers=(5,)))
    with pytest.raises(ConfigError, match="score 'median'"):
        contrast(planted, a, b, spec=ContrastSpec(score="median"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="alpha"):
        contrast(planted, a, b, spec=ContrastSpec(alpha=0.0))
