"""Concept induction: the class expressions that best separate positive from negative
individuals (here: tokens), searched top-down through an ontology's hierarchy.

**Individuals and coverage.** Every example token is an individual typed with the classes its
annotation names; it is an instance of a class when one of those classes is the class or a
subclass of it. Coverage lives in boolean matrices: ``P[i, k]`` says positive *i* is an instance
of candidate class *k* (``N`` likewise for negatives), built in one scatter from the tokens'
ancestor sets. Counting true/false positives of every candidate is a column sum; the coverage
of ``E or C`` / ``E and C`` for all candidates *C* at once is ``cov_E[:, None] | P`` (``&``) and a
column sum. No per-individual Python loop runs during the search.

**Refinement (top-down).** The search starts from ``owl:Thing`` and refines with the downward
operator of CELOE/ECII restricted to what can matter: an atomic class is refined to its
subclasses, but only classes that cover at least one positive example are ever generated (all
others have zero recall). That relevant sub-hierarchy is small (hundreds of classes), so the
atomic level is refined exhaustively in one vectorised step. Compound expressions are then grown
by beam search: each expression in the beam is refined to ``E or C`` and ``E and C`` for the
``n_candidates`` best atomic classes *C*, while the length stays within ``max_length``.

**Quality** (documented; a base measure minus a length penalty, as CELOE and ECII do):
``base − length_penalty · (length − 1)`` where ``length`` counts classes and binary operators
(``A or B`` has length 3). ``base`` is, by ``InductionConfig.quality``:

- ``"mcc"`` (default): the Matthews (phi) correlation between "covered by the expression" and
  "positive" over all examples. It is the Pearson correlation of a 0/1 prediction with a 0/1
  label — the same metric the validator scores explanations with — and, unlike F1, it is not
  swamped when a neuron also fires at random: at 10% random firing F1 prefers ``entity`` (it
  covers every noun among the random positives) while MCC keeps the planted class;
- ``"f1"``: F1 on the positives (ECII);
- ``"accuracy"``: balanced accuracy (CELOE's accuracy, made insensitive to class imbalance). Among equal qualities the
higher precision wins, then the shorter expression, then the more specific classes (deeper in the
hierarchy): of classes covering exactly the same examples, the least general one is chosen, as in
ILP's least general generalisation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from neurolabel.ontology.expression import ClassExpression
from neurolabel.ontology.model import Ontology

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InductionConfig:
    """Search settings."""

    max_length: int = 5
    """Longest expression (classes + operators); 1 = atomic classes only, 5 = up to 3 classes."""
    beam_width: int = 8
    """Expressions kept per refinement level."""
    n_candidates: int = 150
    """Atomic classes tried as the new operand when refining a compound expression."""
    length_penalty: float = 0.02
    """Quality lost per unit of length beyond 1."""
    quality: Literal["mcc", "f1", "accuracy"] = "mcc"
    """Base measure: Matthews correlation (default), F1 on the positives, or balanced accuracy."""
    n_best: int = 3
    """How many distinct expressions to return."""
    min_precision: float = 0.0
    """Expressions below this precision are never returned."""


@dataclass(frozen=True)
class Hypothesis:
    """A class expression with its quality on the examples."""

    expression: ClassExpression
    """The expression."""
    tp: int
    """Positives covered."""
    fp: int
    """Negatives covered."""
    n_pos: int
    """Number of positive examples."""
    n_neg: int
    """Number of negative examples."""
    quality: float
    """Search quality (see the module docstring)."""

    @property
    def precision(self) -> float:
        """tp / (tp + fp)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """tp / positives."""
        return self.tp / self.n_pos if self.n_pos else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        return f1_score(self.tp, self.fp, self.n_pos)

    @property
    def accuracy(self) -> float:
        """Balanced accuracy: mean of the true-positive and true-negative rates."""
        tnr = 1.0 - self.fp / self.n_neg if self.n_neg else 1.0
        return 0.5 * (self.recall + tnr)


