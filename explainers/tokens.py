"""The ``tokens`` explainer: a neuron explained by its most characteristic tokens with weights.

The label is a short table, readable as a list — ``fires on “with” 3.1, “)” 2.4, “having” 2.0
(else 0.1)`` — and simulated by the graded token simulator (:mod:`scoring.token_simulator`):
each listed token predicts its weight, every other token the baseline. It is the honest
baseline every other explainer must beat: it says nothing about meaning, only which tokens.

Evidence, explain split only:

- the neuron's per-token-type statistics over every explain-split token of the corpus
  (:class:`core.TokenStats`, gathered during recording) when the record has them: a token's
  weight is its mean activation there;
- otherwise (imported records, older databases) the same table computed from the kept
  explain-split windows (top, random and quantile, each window once).

Which tokens: greedy forward selection. Starting from the constant prediction, the token whose
entry most raises the correlation of the prediction with the true activations of the kept
explain-split windows (top and random) is added, until ``max_tokens`` entries or no entry adds
``min_gain``. The windows the selection is judged on mirror the held-out score windows (top and
random), so it picks the tokens that matter where the neuron is scored, while the weights come
from the whole split; the baseline is the mean activation of all the other tokens.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import numpy as np

from neurolabel.core.errors import ExplanationError
from neurolabel.core.registry import EXPLAINERS
from neurolabel.core.text import quote_token
from neurolabel.core.types import ActivationRecord, Explanation, NeuronRecord

log = logging.getLogger(__name__)


def explain_windows(record: NeuronRecord) -> list[ActivationRecord]:
    """The record's explain-split windows, each window once (top, random, quantile)."""
    seen: set[object] = set()
    out = []
    for kind in ("top", "random", "quantile"):
        for w in record.windows(kind, "explain"):  # type: ignore[arg-type]
            key = w.window_id if w.window_id >= 0 else (w.tokens, w.activations)
            if key not in seen:
                seen.add(key)
                out.append(w)
    return out


def token_table(record: NeuronRecord) -> tuple[dict[str, tuple[int, float]], float, str]:
    """``(table, overall mean, source)``: token → (count, mean activation) over the explain
    split, from the record's token statistics when present, else from its explain windows."""
    if record.token_stats is not None and record.token_stats.tokens:
        ts = record.token_stats
        return {t.token: (t.count, t.mean) for t in ts.tokens}, ts.mean, "token_stats"
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for w in explain_windows(record):
        for t, a in zip(w.tokens, w.activations):
            sums[t] += a
            counts[t] += 1
    total = sum(counts.values())
    if not total:
        return {}, 0.0, "windows"
    return {t: (counts[t], sums[t] / counts[t]) for t in counts}, sum(sums.values()) / total, "windows"


