"""Facets: a polysemantic neuron explained as the union of several labels, one per facet.

1. **Events.** In each explain-split top window, the token of the window's largest activation,
   plus every other token reaching ``fraction`` × the neuron's peak, is an activation event.
2. **Representation** of an event (``representation``): ``classes`` — its ontology classes with
   all ancestors, IDF-weighted over the neuron's events (so ``entity`` counts for nothing and
   ``bird`` for much); ``token`` — its folded word; ``context`` — the MiniLM embedding of the
   few tokens around it; or ``+``-joined blocks of these (each block L2-normalised, then the
   concatenation). The default ``classes+token`` was chosen by measurement (``bench/facets.py``,
   2-core CPU): on 6 planted two-concept units it split 5 in two (4 naming both classes; ``token``
   0, ``classes+context`` 4 at 7× the time) and kept 4 of 6 one-concept units whole; on 150 real
   SmolLM2 neurons it raised the held-out score over the single best label on 7% of them
   (``classes`` 6%, ``token`` 1%), by +0.063 where it did (kept-label mean 0.106 vs 0.101).
3. **Clustering**: spherical k-means (cosine, k-means++ seeded, fixed seed — deterministic) for
   k = 2 … ``max_facets``. **Criterion**: the smallest k whose mean silhouette (cosine) reaches
   ``min_silhouette`` (default 0.4: on ``bench/facets.py``'s planted units it split 5 of 6
   two-concept units in two and kept 5 of 6 one-concept units whole; 0.5 split only 2 of 6) and whose clusters each hold at least ``min_share`` of the events (and
   ``min_events`` events) is kept; when no k qualifies the neuron is monosemantic (k = 1).
   Facets whose labels name the same class expression, or a class under another facet's class
   (``passerine`` under ``bird``), are merged afterwards: a facet must say something the others
   do not.
4. **Facet labels.** Each top window belongs to the facet of its peak event. Every facet is
   explained by every sub-explainer on a new record (``dataclasses.replace``) whose top windows
   are the facet's windows (explain split only; random and quantile explain windows kept as
   negatives); the candidate with the highest correlation on that facet's explain-split windows
   (simulated by its explainer's default simulator) is the facet's label.

The explanation's ``structured`` holds ``{"facets": [{"label", "explainer", "explainer_version",
"structured", "simulator", "weight", "share", "examples", "explain_score", "score"}…],
"representation", "criterion": {"k", "silhouette", "silhouettes"}}``. ``weight`` is the facet's
mean peak activation relative to the strongest facet; the ``facets`` simulator
(:mod:`scoring.facet_simulator`) predicts ``max_f weight_f × prediction_f`` (a graded union).
``score`` of each facet is ``None`` here: :func:`scoring.facet_simulator.score_facets` fills it
in on held-out windows after the whole explanation is scored.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from neurolabel.core.errors import ConfigError, ExplanationError, NeurolabelError
from neurolabel.core.registry import EXPLAINERS
from neurolabel.core.types import ActivationRecord, Explanation, NeuronRecord

log = logging.getLogger(__name__)

REPRESENTATIONS = ("classes", "token", "context")
"""Blocks a representation is made of (joined with ``+``)."""

_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Event:
    """One activating token of one explain-split top window."""

    window: int
    """Index of the window in the record's explain-split top windows."""
    position: int
    """Token position in the window."""
    activation: float
    """The neuron's activation there."""
    peak: bool
    """Whether it is its window's largest activation."""


@dataclass(frozen=True)
class Clustering:
    """The facets found among a neuron's events."""

    labels: tuple[int, ...]
    """Facet of each event (0 … k−1)."""
    k: int
    """Number of facets chosen."""
    silhouette: float | None
    """Mean silhouette of the chosen k (``None`` for k = 1 chosen because nothing qualified)."""
    silhouettes: Mapping[int, float]
    """Mean silhouette of every k tried (k ≥ 2)."""


def top_windows(record: NeuronRecord) -> tuple[ActivationRecord, ...]:
    """The record's explain-split top windows, each window once."""
    seen: set[object] = set()
    out = []
    for w in record.windows("top", "explain"):
        key = w.window_id if w.window_id >= 0 else (w.tokens, w.activations)
        if key not in seen:
            seen.add(key)
            out.append(w)
    return tuple(out)


