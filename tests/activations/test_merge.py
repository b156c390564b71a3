"""Sharded recording merged in-process == one unsharded pass (the merge Ray runs use), and the
hash-priority reservoir is a uniform sample that does not depend on sharding."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from neurolabel.activations.corpus import Corpus
from neurolabel.activations.merge import merge_recordings, portable
from neurolabel.activations.record import record_activations, window_priority
from neurolabel.core.errors import CorpusError, ModelError
from tests.activations.test_record import _texts

T = 16
KW = dict(max_tokens=10**9, top_k=4, n_random=6, n_quantile_bins=3, per_bin=1, window_tokens=T, batch_size=5,
          progress=False)


def assert_same_records(got, want):
    """Same windows, same activations, same counts; float64 statistics to rounding."""
    assert [r.neuron for r in got] == [r.neuron for r in want]
    for g, w in zip(got, want):
        for part in ("top", "random", "quantile"):
            assert [(x.window_id, x.split, x.quantile, x.tokens) for x in getattr(g, part)] == \
                   [(x.window_id, x.split, x.quantile, x.tokens) for x in getattr(w, part)], (g.neuron, part)
            assert [x.activations for x in getattr(g, part)] == [x.activations for x in getattr(w, part)]
        assert (g.stats.count, g.stats.max, g.stats.min, g.stats.frac_active) == \
               (w.stats.count, w.stats.max, w.stats.min, w.stats.frac_active)
        np.testing.assert_allclose([g.stats.mean, g.stats.std], [w.stats.mean, w.stats.std], rtol=1e-9, atol=1e-12)
        assert g.prefix == w.prefix
        gt, wt = g.token_stats, w.token_stats
        assert (gt is None) == (wt is None)
        if gt is not None:
            assert (gt.count, gt.tracked_types) == (wt.count, wt.tracked_types)
            assert [(t.token, t.count) for t in gt.tokens] == [(t.token, t.count) for t in wt.tokens]
            np.testing.assert_allclose([t.mean for t in gt.tokens], [t.mean for t in wt.tokens], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [2, 3, 7])
def test_sharded_recording_merges_to_the_unsharded_one(gpt2_target, n):
    corpus = Corpus.from_texts(_texts(150, seed=3))
    kw = dict(layers=[0, 2], units=[1, 5, 9, 64, 127], **KW)
    whole = record_activations(gpt2_target, corpus, **kw)
    parts = [portable(record_activations(gpt2_target, corpus, shard=(i, n), **kw)) for i in range(n)]
    parts = [pickle.loads(pickle.dumps(p)) for p in parts]  # what a Ray actor sends back
    merged = merge_recordings(parts[::-1])  # the order of the shards does not matter
    assert (merged.n_windows, merged.n_tokens) == (whole.n_windows, whole.n_tokens)
    assert merged.res_ids == whole.res_ids
    assert_same_records(list(merged.records()), list(whole.records()))


def test_top_k_ties_go_to_the_lower_window_id(gpt2_target):
    """A corpus of one repeated sentence: every window ties with others; sharded or not, the
    lowest window ids win."""
    corpus = Corpus.from_texts(["the cat sat on the mat and the dog ran under the tree ."] * 60)
    kw = dict(layers=[1], units=[0, 3], **KW)
    whole = record_activations(gpt2_target, corpus, **kw)
    merged = merge_recordings([portable(record_activations(gpt2_target, corpus, shard=(i, 3), **kw))
                               for i in range(3)])
    assert_same_records(list(merged.records()), list(whole.records()))
    for r in whole.records():
        ranked = sorted(((-w.max_activation, w.window_id) for w in r.top))
        assert [w.window_id for w in r.top] == [wid for _, wid in ranked]


def test_more_shards_than_batches_and_bad_parts(gpt2_target):
    corpus = Corpus.from_texts(_texts(12, seed=4))
    kw = dict(layers=[0], units=[2], **KW)
    whole = record_activations(gpt2_target, corpus, **kw)
    parts = [record_activations(gpt2_target, corpus, shard=(i, 6), **kw) for i in range(6)]
    assert any(p.state is None for p in parts) and sum(p.n_windows for p in parts) == whole.n_windows
    assert_same_records(list(merge_recordings(parts).records()), list(whole.records()))
    with pytest.raises(CorpusError, match="empty"):
        merge_recordings([p for p in parts if p.state is None])
    other = record_activations(gpt2_target, corpus, **{**kw, "top_k": 3})
    with pytest.raises(ModelError, match="different top_k"):
        merge_recordings([whole, other])
    with pytest.raises(ModelError, match="shard"):
        record_activations(gpt2_target, corpus, shard=(2, 2), **kw)


def test_reservoir_priorities_are_a_uniform_sample():
    """The R lowest hash priorities of N windows: each window is chosen with probability R / N."""
    N, R, seeds = 60, 6, 2000
    hits = np.zeros(N)
    for seed in range(seeds):
        chosen = sorted(range(N), key=lambda w: (window_priority(seed, w), w))[:R]
        hits[chosen] += 1
    expected = seeds * R / N  # 200 per window; binomial sd ~13.4
    assert np.abs(hits - expected).max() < 6 * np.sqrt(expected * (1 - R / N))
    # a chi-square over the windows (59 degrees of freedom): far below the 0.001 quantile (~95)
    assert ((hits - expected) ** 2 / expected).sum() < 95
    assert window_priority(0, 5) == window_priority(0, 5) != window_priority(1, 5)
