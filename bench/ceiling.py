"""Reference predictors for ``bench/quality.py``: what per-token tables reach on the same held-out
windows the labels are scored on — the ceiling a readable label should approach.

A capture (forward hooks of its own beside the recorder's, every token of every window kept for
the few benchmarked units) gives each neuron's activations on the whole corpus. From the explain split
only it builds, per neuron:

- the token table: each token type's mean activation (unseen types: the split's mean);
- the previous + current token table: each (previous token, token) pair's mean, backing off to
  the token table for unseen pairs;

and predicts the record's held-out windows (score-split top and random windows) with each,
scored with the same ``scoring.metrics.correlation`` as the labels. A third reference, the
token table of the kept explain windows only, is computed from the record itself.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from neurolabel.core.types import NeuronRecord, split_of_window


@dataclass
class Capture:
    """Every token's activation of the benchmarked units."""

    ids: np.ndarray
    """[windows, T] token ids."""
    acts: dict[tuple[int, int], np.ndarray]
    """(layer, unit) -> [windows, T] activations."""


@contextlib.contextmanager
def capturing(target, layers: Sequence[int], units: Sequence[int], corpus, *, max_tokens: int,
              window_tokens: int) -> Iterator[Capture]:
    """Within the block, every forward pass of ``target`` appends the activations of ``units`` in
    ``layers`` to the yielded :class:`Capture` (hooks registered before the recorder's, so they see
    every layer before the recorder ends the pass); run the recording of the same corpus and
    window size inside it, and the capture holds every window in corpus order."""
    import torch

    from neurolabel.activations.corpus import iter_windows, load_corpus
    from neurolabel.activations.units import unit_hooks

    if isinstance(corpus, str):
        corpus = load_corpus(corpus)
    ids = np.asarray([w.token_ids for w in iter_windows(target.tokenizer, corpus, window_tokens=window_tokens,
                                                        max_windows=max_tokens // window_tokens)])
    p = len(target.prefix_ids)
    idx = torch.tensor(list(units))
    got: dict[int, list[np.ndarray]] = defaultdict(list)
    cap = Capture(ids=ids, acts={})

    def hook(layer: int, acts) -> None:
        got[layer].append(acts[:, p:, :].index_select(-1, idx).float().cpu().numpy())

    with unit_hooks(target, layers, hook, stop_after_last=False):
        yield cap
    for layer in layers:
        a = np.concatenate(got[layer])  # [W, T, U]
        if a.shape[0] != len(ids):
            raise RuntimeError(f"captured {a.shape[0]} windows of layer {layer}, expected {len(ids)}")
        for j, u in enumerate(units):
            cap.acts[(layer, u)] = a[:, :, j]


def _table_predict(keys_fit: np.ndarray, y_fit: np.ndarray, keys: np.ndarray, default: np.ndarray) -> np.ndarray:
    """Mean of ``y_fit`` per key, looked up for ``keys`` (``default`` where unseen)."""
    uniq, inv = np.unique(keys_fit, return_inverse=True)
    means = np.bincount(inv, weights=y_fit) / np.bincount(inv)
    pos = np.searchsorted(uniq, keys)
    pos = np.clip(pos, 0, len(uniq) - 1)
    seen = uniq[pos] == keys
    return np.where(seen, means[pos], default)


def reference_scores(cap: Capture, record: NeuronRecord) -> dict[str, float | None]:
    """Held-out correlation of the token table and the previous + current token table (whole explain
    split), and of the token table of the record's kept explain windows."""
    from neurolabel.scoring.metrics import correlation
    from neurolabel.scoring.validate import scored_windows

    a = cap.acts[(record.neuron.layer, record.neuron.index)]
    W, T = cap.ids.shape
    explain = np.asarray([split_of_window(i) == "explain" for i in range(W)])
    prev = np.concatenate([np.full((W, 1), -1), cap.ids[:, :-1]], axis=1)
    pair = prev * 1_000_003 + cap.ids
    held = scored_windows(record)
    wid = np.asarray([w.window_id for w in held])
    y = np.concatenate([np.asarray(w.activations) for w in held])
    mean = float(a[explain].mean())
    uni = _table_predict(cap.ids[explain].ravel(), a[explain].ravel(), cap.ids[wid].ravel(), np.full(y.size, mean))
    bi = _table_predict(pair[explain].ravel(), a[explain].ravel(), pair[wid].ravel(), uni)
    # the token table of the kept explain windows (what the first wave's explainers saw)
    kept = {w.window_id: w for k in ("top", "random", "quantile") for w in record.windows(k, "explain")}  # type: ignore[arg-type]
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for w in kept.values():
        for t, v in zip(w.tokens, w.activations):
            sums[t] += v
            counts[t] += 1
    m_kept = sum(sums.values()) / max(1, sum(counts.values()))
    toks = [t for w in held for t in w.tokens]
    kept_pred = [sums[t] / counts[t] if counts.get(t) else m_kept for t in toks]
    return {"token_table_kept": correlation(kept_pred, y), "token_table": correlation(uni, y),
            "prev_token_table": correlation(bi, y)}