@EXPLAINERS.register("tokens")
class TokenExplainer:
    """Explains a neuron by a weighted list of its most characteristic tokens."""

    kind = "tokens"
    version = "1"
    default_simulator = "tokens"

    def __init__(self, *, max_tokens: int = 20, min_gain: float = 0.002, min_count: int = 1) -> None:
        self.max_tokens = max_tokens
        """Most entries in a label (the issue's readability bound: 20)."""
        self.min_gain = min_gain
        """An entry is added only when it raises the explain-split correlation by this much."""
        self.min_count = min_count
        """Tokens seen fewer times than this in the explain split are never listed."""

    @classmethod
    def from_defaults(cls, **kwargs: Any) -> "TokenExplainer":
        """With default settings (nothing to load)."""
        return cls(**kwargs)

    @property
    def params(self) -> dict[str, Any]:
        """Parameters stored with each explanation."""
        return {"max_tokens": self.max_tokens, "min_gain": self.min_gain, "min_count": self.min_count}

    def select(self, record: NeuronRecord) -> tuple[list[tuple[str, float, int]], float, str]:
        """``(entries, baseline, source)``: the chosen ``(token, weight, count)`` entries in the
        order they were chosen, the prediction for every other token, and the evidence used."""
        table, overall, source = token_table(record)
        windows = [w for w in explain_windows(record) if w.kind in ("top", "random")] or explain_windows(record)
        toks = [t for w in windows for t in w.tokens]
        y = np.asarray([a for w in windows for a in w.activations], dtype=np.float64)
        if not toks or not table:
            raise ExplanationError(f"neuron {record.neuron} of {record.model!r}: no explain-split tokens to list")
        if float(y.max(initial=0.0)) <= 0 and max(m for _, m in table.values()) <= overall:
            raise ExplanationError(
                f"neuron {record.neuron} of {record.model!r}: no positive activation in its explain split"
            )
        y = y - y.mean()
        yy = float(y @ y)
        N = len(toks)
        cands = [t for t in dict.fromkeys(toks) if t in table and table[t][0] >= self.min_count]
        col = {t: i for i, t in enumerate(cands)}
        idx = np.fromiter((col.get(t, -1) for t in toks), np.int64, N)
        ok = idx >= 0
        n_loc = np.bincount(idx[ok], minlength=len(cands)).astype(np.float64)  # occurrences in the windows
        Y = np.bincount(idx[ok], weights=y[ok], minlength=len(cands))  # sum of centred activations there
        w = np.asarray([table[t][1] for t in cands], dtype=np.float64)
        c = np.asarray([table[t][0] for t in cands], dtype=np.float64)
        if source == "windows":
            total_n = float(sum(n for n, _ in table.values()))
        else:
            total_n = float(record.token_stats.count)  # type: ignore[union-attr]
        total_sum = overall * total_n
        free = np.ones(len(cands), dtype=bool)
        chosen: list[int] = []
        # sums over the chosen entries: table counts and sums, and in the windows n, n*w, n*w^2, w*Y, Y
        cn = cs = sn = snw = snw2 = swy = sy = 0.0
        best = 0.0
        while len(chosen) < self.max_tokens and free.any() and yy > 0:
            rest = total_n - cn - c
            base = np.where(rest > 0, (total_sum - cs - c * w) / np.where(rest > 0, rest, 1.0), overall)
            m = N - sn - n_loc
            sp = snw + n_loc * w + m * base
            sp2 = snw2 + n_loc * w * w + m * base * base
            var = sp2 - sp * sp / N
            cov = swy + w * Y - base * (sy + Y)
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.where((var > 1e-12) & free, cov / np.sqrt(np.maximum(var, 1e-300) * yy), -np.inf)
            j = int(np.argmax(r))
            if not np.isfinite(r[j]) or r[j] - best < self.min_gain:
                break
            best = float(r[j])
            chosen.append(j)
            free[j] = False
            cn += c[j]
            cs += c[j] * w[j]
            sn += n_loc[j]
            snw += n_loc[j] * w[j]
            snw2 += n_loc[j] * w[j] * w[j]
            swy += w[j] * Y[j]
            sy += Y[j]
        if not chosen:
            raise ExplanationError(
                f"neuron {record.neuron} of {record.model!r}: no token's mean activation predicts its explain windows"
            )
        n_rest = total_n - cn
        baseline = (total_sum - cs) / n_rest if n_rest > 0 else overall
        return [(cands[j], float(w[j]), int(c[j])) for j in chosen], float(baseline), source

    def explain(self, record: NeuronRecord) -> list[Explanation]:
        """One explanation: the selected tokens, highest weight first."""
        entries, baseline, source = self.select(record)
        entries = sorted(entries, key=lambda e: -e[1])
        shown = ", ".join(f"{quote_token(t)} {w:.2g}" for t, w, _ in entries)
        text = f"fires on {shown} (else {baseline:.2g})"
        structured = {
            "tokens": [[t, round(float(w), 6), int(c)] for t, w, c in entries],
            "baseline": round(float(baseline), 6),
            "source": source,
        }
        return [Explanation(model=record.model, neuron=record.neuron, explainer=self.kind,
                            explainer_version=self.version, text=text, structured=structured,
                            params=self.params, rank=0)]