def find_events(windows: Sequence[ActivationRecord], fraction: float, max_events: int) -> list[Event]:
    """Each window's peak token plus every token ≥ ``fraction`` × the overall peak (strongest first,
    at most ``max_events``; every window's peak is always kept)."""
    peak = max((w.max_activation for w in windows), default=0.0)
    if peak <= 0:
        return []
    peaks, others = [], []
    for wi, w in enumerate(windows):
        if w.max_activation <= 0:
            continue
        top = int(np.argmax(w.activations))
        peaks.append(Event(wi, top, float(w.activations[top]), True))
        for i, a in enumerate(w.activations):
            if i != top and a >= fraction * peak:
                others.append(Event(wi, i, float(a), False))
    others.sort(key=lambda e: -e.activation)
    return peaks + others[: max(0, max_events - len(peaks))]


def _fold(token: str) -> str:
    from neurolabel.scoring.lexical_simulator import fold

    words = _WORD.findall(token.lower())
    return fold(words[0]) if words else token.strip() or repr(token)


def context_text(tokens: Sequence[str], position: int, before: int = 8, after: int = 2) -> str:
    """The tokens around ``position`` as text, the activating token in ⟦ ⟧."""
    lo, hi = max(0, position - before), min(len(tokens), position + after + 1)
    return ("".join(tokens[lo:position]) + " ⟦" + tokens[position].strip() + "⟧" + "".join(tokens[position + 1:hi])).strip()


