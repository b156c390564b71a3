"""The concept-induction explainer: a neuron explained by an OWL class expression over an
ontology (by default WordNet's four hierarchies plus the lexical layer of
:mod:`ontology.lexical`: token forms, function words, orthographic kinds, the ``follows`` role),
induced from its activating and non-activating tokens.

Examples come only from explain-split windows (top, random and quantile, each window once):

- positives: tokens whose activation exceeds ``fraction`` × the largest explain-split activation
  (default 0.3);
- negatives: tokens at or below ``negative_fraction`` × that maximum (tokens in between are left
  out of the class search as ambiguous).

Each token is an individual typed with the classes its annotation names
(:class:`ontology.annotate.Annotator`) and linked by ``follows`` to the token before it. Two
searches run (see :mod:`ontology.induction`):

1. **graded**: :func:`ontology.induction.graded_search` grows a weighted
   disjunction over *all* explain tokens — each part (a class, ``follows some C``, or ``A and
   (follows some B)``) carries the mean activation of the explain tokens it covers, and parts are
   added while they raise the correlation of that graded prediction with the activations; then
   the further graded searches of :data:`ALTERNATIVES` (no role restrictions; no
   cross-validation; larger support), each a candidate of its own;
2. **class search**: :func:`ontology.induction.induce`, the top-down beam search whose quality is
   the Matthews correlation (MCC) between "covered" and "positive" minus a length penalty
   (``InductionConfig.quality`` switches to F1 or balanced accuracy).

The candidates of both are weighted alike and returned in that order (the graded disjunctions
first, :data:`GRADED`'s the first of all: on 150 real SmolLM2 neurons it holds better on held-out windows than ordering the
candidates by their two-fold cross-validated explain-split correlation, 0.248 vs 0.222 on half
of them), each with that cross-validated correlation
(:func:`ontology.induction.cross_validated_correlation`; ``structured["cv_correlation"]``). Every returned expression
covers at least one explain-split positive (one that covers none is dropped, never returned
first). Each :class:`core.Explanation` carries ``structured =
{"manchester", "expression", "iris", "labels", "weights", "base", "precision", "recall", "f1",
"explain_correlation", …}``: ``weights[i]`` is the activation predicted for a token covered by
``expression``'s i-th top-level disjunct (fitted on the explain split only; the largest applies
when several cover a token) and ``base`` the activation predicted elsewhere — the graded
``symbolic`` simulator reads them, ``symbolic_binary`` ignores them. The English text names the
parts strongest first, e.g. ``"mentions of the token "with" (with), a preposition right after a
noun or …"``; parts that lower the neuron (weight below the base; see
``GradedConfig.lowering``) follow after ``"; lower on …"``.

**Back-off** (``backoff``, on by default): a token no part covers is predicted the base plus the
deltas of its lexical kinds (:func:`ontology.lexical.backoff_kinds`: orthographic kinds such as
``WordContinuationPiece`` or ``ClosingBracket`` and function-word classes), fitted per label by
ridge regression on the explain-split **random** windows' uncovered tokens (an unbiased sample of
the split; :func:`explainers.tokens.fit_kind_deltas`, as token labels back off), the base moved
so that those tokens' mean prediction stays the same: ``structured["kinds"]`` (``[[kind,
delta], …]``, at most 12), text ``"…; other tokens: preposition +0.3, …"``. The expression,
weights, ``explain_correlation`` and ``cv_correlation`` are those without it. Chosen on
``bench/quality.py --unit-offset 25`` (units 25-49, 100k tokens): concept_induction 0.341 ->
0.344 held-out, 0.163 -> 0.173 on Debian's licence texts; the best label across corpora 0.250 ->
0.254 (in-corpus 0.463 -> 0.464). Confirmed on the reported units 0-24: see the README. It costs
~60 ms of CPU per neuron (explaining and scoring the candidates of 15 of those neurons, loaded 2-core
machine: 76 -> 138 ms per neuron).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from neurolabel.core.errors import ExplanationError
from neurolabel.core.registry import EXPLAINERS
from neurolabel.core.types import ActivationRecord, Explanation, NeuronRecord
from neurolabel.ontology.annotate import Annotator
from neurolabel.ontology.expression import ClassExpression
from neurolabel.ontology.lexical import LEXICAL_BASE
from neurolabel.ontology.induction import (
    CANDIDATE_SETTINGS,
    GradedCandidates,
    GradedConfig,
    Hypothesis,
    InductionConfig,
    _canon,
    close_windows,
    closed_pairs,
    coverage_from_pairs,
    coverage_vectors,
    cross_validated_correlation,
    graded_candidates,
    graded_parts,
    held_fold,
    induce,
    part_weights,
    predict_graded,
)

log = logging.getLogger(__name__)

GRADED = GradedConfig(max_parts=30, cv_min_gain=0.0, every_part_positive=False)
"""The explainer's graded-search settings: as many parts as the two-fold cross-validated
correlation supports (up to 30), and only the first part need cover a positive example. On 30 of
``bench/quality.py``'s real SmolLM2 neurons (every fifth) the best candidate's held-out mean rose
from 0.288 (``GradedConfig()``'s 20 parts, ``cv_min_gain`` 0.003, every raising part covering a
positive) to 0.296, the first candidate's from 0.274 to 0.293; on all 150, 0.293 (0.287 before)."""

