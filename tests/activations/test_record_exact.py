"""The recorder's whole state, bit for bit, against a plain reference computed from the very unit
tensors its hooks receive: top-k slots (values, window ids, per-token activations) per split,
the reservoir (ids in priority order, window maxima, activations), the running statistics (the
float sums by the same torch reductions and the same Chan merge as before; max, min, positive
counts exactly), the per-token-type sums (float32 adds in window order, ``np.add.at``) and counts.

The fast paths this guards: the token sums added row by row on one thread, the exact positive
count by one reduction into a kept buffer, the reservoir sorted in place (``_permute_rows_``),
and that the bookkeeping's thread count does not change a bit (SmolLM2, 1 or 2 threads)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neurolabel.activations.corpus import Corpus, iter_windows
from neurolabel.activations.record import (
    _batched,
    _permute_rows_,
    record_activations,
    token_types_tracked,
    window_priority,
)
from neurolabel.activations.units import model_inputs, run_forward, unit_hooks
from neurolabel.core.types import split_of_window
from tests.activations.test_record import _texts


def _unit_tensors(target, windows, layers, units, batch_size):
    """Per batch, per layer: the ``[B, T, U]`` float tensor the recorder's hook sees (prefix cut,
    units selected)."""
    p = len(target.prefix_ids)
    out = []
    for batch in _batched(windows, batch_size):
        got = {}

        def grab(layer, acts, got=got):
            x = acts[:, p:, :]
            if units is not None:
                x = x.index_select(-1, torch.tensor(units))
            got[layer] = x.float().clone()

        with torch.inference_mode(), unit_hooks(target, layers, grab):
            run_forward(target, model_inputs(target, [w.token_ids for w in batch]))
        out.append((batch, got))
    return out


def _sorted_slots(vals, ids):
    """Each row's slots in (value descending, id ascending) order: (values, ids, slot positions)."""
    order = np.lexsort((ids, -vals), axis=-1) if vals.ndim == 1 else np.stack(
        [np.lexsort((i, -v)) for v, i in zip(vals, ids)])
    return np.take_along_axis(vals, order, -1), np.take_along_axis(ids, order, -1), order