def _normalise(m: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(n > 0, n, 1.0)


def kmeans_facets(x: np.ndarray, *, max_facets: int, min_silhouette: float, min_share: float,
                  seed: int = 0) -> Clustering:
    """Spherical k-means for k = 2 … ``max_facets`` on the rows of ``x`` and the criterion of the
    module docstring. Rows are L2-normalised here (all-zero rows stay zero)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = x.shape[0]
    x = _normalise(np.asarray(x, dtype=np.float64))
    sil: dict[int, float] = {}
    best: tuple[float, int, np.ndarray] | None = None
    distinct = len({tuple(np.round(r, 6)) for r in x})
    for k in range(2, min(max_facets, distinct, n - 1) + 1):
        labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)
        if len(set(labels.tolist())) < 2:
            continue
        s = float(silhouette_score(x, labels, metric="cosine"))
        sil[k] = round(s, 4)
        shares = np.bincount(labels, minlength=k) / n
        if best is None and s >= min_silhouette and shares.min() >= min_share:
            best = (s, k, labels)  # the smallest k that clears the bar: parsimony over a higher silhouette
    if best is None:
        return Clustering(labels=(0,) * n, k=1, silhouette=None, silhouettes=sil)
    s, k, labels = best
    # facets ordered by size, largest first
    order = {int(c): i for i, (c, _) in enumerate(Counter(labels.tolist()).most_common())}
    return Clustering(labels=tuple(order[int(c)] for c in labels), k=k, silhouette=round(s, 4), silhouettes=sil)


@EXPLAINERS.register("facets")
class FacetsExplainer:
    """Explains each facet of a (possibly polysemantic) neuron separately; the label is their union."""

    kind = "facets"
    version = "1"
    default_simulator = "facets"

    def __init__(
        self,
        explainers: Mapping[str, Any],
        simulators: Mapping[str, Any],
        annotator: Any = None,
        embedder: Callable[[Sequence[str]], np.ndarray] | None = None,
        *,
        representation: str = "classes+token",
        fraction: float = 0.5,
        max_events: int = 200,
        max_facets: int = 4,
        min_silhouette: float = 0.4,
        min_share: float = 0.1,
        min_events: int = 4,
        n_examples: int = 3,
    ) -> None:
        self.explainers = explainers
        """Sub-explainers by tag (each explains one facet's record)."""
        self.simulators = simulators
        """Simulators by tag: each sub-explainer's default simulator (and ``lexical``, used where that one
        does not apply), to pick a facet's label on its explain-split windows."""
        self.annotator = annotator
        """:class:`ontology.annotate.Annotator` for the ``classes`` block."""
        self.embedder = embedder
        """Texts → normalised vectors for the ``context`` block (e.g. :func:`lm.embeddings.embed`)."""
        self.representation = representation
        """``+``-joined blocks of :data:`REPRESENTATIONS`."""
        self.fraction = fraction
        """Non-peak tokens are events when ≥ fraction × the neuron's peak."""
        self.max_events = max_events
        """Most events clustered."""
        self.max_facets = max_facets
        """Largest k tried."""
        self.min_silhouette = min_silhouette
        """Smallest mean silhouette for k ≥ 2."""
        self.min_share = min_share
        """Smallest share of events in any facet for k ≥ 2."""
        self.min_events = min_events
        """Fewest events in any facet for k ≥ 2; classes and tokens shared by fewer events (or fewer
        than ``min_share``) are left out of the representation, so no single odd word can split a facet off."""
        self.n_examples = n_examples
        """Examples stored per facet."""

    @classmethod
    def from_defaults(cls, sub_explainers: Sequence[str] = ("concept_induction", "pmi"), annotator: Any = None,
                      **kwargs: Any) -> "FacetsExplainer":
        """Over ``annotator`` (the run's ontology; default: the WordNet one), MiniLM and the given
        sub-explainers (built by their factories, over the same annotator) with their default simulators."""
        import inspect

        from neurolabel.core.registry import SIMULATORS
        from neurolabel.lm.embeddings import embed
        from neurolabel.ontology.annotate import Annotator

        annotator = annotator or Annotator.from_defaults()

        def build(factory: Any) -> Any:
            make = getattr(factory, "from_defaults", None)
            if make is None:
                return factory()
            return make(annotator=annotator) if "annotator" in inspect.signature(make).parameters else make()

        explainers = {t: build(EXPLAINERS[t]) for t in sub_explainers}
        sim_tags = {getattr(e, "default_simulator", "lexical") for e in explainers.values()} | {"lexical"}
        return cls(explainers, {t: build(SIMULATORS[t]) for t in sorted(sim_tags)}, annotator, embed, **kwargs)

    @property
    def params(self) -> dict[str, Any]:
        """Parameters stored with each explanation."""
        return {"representation": self.representation, "fraction": self.fraction, "max_events": self.max_events,
                "max_facets": self.max_facets, "min_silhouette": self.min_silhouette, "min_share": self.min_share,
                "min_events": self.min_events,
                "sub_explainers": sorted(self.explainers)}

    # ---- representation and clustering -------------------------------------------------------
    def features(self, windows: Sequence[ActivationRecord], events: Sequence[Event]) -> np.ndarray:
        """One row per event: the representation's blocks, each L2-normalised, concatenated."""
        blocks = [b.strip() for b in self.representation.split("+") if b.strip()]
        bad = [b for b in blocks if b not in REPRESENTATIONS]
        if not blocks or bad:
            raise ConfigError(f"facets representation {self.representation!r}: unknown block(s) {bad}; "
                              f"use '+'-joined {', '.join(REPRESENTATIONS)}")
        out = []
        for b in blocks:
            if b == "classes":
                out.append(self._classes(windows, events))
            elif b == "token":
                keys = [_fold(windows[e.window].tokens[e.position]) for e in events]
                df = Counter(keys)
                vocab = {k: i for i, k in enumerate(sorted(k for k in df if df[k] >= self._min_df(len(events))))}
                m = np.zeros((len(events), max(1, len(vocab))))
                for r, k in enumerate(keys):
                    if k in vocab:
                        m[r, vocab[k]] = 1.0
                out.append(m)
            else:
                if self.embedder is None:
                    raise ConfigError("facets representation uses 'context' but the explainer has no embedder")
                texts = [context_text(windows[e.window].tokens, e.position) for e in events]
                out.append(np.asarray(self.embedder(texts), dtype=np.float64))
        return np.concatenate([_normalise(m) for m in out], axis=1) / math.sqrt(len(out))

    def _classes(self, windows: Sequence[ActivationRecord], events: Sequence[Event]) -> np.ndarray:
        if self.annotator is None:
            raise ConfigError("facets representation uses 'classes' but the explainer has no annotator")
        closures: dict[int, list[frozenset[int]]] = {}
        for wi in {e.window for e in events}:
            closures[wi] = self.annotator.annotate(windows[wi].tokens)
        sets = [closures[e.window][e.position] for e in events]
        n = len(events)
        df = Counter(c for s in sets for c in s)
        cols = {c: i for i, c in enumerate(sorted(c for c in df if df[c] >= self._min_df(n)))}
        m = np.zeros((n, max(1, len(cols))))
        for r, s in enumerate(sets):
            for c in s:
                if c in cols:
                    m[r, cols[c]] = math.log((1 + n) / (1 + df[c]))
        return m

    def _min_df(self, n: int) -> int:
        """A class or token shared by fewer events than a facet may hold cannot define a facet."""
        return max(2, self.min_events, math.ceil(self.min_share * n))

    def cluster(self, record: NeuronRecord) -> tuple[tuple[ActivationRecord, ...], list[Event], Clustering]:
        """The explain-split top windows, their events and the chosen clustering."""
        windows = top_windows(record)
        events = find_events(windows, self.fraction, self.max_events)
        if not events:
            raise ExplanationError(
                f"neuron {record.neuron} of {record.model!r}: no positive activation in its explain-split top windows"
            )
        if len(events) < 2 * self.min_events:
            return windows, events, Clustering((0,) * len(events), 1, None, {})
        x = self.features(windows, events)
        share = max(self.min_share, self.min_events / len(events))
        return windows, events, kmeans_facets(x, max_facets=self.max_facets, min_silhouette=self.min_silhouette,
                                              min_share=share)

    # ---- explain -----------------------------------------------------------------------------
    def facet_record(self, record: NeuronRecord, windows: Sequence[ActivationRecord], events: Sequence[Event],
                     labels: Sequence[int], facet: int) -> NeuronRecord:
        """A new record for one facet (explain split only): its top windows are the windows whose
        peak is in the facet; in them, the events of other facets are set to 0, and in the random
        and quantile windows, so are tokens that are other facets' event words and none of this
        facet's — so a facet's label is not asked to cover the other facets' tokens."""
        mine = {e.window for e, c in zip(events, labels) if e.peak and c == facet}
        masked: dict[int, set[int]] = {}
        own_keys, other_keys = set(), set()
        for e, c in zip(events, labels):
            key = _fold(windows[e.window].tokens[e.position])
            if c == facet:
                own_keys.add(key)
            else:
                other_keys.add(key)
                masked.setdefault(e.window, set()).add(e.position)
        other_keys -= own_keys

        def mask(w: ActivationRecord, positions: set[int]) -> ActivationRecord:
            if not positions:
                return w
            return replace(w, activations=tuple(0.0 if i in positions else a for i, a in enumerate(w.activations)))

        def mask_words(w: ActivationRecord) -> ActivationRecord:
            return mask(w, {i for i, t in enumerate(w.tokens) if w.activations[i] > 0 and _fold(t) in other_keys})

        top = tuple(mask(windows[i], masked.get(i, set())) for i in sorted(mine))
        return replace(record, top=top, random=tuple(mask_words(w) for w in record.windows("random", "explain")),
                       quantile=tuple(mask_words(w) for w in record.windows("quantile", "explain")), token_stats=None)

    def _simulator(self, tag: str, explanation: Explanation) -> tuple[str, Any]:
        sim = self.simulators.get(tag)
        applies = getattr(sim, "applies", None)
        if sim is not None and (applies is None or applies(explanation)):
            if getattr(sim, "expression", None) is None:
                return tag, sim
            try:
                sim.expression(explanation)
                return tag, sim
            except NeurolabelError:
                pass
        return "lexical", self.simulators["lexical"]

    def _fit(self, explanation: Explanation, sub: NeuronRecord, sim: Any) -> float:
        from neurolabel.scoring import metrics

        ws = sub.windows("top") + sub.windows("random")
        pred: list[float] = []
        true: list[float] = []
        for w in ws:
            pred.extend(sim.simulate(explanation, w.tokens).expected_activations)
            true.extend(w.activations)
        r = metrics.correlation(pred, true)
        return -1.0 if r is None else r

    def explain_facet(self, sub: NeuronRecord) -> dict[str, Any] | None:
        """The best label of one facet's record (by correlation on its explain windows), or None."""
        best: tuple[float, Explanation, str] | None = None
        for tag, explainer in self.explainers.items():
            try:
                cands = explainer.explain(sub)
            except ExplanationError as exc:
                log.debug("%s facet by %s: %s", sub.neuron, tag, exc)
                continue
            for c in cands:
                if len((c.structured or {}).get("weights") or ()) > 1:
                    continue  # a weighted disjunction of several parts is itself several meanings, not one facet
                sim_tag, sim = self._simulator(getattr(explainer, "default_simulator", "lexical"), c)
                try:
                    fit = self._fit(c, sub, sim)
                except NeurolabelError as exc:
                    log.debug("%s facet candidate %r: %s", sub.neuron, c.text, exc)
                    continue
                if best is None or fit > best[0]:
                    best = (fit, c, sim_tag)
        if best is None:
            return None
        fit, c, sim_tag = best
        return {"label": c.text, "explainer": c.explainer, "explainer_version": c.explainer_version,
                "structured": dict(c.structured), "simulator": sim_tag, "explain_score": round(fit, 6)}

    def _class_of(self, facet: Mapping[str, Any]) -> tuple[int, frozenset[int]] | None:
        """``(class, its ancestors and itself)`` of a facet labelled by one named class, else None."""
        iris = (facet.get("structured") or {}).get("iris") or ()
        onto = getattr(self.annotator, "ontology", None)
        if onto is None or len(iris) != 1:
            return None
        try:
            c = onto.find(str(iris[0]))
            return c, frozenset(onto.closure((c,)))
        except NeurolabelError:
            return None

    def _merge(self, facets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Facets with the same class expression (or label), or whose one class falls under another
        facet's one class, become one facet (the more general label kept; shares and windows added)."""
        def key(f: Mapping[str, Any]) -> str:
            return str((f.get("structured") or {}).get("manchester") or f["label"].lower())

        out: list[dict[str, Any]] = []
        for f in sorted(facets, key=lambda f: -f["share"]):
            fc = self._class_of(f)
            into, f_general = None, False
            for g in out:
                gc = self._class_of(g)
                if key(f) == key(g):
                    into = g
                elif fc is not None and gc is not None and (gc[0] in fc[1] or fc[0] in gc[1]):
                    into, f_general = g, fc[0] in gc[1]
                if into is not None:
                    break
            if into is None:
                out.append(f)
                continue
            if f_general:
                for k in ("label", "explainer", "explainer_version", "structured", "simulator", "explain_score"):
                    into[k] = f[k]
            n = into["n_windows"] + f["n_windows"]
            into["level"] = (into["level"] * into["n_windows"] + f["level"] * f["n_windows"]) / n
            into["share"] = round(into["share"] + f["share"], 6)
            into["n_windows"] = n
            into["examples"] = sorted(into["examples"] + f["examples"], key=lambda e: -e["activation"])[: self.n_examples]
        return sorted(out, key=lambda f: -f["share"])

    def explain(self, record: NeuronRecord) -> list[Explanation]:
        """One explanation whose ``structured["facets"]`` lists each facet's label (see module doc)."""
        windows, events, cl = self.cluster(record)
        facets = []
        peak_events = [(e, c) for e, c in zip(events, cl.labels) if e.peak]
        for f in range(cl.k):
            member = [e for e, c in peak_events if c == f]
            if not member:
                continue
            sub = self.facet_record(record, windows, events, cl.labels, f)
            got = self.explain_facet(sub)
            if got is None:
                continue
            ev = [e for e, c in zip(events, cl.labels) if c == f]
            member.sort(key=lambda e: -e.activation)
            got.update({
                "level": float(np.mean([e.activation for e in member])),
                "share": round(len(ev) / len(events), 6),
                "n_windows": len(member),
                "examples": [{"window_id": windows[e.window].window_id, "token": windows[e.window].tokens[e.position],
                              "activation": round(e.activation, 6),
                              "context": context_text(windows[e.window].tokens, e.position)}
                             for e in member[: self.n_examples]],
                "score": None,
            })
            facets.append(got)
        facets = self._merge(facets)
        if not facets:
            raise ExplanationError(f"neuron {record.neuron} of {record.model!r}: no sub-explainer "
                                   f"({', '.join(sorted(self.explainers))}) could explain any of its {cl.k} facet(s)")
        top = max(f["level"] for f in facets)
        for f in facets:
            f["weight"] = round(f.pop("level") / top, 6) if top > 0 else 1.0
        text = facets[0]["label"] if len(facets) == 1 else \
            f"{len(facets)} facets: " + "; ".join(f["label"] for f in facets)
        structured = {"facets": facets, "representation": self.representation,
                      "criterion": {"k": cl.k, "silhouette": cl.silhouette,
                                    "silhouettes": {str(k): v for k, v in cl.silhouettes.items()},
                                    "n_events": len(events)}}
        return [Explanation(model=record.model, neuron=record.neuron, explainer=self.kind,
                            explainer_version=self.version, text=text, structured=structured, params=self.params)]