ALTERNATIVES = (
    replace(GRADED, roles=False),
    replace(GRADED, cross_validate=False),
    replace(GRADED, min_support=5, min_windows=4),
)
"""Further graded searches, each offered as a candidate after :data:`GRADED`'s (the best-scoring
candidate competes for the neuron's label): parts naming the token itself only (no ``follows`` restriction —
on real neurons it often holds better on held-out windows than the first), as many parts as raise
the explain-split correlation by ``min_gain`` (no cross-validation), and parts covering at least 5
tokens in 4 windows. Chosen on ``bench/quality.py --unit-offset 25`` (the same layers, units
25-49, not the reported 0-24): concept_induction's best-candidate mean 0.276 with :data:`GRADED`
alone; +roles-free 0.291, +no-CV 0.287, +support 5 0.286, +prior 4 0.282, +every part positive
0.280; roles-free and no-CV 0.295; all three 0.298 (a fourth, prior 4: +0.002). The class search's
three candidates add 0.002 beside them. With all three, session 4's threshold sweep (fraction 0.1,
negative_fraction 0.05, min_gain 0.001; selected on units 0-24) gives 0.298 on units 25-49 too: not
adopted. Confirmed on the reported units 0-24 (full ``bench/quality.py``): 0.293 -> 0.315, planted
recovery 5/10 as before."""


FAST = {"alternatives": [], "class_search": False}
"""Parameters of the first graded search alone (no :data:`ALTERNATIVES`, no class search; labels stored
under version ``6-fast``): one candidate per neuron instead of ~6.5, for whole-model runs that must be
quick (``neurolabel label --fast``). Measured (issue 15, idle 2-core machine with AMX): ``bench/pipeline.py
--no-llm`` (480 neurons of layer 10, 2 worker processes, three alternating pairs) 27.2 / 28.0 / 33.0 ->
13.9 / 14.0 / 15.7 ms/neuron on layer 10; the whole of SmolLM2 end to end (``neurolabel label --layers 0-29
--explainers concept_induction,pmi --fast``) took 15.9 and 18.7 min in two runs (31.9 before the recording and
storing changes of 2026-11-30); ``bench/quality.py --explainers concept_induction,pmi`` (150 neurons, units 0-24): concept_induction's
held-out mean 0.349 -> 0.316, the best label's 0.348 -> 0.320, across corpora 0.185 -> 0.158 (token table
0.505 / 0.298 in the same runs). The default stays the full search."""


@dataclass(frozen=True)
class ExplainTokens:
    """Every token of a neuron's explain-split windows (each window once), in window order."""

    classes: tuple[tuple[int, ...], ...]
    """Direct classes of each token."""
    previous: tuple[tuple[int, ...] | None, ...]
    """Direct classes of the token before it (``None`` for a window's first token)."""
    activations: np.ndarray
    """Activation at each token."""
    words: tuple[str, ...]
    """The word or phrase through which the token names a WordNet class, else its own text."""
    texts: tuple[str, ...]
    """Each token's own text (stripped)."""
    groups: np.ndarray
    """The window (0, 1, …) each token comes from."""
    peak: float
    """Largest activation of the explain-split top windows."""
    windows: tuple[tuple[tuple[int, ...], ...], ...] = ()
    """Direct classes of each window's tokens, window by window (what :attr:`classes` holds,
    grouped; :func:`ontology.induction.close_windows` closes them window by window)."""