def f1_score(tp, fp, n_pos):
    """F1 from true positives, false positives and the number of positives (works on arrays)."""
    tp = np.asarray(tp, dtype=np.float64)
    denom = np.asarray(n_pos, dtype=np.float64) + tp + np.asarray(fp, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(denom > 0, 2.0 * tp / np.where(denom > 0, denom, 1.0), 0.0)
    return out if out.ndim else float(out)


def mcc_score(tp, fp, n_pos, n_neg):
    """Matthews correlation (phi) of coverage with the positive label (works on arrays)."""
    tp = np.asarray(tp, dtype=np.float64)
    fp = np.asarray(fp, dtype=np.float64)
    fn = n_pos - tp
    tn = n_neg - fp
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(denom > 0, (tp * tn - fp * fn) / np.where(denom > 0, denom, 1.0), 0.0)
    return out if out.ndim else float(out)


def _quality(tp, fp, n_pos, n_neg, length, cfg: InductionConfig):
    if cfg.quality == "mcc":
        base = mcc_score(tp, fp, n_pos, n_neg)
    elif cfg.quality == "accuracy":
        tpr = np.asarray(tp, float) / max(n_pos, 1)
        tnr = 1.0 - np.asarray(fp, float) / max(n_neg, 1)
        base = 0.5 * (tpr + tnr)
    else:
        base = f1_score(tp, fp, n_pos)
    return base - cfg.length_penalty * (np.asarray(length, float) - 1.0)


@dataclass
class _Coverage:
    classes: np.ndarray  # (K,) ontology ids of the candidate columns
    P: np.ndarray  # (n_pos, K) bool
    N: np.ndarray  # (n_neg_annotated, K) bool
    n_pos: int
    n_neg: int


def coverage_matrices(
    onto: Ontology, positives: Sequence[Sequence[int]], negatives: Sequence[Sequence[int]]
) -> _Coverage:
    """Boolean instance matrices over the classes that cover at least one positive.

    ``positives``/``negatives`` hold each example token's direct classes."""
    memo: dict[tuple[int, ...], np.ndarray] = {}

    def closure(d: Sequence[int]) -> np.ndarray:
        key = tuple(d)
        got = memo.get(key)
        if got is None:
            if not key:
                got = np.zeros(0, dtype=np.int32)
            elif len(key) == 1:
                got = onto.ancestors(key[0], include_self=True)
            else:
                got = np.unique(np.concatenate([onto.ancestors(c, include_self=True) for c in key]))
            memo[key] = got
        return got

    pos_cl = [closure(d) for d in positives]
    relevant = np.unique(np.concatenate(pos_cl)) if pos_cl else np.zeros(0, dtype=np.int32)
    col_of = np.full(onto.n_classes, -1, dtype=np.int64)
    col_of[relevant] = np.arange(len(relevant))
    K = len(relevant)

    P = np.zeros((len(positives), K), dtype=bool)
    if K:
        rows = np.repeat(np.arange(len(pos_cl)), [len(c) for c in pos_cl])
        P[rows, col_of[np.concatenate(pos_cl)]] = True

    neg_cols = []
    for d in negatives:
        if d:
            cols = col_of[closure(d)]
            cols = cols[cols >= 0]
            if len(cols):
                neg_cols.append(cols)
    N = np.zeros((len(neg_cols), K), dtype=bool)
    if neg_cols:
        rows = np.repeat(np.arange(len(neg_cols)), [len(c) for c in neg_cols])
        N[rows, np.concatenate(neg_cols)] = True
    return _Coverage(relevant, P, N, len(positives), len(negatives))


def induce(
    onto: Ontology,
    positives: Sequence[Sequence[int]],
    negatives: Sequence[Sequence[int]],
    config: InductionConfig = InductionConfig(),
) -> list[Hypothesis]:
    """The ``config.n_best`` best distinct expressions for the examples, best first (empty when
    no positive example mentions any class)."""
    cov = coverage_matrices(onto, positives, negatives)
    K = len(cov.classes)
    if K == 0 or cov.n_pos == 0:
        return []
    cfg = config
    tp = cov.P.sum(0)
    fp = cov.N.sum(0)
    q = _quality(tp, fp, cov.n_pos, cov.n_neg, 1, cfg)
    prec = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    depth_k = onto.depth[cov.classes].astype(np.float64)
    # rank: quality, then precision, then specificity (all descending)
    order = np.lexsort((depth_k, prec, q))[::-1]

    found: dict[object, Hypothesis] = {}

    def add(expr: ClassExpression, t: int, f: int, qual: float) -> None:
        key = _canon(expr)
        if key not in found:
            found[key] = Hypothesis(expr, int(t), int(f), cov.n_pos, cov.n_neg, float(qual))

    for k in order[: max(cfg.n_best * 4, cfg.beam_width)]:
        add(ClassExpression.atom(cov.classes[k]), tp[k], fp[k], q[k])

    # compound refinement by beam search
    cand = order[: cfg.n_candidates]
    Pc = cov.P[:, cand]
    Nc = cov.N[:, cand]
    beam = [
        (ClassExpression.atom(cov.classes[k]), cov.P[:, k].copy(), cov.N[:, k].copy(), {int(k)})
        for k in order[: cfg.beam_width]
    ]
    length = 1
    while length + 2 <= cfg.max_length and beam:
        length += 2
        level: list[tuple[float, float, ClassExpression, np.ndarray, np.ndarray, set[int], int, int]] = []
        for expr, cp, cn, used in beam:
            for op in ("or", "and"):
                if op == "or":
                    np_ = cp[:, None] | Pc
                    nn_ = cn[:, None] | Nc
                else:
                    np_ = cp[:, None] & Pc
                    nn_ = cn[:, None] & Nc
                t = np_.sum(0)
                f = nn_.sum(0)
                qq = _quality(t, f, cov.n_pos, cov.n_neg, length, cfg)
                base_t, base_f = int(cp.sum()), int(cn.sum())
                # a refinement must cover differently from both of its operands
                changed = ((t != base_t) | (f != base_f)) & ((t != tp[cand]) | (f != fp[cand]))
                for j in np.argsort(-qq)[: cfg.beam_width * 2]:
                    k = int(cand[j])
                    if k in used or not changed[j]:
                        continue
                    new = ClassExpression.join(op, (expr, ClassExpression.atom(cov.classes[k])))
                    pr = t[j] / max(t[j] + f[j], 1)
                    level.append((float(qq[j]), pr, new, np_[:, j], nn_[:, j], used | {k}, int(t[j]), int(f[j])))
        level.sort(key=lambda x: (x[0], x[1]), reverse=True)
        beam = []
        seen = set()
        for qq, pr, new, cp, cn, used, t, f in level:
            key = _canon(new)
            if key in seen:
                continue
            seen.add(key)
            add(new, t, f, qq)
            if len(beam) < cfg.beam_width:
                beam.append((new, cp, cn, used))

    depth = onto.depth
    ranked = sorted(
        (h for h in found.values() if h.precision >= cfg.min_precision and h.tp > 0),
        key=lambda h: (
            -round(h.quality, 12),
            -h.precision,
            h.expression.length,
            -sum(int(depth[c]) for c in h.expression.classes()),
        ),
    )
    out: list[Hypothesis] = []
    seen_cov: set[tuple[int, int, frozenset[int]]] = set()
    for h in ranked:
        sig = (h.tp, h.fp, frozenset(h.expression.classes()))
        if sig in seen_cov:
            continue
        seen_cov.add(sig)
        out.append(h)
        if len(out) >= cfg.n_best:
            break
    return out


def _canon(expr: ClassExpression) -> object:
    if expr.op == "class":
        return expr.cls
    return (expr.op, frozenset(_canon(a) for a in expr.args))


def coverage_vector(
    onto: Ontology, expr: ClassExpression, examples: Sequence[Sequence[int]]
) -> np.ndarray:
    """Boolean coverage of ``expr`` over examples (direct classes per example), through the same
    matrices the search uses — what the reasoner test compares HermiT against."""
    cov = coverage_matrices(onto, examples, [])
    col = {int(c): i for i, c in enumerate(cov.classes)}

    def ev(e: ClassExpression) -> np.ndarray:
        if e.op == "class":
            j = col.get(e.cls)
            return cov.P[:, j] if j is not None else np.zeros(len(examples), dtype=bool)
        parts = [ev(a) for a in e.args]
        return np.logical_and.reduce(parts) if e.op == "and" else np.logical_or.reduce(parts)

    return ev(expr)
