"""PMI search: MILAN's description search adapted to text neurons.

Candidate descriptions ``d`` are ontology classes (through :class:`ontology.annotate.Annotator`,
superclasses included, so "animal" covers "dog" and "horse"), corpus words (lemmatised) and
two-word phrases. Over the tokens of a neuron's explain-split windows, a token is *activating*
when its activation reaches ``threshold·max``. Each description with at least ``min_support``
activating tokens is scored

    score(d) = log p(d | activating) − λ · log p(d)

with additive smoothing ``α`` on both probabilities (``p(d)`` over all tokens of the explain
windows). ``λ < 1`` prefers the most specific description that still covers the activating
tokens over its sub-concepts; exact ties go to ontology classes, then to shorter labels
(in words), then to deeper classes.

Cheap: each window's (token, description) incidence is computed once and cached, a neuron is
two ``bincount`` calls over concatenated arrays.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Sequence

import numpy as np

from neurolabel.core.errors import ExplanationError
from neurolabel.core.registry import EXPLAINERS
from neurolabel.core.types import ActivationRecord, Explanation, NeuronRecord

log = logging.getLogger(__name__)

_CLASS, _WORD, _PHRASE = "class", "word", "phrase"


class _Vocab:
    """Description strings ↔ ids, grown as windows are seen."""

    def __init__(self) -> None:
        self.ids: dict[tuple[str, Any], int] = {}
        self.keys: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def id(self, key: tuple[str, Any]) -> int:
        got = self.ids.get(key)
        if got is None:
            with self._lock:  # neurons are explained on several threads at once
                got = self.ids.get(key)
                if got is None:
                    got = len(self.keys)
                    self.keys.append(key)
                    self.ids[key] = got
        return got


@EXPLAINERS.register("pmi")
class PMIExplainer:
    """Scores candidate descriptions by PMI between description and activation (MILAN-style)."""

    kind = "pmi"
    version = "1"
    default_simulator = "symbolic"

    def __init__(
        self,
        annotator: Any = None,
        *,
        lam: float = 0.8,
        alpha: float = 0.5,
        threshold: float = 0.2,
        min_support: int = 3,
        top_n: int = 3,
        words: bool = True,
        phrases: bool = True,
        min_word_len: int = 3,
    ) -> None:
        self.annotator = annotator
        """:class:`ontology.annotate.Annotator` for class candidates (``None``: words and phrases only)."""
        self.lam = lam
        """λ: weight of the prior ``log p(d)`` (1 = plain PMI, 0 = plain frequency among activating tokens)."""
        self.alpha = alpha
        """Additive smoothing of both probabilities."""
        self.threshold = threshold
        """A token is activating when its activation ≥ ``threshold`` × the largest explain activation."""
        self.min_support = min_support
        """Fewest activating tokens a description must cover (capped by the number of activating tokens)."""
        self.top_n = top_n
        """Explanations returned."""
        self.words = words
        """Use corpus words as candidates."""
        self.phrases = phrases
        """Use two-word phrases as candidates."""
        self.min_word_len = min_word_len
        """Shortest word (in letters) used as a candidate."""
        self._vocab = _Vocab()
        self._windows: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._blocked: frozenset[str] | None = None

    @classmethod
    def from_defaults(cls, annotator: Any = None, **kwargs: Any) -> "PMIExplainer":
        """Over ``annotator`` (the run's ontology), else the default WordNet ontology's annotator."""
        from neurolabel.ontology.annotate import Annotator

        return cls(annotator or Annotator.from_defaults(), **kwargs)

    def params(self) -> dict[str, Any]:
        """Parameters stored with each explanation."""
        return {
            "lam": self.lam,
            "alpha": self.alpha,
            "threshold": self.threshold,
            "min_support": self.min_support,
            "words": self.words,
            "phrases": self.phrases,
            "ontology": getattr(getattr(self.annotator, "ontology", None), "name", None),
        }

    # ---- per-window incidence ---------------------------------------------------------------
    def _blocked_words(self) -> frozenset[str]:
        if self._blocked is None:
            onto = getattr(self.annotator, "ontology", None)
            self._blocked = frozenset(getattr(onto, "blocked", ())) | _STOPWORDS
        return self._blocked

    def incidence(self, tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(token_index, description_id)`` pairs of one window (cached per window)."""
        key = tuple(tokens)
        got = self._windows.get(key)
        if got is not None:
            return got
        from neurolabel.ontology.annotate import Annotator

        pairs: set[tuple[int, int]] = set()
        vocab = self._vocab
        if self.annotator is not None:
            for ti, classes in enumerate(self.annotator.annotate(key)):
                for c in classes:
                    pairs.add((ti, vocab.id((_CLASS, int(c)))))
        if self.words or self.phrases:
            blocked = self._blocked_words()
            lemma = getattr(self.annotator, "lemma", None)
            words = []
            for word, idx, _, _ in Annotator.words(key):
                w = word.lower()
                ok = len(w) >= self.min_word_len and w not in blocked
                norm = (lemma(w) if lemma is not None else None) or w
                words.append((norm, idx, ok))
            if self.words:
                for norm, idx, ok in words:
                    if ok:
                        d = vocab.id((_WORD, norm))
                        pairs.update((ti, d) for ti in idx)
            if self.phrases:
                for (a, ia, oka), (b, ib, okb) in zip(words, words[1:]):
                    if oka and okb:
                        d = vocab.id((_PHRASE, f"{a} {b}"))
                        pairs.update((ti, d) for ti in ia + ib)
        arr = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
        got = (arr[:, 0].copy(), arr[:, 1].copy())
        self._windows[key] = got
        return got

    # ---- scoring ----------------------------------------------------------------------------
    def scores(self, windows: Sequence[ActivationRecord]) -> list[dict[str, Any]]:
        """All candidate descriptions with enough support, best first (with their statistics)."""
        if not windows:
            raise ExplanationError("no explain-split windows to search descriptions in")
        acts = [np.asarray(w.activations, dtype=np.float64) for w in windows]
        top = max(float(a.max()) if a.size else 0.0 for a in acts)
        if not top > 0:
            raise ExplanationError("no positive activation in the explain windows")
        rows, cols, offset = [], [], 0
        seen: set[tuple[str, ...]] = set()
        flat = []
        for w, a in zip(windows, acts):
            if w.tokens in seen:  # a window kept both as top and random counts once
                continue
            seen.add(w.tokens)
            r, c = self.incidence(w.tokens)
            rows.append(r + offset)
            cols.append(c)
            flat.append(a)
            offset += len(w.tokens)
        active = np.concatenate(flat) >= self.threshold * top
        n_all, n_act = offset, int(active.sum())
        rows_a, cols_a = np.concatenate(rows), np.concatenate(cols)
        size = len(self._vocab.keys)
        c_all = np.bincount(cols_a, minlength=size).astype(np.float64)
        c_act = np.bincount(cols_a[active[rows_a]], minlength=size).astype(np.float64)
        support = min(self.min_support, n_act)
        cand = np.flatnonzero(c_act >= max(support, 1))
        if cand.size == 0:
            raise ExplanationError(
                f"no candidate description covers {support} of the {n_act} activating tokens"
            )
        a = self.alpha
        p_act = (c_act[cand] + a) / (n_act + 2 * a)
        p_all = (c_all[cand] + a) / (n_all + 2 * a)
        score = np.log(p_act) - self.lam * np.log(p_all)
        out = []
        onto = getattr(self.annotator, "ontology", None)
        depth = onto.depth if onto is not None else None
        for i, d in enumerate(cand):
            kind, val = self._vocab.keys[d]
            item: dict[str, Any] = {
                "kind": kind,
                "score": float(score[i]),
                "p_act": float(c_act[d] / max(n_act, 1)),
                "p_all": float(c_all[d] / max(n_all, 1)),
                "support": int(c_act[d]),
                "count": int(c_all[d]),
            }
            if kind == _CLASS:
                item.update(description=onto.label(val), iri=onto.iri(val), depth=int(depth[val]))
            else:
                item.update(description=val, depth=-1)
            out.append(item)
        out.sort(
            key=lambda x: (
                -round(x["score"], 9),
                x["kind"] != _CLASS,
                len(x["description"].split()),
                -x["depth"],
                x["description"],
            )
        )
        return out

    def explain(self, record: NeuronRecord) -> list[Explanation]:
        """The ``top_n`` best descriptions of ``record``'s neuron (explain-split windows only)."""
        windows = (
            record.windows("top", "explain") + record.windows("random", "explain") + record.windows("quantile", "explain")
        )
        try:
            ranked = self.scores(windows)
        except ExplanationError as exc:
            raise ExplanationError(f"neuron {record.neuron} of {record.model}: {exc}") from None
        best = _distinct(ranked, self.top_n)
        params = self.params()
        fit = sum(len(w.tokens) for w in windows)
        alternatives = [{k: v for k, v in x.items() if k != "depth"} for x in ranked[: max(10, self.top_n)]]
        out = []
        for rank, x in enumerate(best):
            structured = {k: v for k, v in x.items() if k != "depth"}
            if x["kind"] == _CLASS:
                structured["iris"] = [x["iri"]]
            structured["alternatives"] = alternatives if rank == 0 else []
            structured["fit_tokens"] = fit
            out.append(
                Explanation(
                    model=record.model,
                    neuron=record.neuron,
                    explainer=self.kind,
                    explainer_version=self.version,
                    text=x["description"],
                    structured=structured,
                    params=params,
                    rank=rank,
                )
            )
        return out


def _distinct(ranked: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The first ``n`` items with distinct description texts (a class and the word naming it count once)."""
    out, seen = [], set()
    for x in ranked:
        key = x["description"].lower()
        if key in seen:
            continue
        seen.add(key)
        out.append(x)
        if len(out) == n:
            break
    return out


_STOPWORDS = frozenset(
    """the and for are but not you all any can had her was one our out has him his how its may new now old see
    two way who did get let put say she too use that with have this will your from they know want been good
    much some time very when come here just like long make many over such take than them well were what where
    which while would there their these those then into also only other about after again could should being
    because before between both each more most does doing during few further same so than too under until
    upon whom why yours itself himself herself themselves ourselves myself""".split()
)
"""English function words never used as word candidates (added to the ontology's blocked set)."""