def check_state_exact(target, texts, layers, *, units=None, top_k=4, n_random=6, n_quantile_bins=3, per_bin=1,
                      window_tokens=16, batch_size=5, seed=7, token_stats_mb=256.0, **kw):
    windows = list(iter_windows(target.tokenizer, texts, window_tokens=window_tokens))
    rec = record_activations(target, Corpus.from_texts(texts), layers=layers, units=units, max_tokens=10**9,
                             top_k=top_k, n_random=n_random, n_quantile_bins=n_quantile_bins, per_bin=per_bin,
                             window_tokens=window_tokens, batch_size=batch_size, seed=seed, progress=False,
                             token_stats_mb=token_stats_mb, **kw)
    st = rec.state
    batches = _unit_tensors(target, windows, layers, units, batch_size)
    U = len(units) if units is not None else target.n_units
    # the running statistics: the float sums as the recorder always made them, merged alike
    count, mean, m2 = 0, torch.zeros(len(layers) * U, dtype=torch.float64), torch.zeros(len(layers) * U,
                                                                                            dtype=torch.float64)
    for batch, got in batches:
        x = torch.cat([got[layer] for layer in layers], dim=2)  # [B, T, LU]
        n_b = x.shape[0] * x.shape[1]
        b_sum = x.sum(dim=1).sum(dim=0, dtype=torch.float64)
        b_sumsq = torch.linalg.vecdot(x, x, dim=1).sum(dim=0, dtype=torch.float64)
        tot = count + n_b
        mean_b = b_sum / n_b
        m2_b = torch.clamp(b_sumsq - b_sum * mean_b, min=0.0)
        delta = mean_b - mean
        mean += delta * (n_b / tot)
        m2 += m2_b + delta * delta * (count * n_b / tot)
        count = tot
    assert st.count == count
    assert torch.equal(st.mean, mean) and torch.equal(st.m2, m2)
    X = torch.cat([torch.cat([got[layer] for layer in layers], dim=2) for _, got in batches]).numpy()  # [N, T, LU]
    ids_all = np.array([w.window_id for w in windows])
    assert ids_all.tolist() == list(range(len(windows)))
    np.testing.assert_array_equal(st.vmax.numpy(), X.max(axis=(0, 1)))
    np.testing.assert_array_equal(st.vmin.numpy(), X.min(axis=(0, 1)))
    np.testing.assert_array_equal(st.active.numpy(), (X > 0).sum(axis=(0, 1)))
    # top-k per split: the k first windows in (max descending, id ascending) order, their activations
    wmax = X.max(axis=1)  # [N, LU]
    splits = np.array([split_of_window(i) for i in ids_all])
    for s, name in enumerate(("explain", "score")):
        rows = np.nonzero(splits == name)[0]
        vals, ids = st.top_vals[s].numpy(), st.top_ids[s].numpy()  # [LU, k]
        got_v, got_i, order = _sorted_slots(vals, ids)
        for c in range(X.shape[2]):
            ref = sorted(((-wmax[r, c], r) for r in rows))[:top_k]
            n = len(ref)
            assert got_i[c, :n].tolist() == [r for _, r in ref], (name, c)
            np.testing.assert_array_equal(got_v[c, :n], [-v for v, _ in ref])
            assert (got_i[c, n:] == -1).all() and np.isneginf(got_v[c, n:]).all()
            for j in range(n):
                np.testing.assert_array_equal(st.top_acts[s, c, order[c, j]].numpy(), X[got_i[c, j], :, c])
    # reservoir: the R windows of lowest (priority, id), in that order, their maxima and activations
    R = max(n_random, 2 * n_quantile_bins * per_bin, 1)
    want = sorted(range(len(windows)), key=lambda i: (window_priority(seed, i), i))[:R]
    assert rec.res_ids == want
    for r, wid in enumerate(want):
        np.testing.assert_array_equal(st.res_acts[r].numpy(), X[wid])
        np.testing.assert_array_equal(st.res_max[r].numpy(), wmax[wid])
    # per-token-type sums of the explain split: float32 adds in window order
    V = token_types_tracked(len(target.tokenizer), X.shape[2], token_stats_mb)
    if V:
        tok = np.array([w.token_ids for w in windows])[splits == "explain"].ravel()
        # a row per tracked type the explain split holds, in the order first seen (within a batch by id);
        # row 0: every untracked type
        types: list[int] = []
        for b in range(0, len(windows), batch_size):
            ids = {t for w in windows[b:b + batch_size] if split_of_window(w.window_id) == "explain"
                   for t in w.token_ids if t < V}
            types.extend(sorted(ids - set(types)))
        assert st.tok_types.tolist() == [-1, *types] and st.tracked_types == V
        row_of = np.zeros(V + 1, dtype=np.int64)
        row_of[types] = np.arange(1, len(types) + 1)
        tok = row_of[np.minimum(tok, V)]
        np.testing.assert_array_equal(st.tok_count.numpy(), np.bincount(tok, minlength=len(types) + 1))
        for i in range(len(layers)):
            ref = np.zeros((len(types) + 1, U), dtype=np.float32)
            np.add.at(ref, tok, X[splits == "explain"][:, :, i * U:(i + 1) * U].reshape(-1, U))
            np.testing.assert_array_equal(st.tok_sum[i].numpy(), ref)
    return rec


def test_state_is_exact_gpt2(gpt2_target):
    check_state_exact(gpt2_target, _texts(150, seed=11), [0, 2])


def test_state_is_exact_units_and_budget(gpt2_target):
    """A units subset, a token budget that leaves most types untracked, several batch sizes."""
    for batch_size in (3, 8):
        check_state_exact(gpt2_target, _texts(120, seed=12), [1], units=[0, 7, 64, 127], batch_size=batch_size,
                          token_stats_mb=0.001)


def test_permute_rows_in_place():
    g = torch.Generator().manual_seed(0)
    for n in range(12):
        for trial in range(10):
            order = torch.randperm(n, generator=g).tolist()
            t = torch.randn(n + 2, 3, 5, generator=g)
            want = torch.cat([t[:n][order], t[n:]]) if n else t.clone()
            ptr = t.data_ptr()
            _permute_rows_(t, order)
            assert torch.equal(t, want) and t.data_ptr() == ptr


@pytest.mark.slow
@pytest.mark.parametrize("bookkeeping_threads", [None, 1])
def test_state_is_exact_smollm2(bookkeeping_threads):
    """The real model: 1536 units per layer (the bookkeeping's tensors are large enough for
    torch to split them over threads), two torch threads for the forward and the reference's
    float sums; the recorder's bookkeeping on the process's two threads or on one (the same bits:
    each float sum has many outputs, which torch splits between threads, never one output's
    sum)."""
    from neurolabel.activations.corpus import load_corpus
    from neurolabel.activations.models import load_target

    texts = []
    for t in load_corpus("default"):
        texts.append(t)
        if len(texts) >= 40:
            break
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        target = load_target("default", device="cpu")
        rec = check_state_exact(target, texts, [3, 17], top_k=3, n_random=4, n_quantile_bins=2, per_bin=1,
                                window_tokens=64, batch_size=6, bookkeeping_threads=bookkeeping_threads)
        assert rec.n_windows >= 20 and not math.isnan(float(rec.state.mean[0]))
    finally:
        torch.set_num_threads(old)