@EXPLAINERS.register("concept_induction")
class ConceptInductionExplainer:
    """Explains a neuron by concept induction over an ontology."""

    kind = "concept_induction"
    version = "6"
    default_simulator = "symbolic"
    extra_simulators = ("symbolic_binary",)
    """Simulators the pipeline also scores these explanations with (and stores)."""

    def __init__(
        self,
        annotator: Annotator | None = None,
        *,
        fraction: float = 0.3,
        negative_fraction: float = 0.2,
        config: InductionConfig = InductionConfig(),
        graded: GradedConfig | None = GRADED,
        alternatives: tuple[GradedConfig, ...] = ALTERNATIVES,
        backoff: bool = True,
        class_search: bool = True,
    ) -> None:
        self.annotator = annotator
        """Token → class annotator (its ontology is searched); ``None`` = the default WordNet one,
        loaded on first use."""
        self.fraction = fraction
        """Positive examples: activation > fraction × max."""
        self.negative_fraction = negative_fraction
        """Negative examples: activation <= negative_fraction × max."""
        self.config = config
        """Class-search settings."""
        self.graded = graded
        """Graded-search settings (``None``: class search only)."""
        self.alternatives = tuple(a if isinstance(a, GradedConfig) else GradedConfig(**a) for a in alternatives)
        """Settings of further graded searches, each offered as a candidate after the first
        (when it differs from the candidates before it)."""
        self.backoff = backoff
        """Whether each label carries a back-off for the tokens none of its parts covers
        (``structured["kinds"]``: lexical kinds' deltas fitted on the explain-split random windows;
        see :data:`BACKOFF`)."""
        self.class_search = class_search
        """Whether the class search (:func:`ontology.induction.induce`) adds its expressions to the graded
        searches' (it runs anyway when none of them found one). Off, with ``alternatives=[]``: the
        graded search alone, a whole-model run's fast setting (see :data:`FAST`)."""
        if (self.graded, self.alternatives, self.class_search) != (GRADED, ALTERNATIVES, True):
            # labels of other searches are stored under their own version: a later run with the default
            # searches labels the neurons again instead of counting them done
            if (self.graded, self.alternatives, self.class_search) == (GRADED, (), False):
                self.version = f"{type(self).version}-fast"
            else:
                import hashlib
                import json

                searches = json.dumps([asdict(g) for g in (*([graded] if graded else []), *self.alternatives)]
                                      + [class_search], sort_keys=True)
                self.version = f"{type(self).version}-{hashlib.sha256(searches.encode()).hexdigest()[:8]}"

    @classmethod
    def from_defaults(cls, annotator: Annotator | None = None, **kwargs: Any) -> "ConceptInductionExplainer":
        """The explainer over ``annotator``'s ontology (the run's), else the default WordNet one (loaded now, ~1 s),
        with the graded search's compiled loops loaded (compiled the first time on a machine, ~5 s)."""
        from neurolabel.ontology.graded_kernels import warm_up

        warm_up()
        return cls(annotator or Annotator.from_defaults(), **kwargs)

    def _annotator(self) -> Annotator:
        if self.annotator is None:
            self.annotator = Annotator.from_defaults()
        return self.annotator

    @property
    def params(self) -> dict[str, Any]:
        """Parameters stored with each explanation (made once per setting: every explanation of
        the explainer shares one mapping, which nothing mutates)."""
        key = (self.fraction, self.negative_fraction, self.config, self.graded, self.alternatives, self.backoff,
               self.class_search)
        got = self.__dict__.get("_params")
        if got is None or got[0] != key:
            got = self.__dict__["_params"] = (key, {
                "fraction": self.fraction, "negative_fraction": self.negative_fraction, **asdict(self.config),
                "graded": asdict(self.graded) if self.graded is not None else None,
                "alternatives": [asdict(g) for g in self.alternatives], "backoff": self.backoff,
                **({} if self.class_search else {"class_search": False})})
        return got[1]

    # ---- examples ----------------------------------------------------------------------------
    def tokens(self, record: NeuronRecord) -> ExplainTokens:
        """All explain-split tokens with their classes, previous token's classes and activations.
        Raises :class:`ExplanationError` when the neuron never activates on its explain-split
        windows."""
        ann = self._annotator()
        windows = _explain_windows(record)
        top = record.windows("top", "explain") or tuple(windows)
        peak = max((w.max_activation for w in top), default=0.0)
        if not windows or peak <= 0:
            raise ExplanationError(
                f"neuron {record.neuron} of {record.model!r}: no positive activation in its explain-split windows"
            )
        classes: list[tuple[int, ...]] = []
        previous: list[tuple[int, ...] | None] = []
        acts: list[float] = []
        words: list[str] = []
        texts: list[str] = []
        direct_of: list[tuple[tuple[int, ...], ...]] = []
        for w in windows:
            direct = ann.direct_classes(w.tokens)
            n = len(w.activations)
            direct_of.append(direct[:n])
            classes.extend(direct[:n])
            previous.extend([None, *direct[: n - 1]] if n else [])
            acts.extend(w.activations)
            stripped = [t.strip() for t in w.tokens[:n]]
            texts.extend(stripped)
            if w.max_activation > self.fraction * peak:
                words.extend([m or t for m, t in zip(ann.mentions(w.tokens), stripped)])
            else:
                words.extend(stripped)
        groups = np.repeat(np.arange(len(windows)), [len(w.activations) for w in windows])
        return ExplainTokens(tuple(classes), tuple(previous), np.asarray(acts, dtype=np.float64), tuple(words),
                             tuple(texts), groups, peak, tuple(direct_of))

    def examples(self, record: NeuronRecord) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]], list[str]]:
        """``(positives, negatives, positive_words)``: each example token's direct classes, and
        the word or phrase through which each positive token names a class (its own text if
        none). Raises :class:`ExplanationError` when the neuron never activates on its
        explain-split windows."""
        t = self.tokens(record)
        pos_m, neg_m = self._masks(t)
        return ([t.classes[i] for i in np.flatnonzero(pos_m)], [t.classes[i] for i in np.flatnonzero(neg_m)],
                [t.words[i] for i in np.flatnonzero(pos_m)])

    def _masks(self, t: ExplainTokens) -> tuple[np.ndarray, np.ndarray]:
        return t.activations > self.fraction * t.peak, t.activations <= self.negative_fraction * t.peak

    # ---- explain ---------------------------------------------------------------------------
    def hypotheses(self, record: NeuronRecord) -> tuple[list[Hypothesis], list[tuple[int, ...]], list[str]]:
        """The class-search hypotheses with the positive examples and words they were induced from."""
        t = self.tokens(record)
        pos_m, neg_m = self._masks(t)
        pi, ni = np.flatnonzero(pos_m), np.flatnonzero(neg_m)
        hyps = induce(self._annotator().ontology, [t.classes[i] for i in pi], [t.classes[i] for i in ni],
                      self.config, positives_prev=[t.previous[i] for i in pi],
                      negatives_prev=[t.previous[i] for i in ni])
        return hyps, [t.classes[i] for i in pi], [t.words[i] for i in pi]

    def explain(self, record: NeuronRecord) -> list[Explanation]:
        """The graded disjunction first, then the class search's best expressions; each covers
        at least one explain-split positive."""
        ann = self._annotator()
        onto = ann.ontology
        t = self.tokens(record)
        pos_m, neg_m = self._masks(t)
        pi, ni = np.flatnonzero(pos_m), np.flatnonzero(neg_m)
        cands: list[ClassExpression] = []
        graded = ([self.graded] if self.graded is not None else []) + list(self.alternatives)
        closed = close_windows(onto, t.windows)
        pairs = closed_pairs(onto, closed) if graded else None
        # searches that differ only in how parts are chosen share candidates; a roles-free search takes
        # the token's own classes out of the candidates with roles
        shared: dict[tuple, GradedCandidates] = {}
        # searches over the same candidates that differ only in how many parts they keep run their
        # final greedy once (graded_search's greedy_memo)
        same_greedy = Counter(self._greedy_key(cfg) for cfg in graded)
        memo: dict = {}
        fold = held_fold(t.groups)  # the windows' two folds, for every search's cross-validation and each candidate's
        for cfg in graded:
            key = tuple(getattr(cfg, f) for f in CANDIDATE_SETTINGS)
            if key not in shared:
                with_roles = tuple(getattr(replace(cfg, roles=True), f) for f in CANDIDATE_SETTINGS)
                if not cfg.roles and with_roles in shared:
                    shared[key] = shared[with_roles].without_roles()
                else:
                    shared[key] = graded_candidates(onto, t.classes, t.previous, t.activations, pos_m, cfg,
                                                    groups=t.groups, pairs=pairs)
            # the search's parts (its weights are fitted below, with every other candidate's)
            g = graded_parts(onto, t.classes, t.previous, t.activations, pos_m, cfg, groups=t.groups,
                             candidates=shared[key], fold=fold,
                             greedy_memo=memo if same_greedy[self._greedy_key(cfg)] > 1 else None)
            if g is not None:
                cands.append(ClassExpression.join("or", g))
        pil, nil = pi.tolist(), ni.tolist()  # Python ints: a tuple indexed by NumPy integers is slower
        if self.class_search or not cands:
            hyps = induce(onto, [t.classes[i] for i in pil], [t.classes[i] for i in nil], self.config,
                          positives_prev=[t.previous[i] for i in pil], negatives_prev=[t.previous[i] for i in nil],
                          coverage=coverage_from_pairs(onto, pairs, len(t.activations), pi, ni) if pairs else None)
            cands += [h.expression for h in hyps]
        prior = self.graded.prior_count if self.graded is not None else 2.0
        found: list[tuple[float, int, dict]] = []
        seen: set[object] = set()
        all_parts = [p for expr in cands for p in expr.parts()]
        covers = coverage_vectors(onto, all_parts, None, closed=closed) if all_parts else None
        start = 0
        acts_vary = t.activations.std() > 0
        for expr in cands:
            parts = expr.parts()
            cover = covers[:, start : start + len(parts)]
            start += len(parts)
            hit = cover.any(1)
            tp, fp = int(hit[pos_m].sum()), int(hit[neg_m].sum())
            if tp == 0:  # never offered: it covers none of the positives
                continue
            weights, base = part_weights(cover, t.activations, prior)
            order = np.argsort(-weights, kind="stable")
            parts = tuple(parts[i] for i in order)
            weights = weights[order]
            expr = ClassExpression.join("or", parts) if len(parts) > 1 else parts[0]
            key = _canon(expr)
            if key in seen:
                continue
            seen.add(key)
            pred = predict_graded(cover[:, order], weights, base)
            corr = float(np.corrcoef(pred, t.activations)[0, 1]) if pred.std() > 0 and acts_vary else 0.0
            cv = cross_validated_correlation(cover, t.activations, t.groups, prior, fold=fold)
            found.append((cv, len(found), dict(expr=expr, cover=cover[:, order], tp=tp, fp=fp, weights=weights,
                                               base=base, corr=corr, cv=cv)))
        backoff = self._backoff_tokens(record, t) if self.backoff else None
        out = [self._explanation(record, f["expr"], t, f["cover"], pos_m, f["tp"], f["fp"], len(pi), len(ni),
                                 f["weights"], f["base"], f["corr"], f["cv"], rank, backoff)
               for rank, (_, _, f) in enumerate(found[: self.config.n_best + len(graded)])]
        if not out:
            raise ExplanationError(
                f"neuron {record.neuron} of {record.model!r}: none of its {len(pi)} activating tokens "
                f"mentions a class of ontology {onto.name!r}"
            )
        return out

    def _backoff_tokens(self, record: NeuronRecord, t: ExplainTokens
                        ) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
        """``(positions, names, U, ids)``: the positions in ``t`` of the tokens of the record's
        explain-split random windows (an unbiased sample of the split's tokens), which the back-off
        is fitted on, and their lexical kinds (:func:`ontology.lexical.backoff_kinds`) as the 0/1
        matrix ``U[ids]`` (:func:`explainers.tokens.kind_rows`)."""
        from neurolabel.explainers.tokens import kind_rows
        from neurolabel.ontology.lexical import backoff_kinds

        key = lambda w: w.window_id if w.window_id >= 0 else (w.tokens, w.activations)  # noqa: E731
        random_keys = {key(w) for w in record.windows("random", "explain")}
        positions: list[np.ndarray] = []
        kinds: list[tuple[str, ...]] = []
        start = 0
        for w in _explain_windows(record):  # the windows of ``t``, in its order
            if key(w) in random_keys:
                positions.append(np.arange(start, start + len(w.tokens)))
                kinds.extend(backoff_kinds(w.tokens))
            start += len(w.tokens)
        return (np.concatenate(positions) if positions else np.zeros(0, dtype=int)), *kind_rows(kinds)

    @staticmethod
    def _greedy_key(cfg: GradedConfig) -> tuple:
        return (*(getattr(cfg, f) for f in CANDIDATE_SETTINGS), cfg.prior_count, cfg.min_gain, cfg.lowering)

    def _explanation(self, record, expr, t, cover, pos_m, tp, fp, n_pos, n_neg, weights, base, corr, cv,
                     rank, backoff=None) -> Explanation:
        onto = self._annotator().ontology
        ex: dict[int, list[str]] = {}
        for j, part in enumerate(expr.parts()):
            cov = cover[:, j] & pos_m
            for c in set(part.classes()):
                if c in ex:
                    continue
                # a lexical class is shown by token texts, a WordNet class by the words that name it
                said = t.texts if onto.iri(c).startswith(LEXICAL_BASE) else t.words
                cnt = Counter(said[i].lower() for i in np.flatnonzero(cov) if said[i])
                ex[c] = [w for w, _ in cnt.most_common(4)]
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / n_pos if n_pos else 0.0
        structured = {
            "manchester": expr.manchester(onto),
            "manchester_labels": expr.manchester_labels(onto),
            "expression": expr.to_json(onto),
            "iris": [onto.iri(c) for c in expr.classes()],
            "labels": [onto.label(c) for c in expr.classes()],
            "ontology": onto.name,
            "weights": [round(float(w), 6) for w in weights],
            "base": round(float(base), 6),
            "explain_correlation": round(corr, 6),
            "cv_correlation": round(cv, 6),
            "precision": round(precision, 6),
            "recall": round(recall, 6),
            "f1": round(2 * precision * recall / (precision + recall), 6) if precision + recall else 0.0,
            "length": expr.length,
            "n_positive": n_pos,
            "n_negative": n_neg,
            "fit_tokens": int(len(t.activations)),
        }
        text = _english(expr, weights, base, onto, ex)
        if backoff is not None:  # tokens no part covers: the base plus their lexical kinds' deltas
            from neurolabel.explainers.tokens import fit_kind_rows
            from neurolabel.ontology.lexical import kind_label

            positions, names, U, ids = backoff
            free = ~cover[positions].any(1) if len(positions) else np.zeros(0, dtype=bool)
            kinds, offset = fit_kind_rows(U, ids[free], names, t.activations[positions[free]], max_kinds=12,
                                          ridge=0.01)
            structured["kinds"] = kinds
            structured["base"] = round(float(base - offset), 6)
            if kinds:
                text += "; other tokens: " + ", ".join(f"{kind_label(k)} {d:+.2g}" for k, d in kinds[:4])
        return Explanation(
            model=record.model,
            neuron=record.neuron,
            explainer=self.kind,
            explainer_version=self.version,
            text=text,
            structured=structured,
            params=self.params,
            rank=rank,
        )


def _english(expr: ClassExpression, weights, base: float, onto, examples: dict[int, list[str]]) -> str:
    """The expression in English; parts weighted below the base (tokens that lower the neuron)
    are said apart: ``"mentions of X or Y; lower on Z"``."""
    parts = expr.parts()
    if len(parts) != len(weights):
        return expr.english(onto, examples)
    up = [p for p, w in zip(parts, weights) if w >= base]
    down = [p for p, w in zip(parts, weights) if w < base]
    if not down:
        return expr.english(onto, examples)
    said = [ClassExpression.join("or", tuple(ps)) if len(ps) > 1 else ps[0] for ps in (up, down) if ps]
    if not up:
        return "lower on " + said[0].english(onto, examples)
    return f"{said[0].english(onto, examples)}; lower on {said[1].english(onto, examples)}"


def _explain_windows(record: NeuronRecord) -> list[ActivationRecord]:
    seen: set[object] = set()
    out = []
    for kind in ("top", "random", "quantile"):
        for w in record.windows(kind, "explain"):  # type: ignore[arg-type]
            key = w.window_id if w.window_id >= 0 else (w.tokens, w.activations)
            if key in seen:
                continue
            seen.add(key)
            out.append(w)
    return out
