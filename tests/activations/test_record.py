"""Recording correctness against an independent plain-forward reference and a brute-force top-k,
on tiny GPT-2 / BERT / Llama models; bounded memory; bad inputs."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from transformers import AutoModel

from neurolabel.activations.corpus import Corpus
from neurolabel.activations.models import load_target
from neurolabel.activations.record import record_activations, record_neurons
from neurolabel.core.errors import CorpusError, ModelError
from neurolabel.core.types import split_of_window
from tests.activations.reference import reference_acts, reference_prefix, reference_windows
from tests.activations.tiny import WORDS

T = 16
K = 4


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 12)))) for _ in range(n)]


def check_against_reference(target, model_dir, texts, layers, *, units=None, top_k=K, n_random=6,
                            n_quantile_bins=3, per_bin=1, batch_size=5, atol=2e-5):
    """Record, then compare everything recorded with the independent reference."""
    recs = record_neurons(target, Corpus.from_texts(texts), layers=layers, units=units, max_tokens=10**9,
                          top_k=top_k, n_random=n_random, n_quantile_bins=n_quantile_bins, per_bin=per_bin,
                          window_tokens=T, batch_size=batch_size, progress=False)
    plain = AutoModel.from_pretrained(model_dir).eval()  # a fresh plain model, not neurolabel's
    wins = reference_windows(target.tokenizer, texts, T)
    ref = reference_acts(plain, target.architecture, wins, reference_prefix(target.tokenizer), layers)
    tok_strings = [tuple(target.tokenizer.decode([i]) for i in w) for w in wins]
    unit_list = units if units is not None else range(target.n_units)
    assert [(r.neuron.layer, r.neuron.index) for r in recs] == [(l, u) for l in layers for u in unit_list]
    splits = np.array([split_of_window(i) for i in range(len(wins))])
    for r in recs:
        a = ref[r.neuron.layer][:, :, r.neuron.index].numpy()  # [windows, T]
        wmax = a.max(axis=1)
        # every kept window: right tokens, right activations, right split
        for w in (*r.top, *r.random, *r.quantile):
            assert w.tokens == tok_strings[w.window_id]
            np.testing.assert_allclose(w.activations, a[w.window_id], atol=atol, rtol=1e-4)
            assert w.split == split_of_window(w.window_id)
        # top-k per split == brute force, highest first overall
        for split in ("explain", "score"):
            got = [w for w in r.top if w.split == split]
            want = np.sort(wmax[splits == split])[::-1][:top_k]
            np.testing.assert_allclose([w.max_activation for w in got], want, atol=atol, rtol=1e-4)
            assert len({w.window_id for w in got}) == len(got)
        assert [w.max_activation for w in r.top] == sorted((w.max_activation for w in r.top), reverse=True)
        # random: distinct windows, quantile bins ordered by window max
        assert len(r.random) == min(n_random, len(wins)) == len({w.window_id for w in r.random})
        qs = [(w.quantile, w.max_activation) for w in r.quantile]
        assert [q for q, _ in qs] == sorted(q for q, _ in qs)
        for b in range(n_quantile_bins - 1):
            lo = [m for q, m in qs if q == b]
            hi = [m for q, m in qs if q == b + 1]
            if lo and hi:
                assert max(lo) <= min(hi) + 1e-6
        # running statistics over every token
        st = r.stats
        assert st.count == a.size
        np.testing.assert_allclose([st.mean, st.std, st.max, st.min],
                                   [a.mean(), a.std(), a.max(), a.min()], atol=atol, rtol=1e-4)
        assert abs(st.frac_active - (a > 0).mean()) <= 2 / a.size
        check_token_stats(r, a, wins, splits, target.tokenizer, atol=atol)
    return recs


def check_token_stats(r, a, wins, splits, tokenizer, *, atol):
    """Per-token-type statistics of the explain split == brute force over the reference."""
    ids = np.array(wins)[splits == "explain"].ravel()
    acts = a[splits == "explain"].ravel()
    ts = r.token_stats
    assert ts is not None and ts.count == ids.size
    np.testing.assert_allclose(ts.mean, acts.mean(), atol=atol, rtol=1e-4)
    types = np.unique(ids)
    mean = {int(t): acts[ids == t].mean() for t in types}
    count = {int(t): int((ids == t).sum()) for t in types}
    tracked = {t for t in mean if t < ts.tracked_types}  # types beyond the memory budget are not listed
    weight = {t: count[t] * (mean[t] - acts.mean()) ** 2 for t in tracked}
    by_name = {}
    for t in mean:
        by_name.setdefault(tokenizer.decode([t]), []).append(t)
    listed = set()
    for e in ts.tokens:
        # the type with this string, count and mean (two ids may decode to the same string)
        match = [t for t in by_name[e.token] if count[t] == e.count and abs(mean[t] - e.mean) <= atol + 1e-4 * abs(mean[t])]
        assert match, (e, [(t, count[t], mean[t]) for t in by_name[e.token]])
        listed.add(match[0])
    assert listed <= tracked and len(ts.tokens) == min(128, len(tracked))  # record_activations keeps 128 types
    if len(listed) < len(tracked):  # the listed types are the ones with the largest weight
        assert min(weight[t] for t in listed) >= max(weight[t] for t in weight if t not in listed) - 1e-6


def test_gpt2_matches_reference(gpt2_dir, gpt2_target):
    target = gpt2_target
    check_against_reference(target, gpt2_dir, _texts(120), [0, 2])


def test_bert_matches_reference(bert_dir):
    target = load_target(str(bert_dir))
    recs = check_against_reference(target, bert_dir, _texts(120, seed=1), [0, 1], units=[0, 5, 17, 47])
    assert len(recs) == 8


def test_llama_matches_reference_and_stops_early(llama_dir):
    target = load_target(str(llama_dir))
    texts = _texts(100, seed=2)
    only0 = check_against_reference(target, llama_dir, texts, [0])  # forward stopped after layer 0
    both = record_neurons(target, Corpus.from_texts(texts), layers=[0, 1], max_tokens=10**9, top_k=K, n_random=6,
                          n_quantile_bins=3, per_bin=1, window_tokens=T, batch_size=5, progress=False)
    assert only0 == both[: len(only0)]


def test_top_k_is_per_split_and_deterministic(gpt2_target):
    target = gpt2_target
    kw = dict(layers=[1], units=[3, 9], max_tokens=10**9, top_k=3, window_tokens=T, batch_size=7, progress=False)
    a = record_neurons(target, Corpus.from_texts(_texts(80)), **kw)
    b = record_neurons(target, Corpus.from_texts(_texts(80)), **kw)
    assert a == b
    for r in a:
        assert len(r.windows("top", "explain")) == 3 and len(r.windows("top", "score")) == 3


def test_max_tokens_limits_the_stream(gpt2_target):
    target = gpt2_target
    rec = record_activations(target, Corpus.from_texts(_texts(200)), layers=[0], units=[0], max_tokens=10 * T,
                             window_tokens=T, progress=False)
    assert rec.n_windows == 10 and rec.n_tokens == 10 * T


def test_memory_bounded_with_10x_corpus(gpt2_target):
    target = gpt2_target
    kw = dict(layers=[0, 2], units=[1, 2, 3], max_tokens=10**9, top_k=3, n_random=5, n_quantile_bins=2,
              per_bin=1, window_tokens=T, batch_size=8, progress=False)
    out = []
    for n_texts in (150, 1500):
        texts = _texts(n_texts, seed=n_texts)
        tracemalloc.start()
        rec = record_activations(target, Corpus(name="gen", source=lambda t=texts: iter(t)), **kw)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out.append((rec, peak))
    (small, peak_small), (big, peak_big) = out
    assert big.n_windows >= 9 * small.n_windows
    # tensors: units x k, and the per-type sums' rows (allocated in doublings up to the budget's types):
    # not corpus size; the types' ids list grows by the types seen
    types_bytes = [r.state.tok_types.untyped_storage().nbytes() for r in (small, big)]
    assert big.state_bytes() - types_bytes[1] == small.state_bytes() - types_bytes[0]
    assert types_bytes[1] - types_bytes[0] <= 8 * len(target.tokenizer)
    bound = 2 * 3 * 3 * 2 + 5  # splits x k x units x layers + reservoir
    assert len(small.tokens) <= bound and len(big.tokens) <= bound
    # Python heap: the 10x corpus (its text list is built before tracing) must not grow the peak 10x
    assert peak_big < 2 * peak_small + 2_000_000, (peak_small, peak_big)


def test_bad_layers_units_and_corpus(gpt2_target, tmp_path):
    target = gpt2_target
    c = Corpus.from_texts(_texts(10))
    with pytest.raises(ModelError, match=r"layer\(s\) \[3\] do not exist"):
        record_neurons(target, c, layers=[0, 3], progress=False)
    with pytest.raises(ModelError, match=r"unit\(s\) \[500\] do not exist"):
        record_neurons(target, c, layers=[0], units=[500], progress=False)
    with pytest.raises(ModelError, match="top_k must be >= 1"):
        record_neurons(target, c, layers=[0], top_k=0, progress=False)
    with pytest.raises(CorpusError, match="empty"):
        record_neurons(target, Corpus.from_texts([], name="nothing"), layers=[0], progress=False)
    with pytest.raises(CorpusError, match="smaller than one window"):
        record_neurons(target, c, layers=[0], max_tokens=10, window_tokens=64, progress=False)
    assert not any(tmp_path.iterdir())  # nothing written


def test_units_subset_equals_full_recording(gpt2_target):
    target = gpt2_target
    kw = dict(layers=[1], max_tokens=10**9, top_k=3, window_tokens=T, batch_size=6, progress=False)
    texts = _texts(60, seed=5)
    full = record_neurons(target, Corpus.from_texts(texts), **kw)
    sub = record_neurons(target, Corpus.from_texts(texts), units=[7, 100], **kw)
    by_id = {r.neuron: r for r in full}
    for r in sub:
        f = by_id[r.neuron]
        assert [w.window_id for w in r.top] == [w.window_id for w in f.top]
        np.testing.assert_allclose(r.top[0].activations, f.top[0].activations, atol=1e-6)
        assert r.stats.count == f.stats.count
        assert torch.isclose(torch.tensor(r.stats.mean), torch.tensor(f.stats.mean), atol=1e-6)


@pytest.mark.parametrize("n_cand", [1, 3, 8, 50])
def test_merge_topk_equals_brute_force(n_cand):
    """The slot merge (both its min path and its sort/smallest-c path) keeps exactly the top-k
    of old slots and candidates, with ids following their values, on data full of ties."""
    from neurolabel.activations.record import _merge_topk

    k, n = 6, 40
    for trial in range(60):
        g = torch.Generator().manual_seed(trial)
        vals = torch.randint(0, 12, (n, k), generator=g).float()
        ids = torch.arange(n * k).view(n, k)
        cand = torch.randint(0, 15, (n_cand, n), generator=g).float()
        cand_ids = torch.arange(10_000, 10_000 + n_cand)
        thresh = vals.min(dim=1).values
        max_new = int((cand > thresh).sum(0).max())
        v, d = vals.clone(), ids.clone()
        changed = _merge_topk(v, d, cand, cand_ids, max_new=max_new)
        union_v = torch.cat([vals, cand.t()], 1)
        want = torch.sort(union_v, dim=1, descending=True).values[:, :k]
        assert torch.equal(torch.sort(v, dim=1, descending=True).values, want)
        # every kept id carries its own value
        value_of = {int(i): float(x) for i, x in zip(ids.flatten(), vals.flatten())}
        for c in range(n_cand):
            for col in range(n):
                value_of[(int(cand_ids[c]), col)] = float(cand[c, col])
        for col in range(n):
            for slot in range(k):
                i = int(d[col, slot])
                got = value_of[(i, col)] if i >= 10_000 else value_of[i]
                assert got == float(v[col, slot])
            # ties go to the lower id: the kept ids are the k first in (value desc, id asc) order
            union = [(-float(x), int(i)) for x, i in zip(vals[col], ids[col])]
            union += [(-float(cand[c, col]), int(cand_ids[c])) for c in range(n_cand)]
            assert sorted(int(i) for i in d[col]) == sorted(i for _, i in sorted(union)[:k])
        if changed is None:
            assert torch.equal(v, vals)
        else:
            col, slot, src = changed
            assert len(set(zip(col.tolist(), slot.tolist()))) == col.numel()
            assert torch.equal(v[col, slot], cand[src, col])


def test_every_unit_listed_records_as_no_units_given(gpt2_target):
    """A run that lists every unit of its layers (``label`` does) records as ``units=None`` does (the
    recorder then takes whole layers, without a column gather per layer and batch)."""
    kw = dict(layers=[0, 2], max_tokens=40 * T, top_k=3, n_random=4, window_tokens=T, batch_size=8, progress=False)
    texts = Corpus.from_texts(_texts(60, seed=5))
    listed = record_activations(gpt2_target, texts, units=list(range(gpt2_target.n_units)), **kw)
    whole = record_activations(gpt2_target, texts, units=None, **kw)
    assert listed.units == whole.units == list(range(gpt2_target.n_units))
    assert list(listed.records()) == list(whole.records())
