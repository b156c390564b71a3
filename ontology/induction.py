"""Concept induction: the class expressions that best separate positive from negative
individuals (here: tokens), searched top-down through an ontology's hierarchy.

**Individuals and coverage.** Every example token is an individual typed with the classes its
annotation names; it is an instance of a class when one of those classes is the class or a
subclass of it. Coverage lives in boolean matrices: ``P[i, k]`` says positive *i* is an instance
of candidate class *k* (``N`` likewise for negatives), built in one scatter from the tokens'
ancestor sets. Counting true/false positives of every candidate is a column sum; the coverage
of ``E or C`` / ``E and C`` for all candidates *C* at once is ``cov_E[:, None] | P`` (``&``) and a
column sum. No per-individual Python loop runs during the search.

**Roles.** With the previous token of every example given, the candidates also include
``follows some C`` (CELOE's and ECII's existential restrictions over a role): its column is C's
coverage of each example's previous token, one more scatter — the search stays vectorised.

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
ILP's least general generalisation. Every returned expression covers at least one positive.

**Graded search** (:func:`graded_search`, the concept-induction explainer's first choice): a
weighted disjunction grown greedily over *all* explain tokens, each part weighted by the
(shrunk) mean activation of the tokens it covers, the number of parts chosen by two-fold
cross-validation over windows (see its docstring).
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Sequence

import numpy as np

from neurolabel.ontology import graded_kernels as _kernels
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
    exprs: list[ClassExpression]  # (K,) the candidate of each column: an atom or follows-some-atom
    classes: np.ndarray  # (K,) ontology id of each column's class (the filler, for restrictions)
    P: np.ndarray  # (n_pos, K) bool
    N: np.ndarray  # (n_neg_annotated, K) bool
    n_pos: int
    n_neg: int


class _Closures:
    """Each example's direct classes → the sorted ids of them and all their superclasses, memoised
    per ontology for the life of the process (a run's neurons share most of their tokens; at most
    ``MAX_ITEMS`` sets are kept, then the memo starts afresh)."""

    MAX_ITEMS = 200_000
    _memos: "weakref.WeakKeyDictionary[Ontology, dict]" = weakref.WeakKeyDictionary()
    _lock = threading.Lock()

    def __init__(self, onto: Ontology) -> None:
        self.onto = onto
        with self._lock:
            memo = self._memos.get(onto)
            if memo is None:
                memo = self._memos[onto] = {}
        self.memo: dict[tuple[int, ...], np.ndarray] = memo

    def many(self, ds: Sequence[Sequence[int] | None]) -> list[np.ndarray]:
        """:meth:`__call__` of each of ``ds`` (``None``: no classes, an empty array)."""
        get = self.memo.get
        out = [get(d) if d.__class__ is tuple else None for d in ds]
        for i, got in enumerate(out):
            if got is None:
                out[i] = self(ds[i]) if ds[i] is not None else self._EMPTY
        return out

    _EMPTY = np.zeros(0, dtype=np.int32)

    MAX_WINDOWS = 8192
    """Windows whose closed classes :meth:`window` keeps (~4 kB each; a 100,000-token corpus has
    ~3,200 windows per split), then the memo starts afresh."""
    _window_memos: "weakref.WeakKeyDictionary[Ontology, dict]" = weakref.WeakKeyDictionary()

    _window_ids: "weakref.WeakKeyDictionary[Ontology, dict]" = weakref.WeakKeyDictionary()

    def window(self, direct: tuple[tuple[int, ...], ...]) -> tuple[np.ndarray, np.ndarray]:
        """``(lens, flat)`` of one window's tokens (``direct``: each token's direct classes, a
        tuple of tuples as :meth:`ontology.annotate.Annotator.direct_classes` gives it): the
        number of classes of each token closed under superclasses and their concatenation, in
        token order (each token's sorted) — memoised per window for the life of the process."""
        return self.windows((direct,))[0]

    def windows(self, directs: Sequence[tuple[tuple[int, ...], ...]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`window` of each of ``directs``, the memo looked up once; a window's tuple seen
        before (the annotator hands out its cached tuple for a window's tokens) is found by
        identity, without hashing its ~64 tuples again."""
        with self._lock:
            memo = self._window_memos.get(self.onto)
            by_id = self._window_ids.get(self.onto)
            if memo is None or len(memo) >= self.MAX_WINDOWS or by_id is None or len(by_id) >= self.MAX_WINDOWS:
                memo = self._window_memos[self.onto] = {}
                by_id = self._window_ids[self.onto] = {}
        out = []
        for direct in directs:
            hit = by_id.get(id(direct))
            if hit is not None and hit[0] is direct:
                out.append(hit[1])
                continue
            got = memo.get(direct)
            if got is None:
                closed = self.many(direct)
                lens = np.fromiter((len(c) for c in closed), dtype=np.int64, count=len(closed))
                flat = np.concatenate(closed) if closed else np.zeros(0, dtype=np.int32)
                got = memo[direct] = (lens, flat)
            by_id[id(direct)] = (direct, got)  # held: the tuple, so that its id stays its own while kept
            out.append(got)
        return out

    def __call__(self, d: Sequence[int]) -> np.ndarray:
        key = tuple(d)
        got = self.memo.get(key)
        if got is None:
            if not key:
                got = np.zeros(0, dtype=np.int32)
            elif len(key) == 1:
                got = self.onto.ancestors(key[0], include_self=True)
            else:
                got = np.unique(np.concatenate([self.onto.ancestors(c, include_self=True) for c in key]))
            if len(self.memo) >= self.MAX_ITEMS:
                self.memo.clear()
            self.memo[key] = got
        return got


def _scatter(closed: list[np.ndarray], col_of: np.ndarray, K: int) -> np.ndarray:
    M = np.zeros((len(closed), K), dtype=bool)
    lens = [len(c) for c in closed]
    if K and sum(lens):
        rows = np.repeat(np.arange(len(closed)), lens)
        cols = col_of[np.concatenate(closed)]
        keep = cols >= 0
        M[rows[keep], cols[keep]] = True
    return M


def coverage_matrices(
    onto: Ontology,
    positives: Sequence[Sequence[int]],
    negatives: Sequence[Sequence[int]],
    positives_prev: Sequence[Sequence[int] | None] | None = None,
    negatives_prev: Sequence[Sequence[int] | None] | None = None,
) -> _Coverage:
    """Boolean instance matrices over the candidates that cover at least one positive: each class
    of a positive (with superclasses) and, when the previous tokens are given, ``follows some
    C`` for each class C of a positive's previous token (``None`` = no previous token).

    ``positives``/``negatives`` hold each example token's direct classes. The column of
    ``follows some C`` for a token is C's column for the token before it — one more scatter."""
    closure = _Closures(onto)
    pos_cl = closure.many(positives)
    relevant = np.unique(np.concatenate(pos_cl)) if pos_cl else np.zeros(0, dtype=np.int32)
    col_of = np.full(onto.n_classes, -1, dtype=np.int64)
    col_of[relevant] = np.arange(len(relevant))
    K1 = len(relevant)
    neg_cl = closure.many(negatives)
    P = _scatter(pos_cl, col_of, K1)
    N = _scatter(neg_cl, col_of, K1)
    exprs = [ClassExpression.atom(int(c)) for c in relevant]
    classes = relevant
    if positives_prev is not None:
        ppos = closure.many(positives_prev)
        rel2 = np.unique(np.concatenate(ppos)) if ppos else np.zeros(0, dtype=np.int32)
        col2 = np.full(onto.n_classes, -1, dtype=np.int64)
        col2[rel2] = np.arange(len(rel2))
        pneg = closure.many(negatives_prev if negatives_prev is not None else [None] * len(negatives))
        P = np.concatenate([P, _scatter(ppos, col2, len(rel2))], axis=1)
        N = np.concatenate([N, _scatter(pneg, col2, len(rel2))], axis=1)
        exprs += [ClassExpression.some(ClassExpression.atom(int(c))) for c in rel2]
        classes = np.concatenate([relevant, rel2])
    keep_neg = N.any(axis=1)  # negatives outside every candidate change no count
    return _Coverage(exprs, classes, P, N[keep_neg], len(positives), len(negatives))


def coverage_from_pairs(onto: Ontology, pairs: tuple[np.ndarray, np.ndarray, np.ndarray, int], n_tokens: int,
                        pos_idx: np.ndarray, neg_idx: np.ndarray) -> _Coverage:
    """:func:`coverage_matrices` of the tokens ``pos_idx`` (positives) and ``neg_idx`` (negatives)
    among ``n_tokens`` tokens whose :func:`class_pairs` (with previous tokens) are ``pairs``: the
    same columns in the same order (each class of a positive, then ``follows some C`` for each
    class of a positive's previous token, both by class id), read from the pairs instead of
    closing the examples' classes again."""
    row, col, classes, n_atoms = pairs
    K = len(classes)
    is_pos = np.zeros(n_tokens, dtype=bool)
    is_pos[pos_idx] = True
    has_pos = np.zeros(K, dtype=bool)
    has_pos[col[is_pos[row]]] = True
    rel = np.flatnonzero(has_pos)  # atoms, then restrictions; by class id within each
    new_col = np.full(K, -1, dtype=np.int64)
    new_col[rel] = np.arange(len(rel))
    on = new_col[col] >= 0

    def dense(idx: np.ndarray) -> np.ndarray:
        at = np.full(n_tokens, -1, dtype=np.int64)
        at[idx] = np.arange(len(idx))
        m = on & (at[row] >= 0)
        M = np.zeros((len(idx), len(rel)), dtype=bool)
        M[at[row[m]], new_col[col[m]]] = True
        return M

    P, N = dense(np.asarray(pos_idx)), dense(np.asarray(neg_idx))
    exprs = _exprs_of(onto, classes[rel].tolist(), (rel >= n_atoms).tolist())
    return _Coverage(exprs, classes[rel], P, N[N.any(axis=1)], len(pos_idx), len(neg_idx))


def induce(
    onto: Ontology,
    positives: Sequence[Sequence[int]],
    negatives: Sequence[Sequence[int]],
    config: InductionConfig = InductionConfig(),
    *,
    positives_prev: Sequence[Sequence[int] | None] | None = None,
    negatives_prev: Sequence[Sequence[int] | None] | None = None,
    coverage: _Coverage | None = None,
) -> list[Hypothesis]:
    """The ``config.n_best`` best distinct expressions for the examples, best first (empty when
    no positive example mentions any class). With ``positives_prev``/``negatives_prev`` (the
    direct classes of each example's previous token, ``None`` when it has none) the candidates
    include ``follows some C``. Every returned expression covers at least one positive.
    ``coverage``: :func:`coverage_matrices` of these arguments when the caller has it (e.g. from
    :func:`coverage_from_pairs`)."""
    cov = coverage if coverage is not None else coverage_matrices(onto, positives, negatives, positives_prev,
                                                                  negatives_prev)
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

    # key -> (expression, or (op, left, right) to be joined when it is ranked: most never are; tp, fp, quality)
    found: dict[object, tuple] = {}

    def add(expr, t: int, f: int, qual: float, key: object = None) -> None:
        key = _canon(expr) if key is None else key
        if key not in found:
            found[key] = (expr, int(t), int(f), float(qual))

    for k in order[: max(cfg.n_best * 4, cfg.beam_width)]:
        add(cov.exprs[k], tp[k], fp[k], q[k])

    # compound refinement by beam search
    cand = order[: cfg.n_candidates]
    Pc = cov.P[:, cand]
    Nc = cov.N[:, cand]
    # |E and C| for every candidate C is one product of E's coverage with the candidates' (exact:
    # counts below 2^24 in float32), and |E or C| = |E| + |C| - |E and C|
    Pf, Nf = Pc.astype(np.float32), Nc.astype(np.float32)
    col_t, col_f = Pc.sum(0), Nc.sum(0)
    cand_l = cand.tolist()
    cand_key = [_canon(cov.exprs[k]) for k in cand_l]
    tp_c, fp_c = tp[cand], fp[cand]
    # beam entries: (expression, its coverage of positives and negatives, columns used, _canon key)
    beam = [
        (cov.exprs[k], cov.P[:, k].copy(), cov.N[:, k].copy(), {int(k)}, _canon(cov.exprs[k]))
        for k in order[: cfg.beam_width]
    ]
    length = 1
    while length + 2 <= cfg.max_length and beam:
        length += 2
        # (quality, precision, expression, parent in the beam, candidate column, op, t, f, key): the
        # coverage of a refinement is formed only when it enters the next beam
        level: list[tuple[float, float, tuple, int, int, str, int, int, object]] = []
        # every beam member's refinements by every candidate at once: (op, member, candidate)
        # (one product per member: a matrix product here goes through multithreaded BLAS, ~10x slower)
        both_t = np.array([(e[1].astype(np.float32) @ Pf).astype(np.int64) for e in beam])
        both_f = np.array([(e[2].astype(np.float32) @ Nf).astype(np.int64) for e in beam])
        base_t = np.array([int(e[1].sum()) for e in beam], dtype=np.int64)[:, None]
        base_f = np.array([int(e[2].sum()) for e in beam], dtype=np.int64)[:, None]
        T = np.stack([base_t + col_t - both_t, both_t])
        F = np.stack([base_f + col_f - both_f, both_f])
        QQ = _quality(T, F, cov.n_pos, cov.n_neg, length, cfg)
        # a refinement must cover differently from both of its operands
        CHANGED = ((T != base_t) | (F != base_f)) & ((T != tp_c) | (F != fp_c))
        BEST = np.argsort(-QQ, axis=-1)[..., : cfg.beam_width * 2].tolist()
        for b, (expr, cp, cn, used, ekey) in enumerate(beam):
            for o, op in enumerate(("or", "and")):
                t, f, qq, changed = T[o, b], F[o, b], QQ[o, b], CHANGED[o, b]
                for j in BEST[o][b]:
                    k = cand_l[j]
                    if k in used or not changed[j]:
                        continue
                    new = (op, expr, cov.exprs[k])  # joined if it enters the beam or is ranked
                    # _canon(new) from its operands' keys (join flattens an operand of the same op)
                    key = (op, (ekey[1] if expr.op == op else frozenset((ekey,))) | {cand_key[j]})
                    tj, fj = int(t[j]), int(f[j])
                    level.append((float(qq[j]), tj / max(tj + fj, 1), new, b, j, op, tj, fj, key))
        level.sort(key=lambda x: (x[0], x[1]), reverse=True)
        parents, beam = beam, []
        seen = set()
        for qq, pr, new, b, j, op, t, f, key in level:
            if key in seen:
                continue
            seen.add(key)
            add(new, t, f, qq, key)
            if len(beam) < cfg.beam_width:
                _, cp, cn, used, _ = parents[b]
                if op == "or":
                    np_j, nn_j = cp | Pc[:, j], cn | Nc[:, j]
                else:
                    np_j, nn_j = cp & Pc[:, j], cn & Nc[:, j]
                beam.append((ClassExpression.join(new[0], new[1:]), np_j, nn_j, used | {int(cand[j])}, key))

    depth = onto.depth
    # ranked by quality, precision, length, specificity, canonical text; the last three (slow to
    # compute) only within runs of equal quality and precision, as far as the n_best found reach
    def precision(v: tuple) -> float:  # Hypothesis.precision
        return v[1] / (v[1] + v[2]) if v[1] + v[2] else 0.0

    def hypothesis(v: tuple) -> Hypothesis:
        e = v[0] if isinstance(v[0], ClassExpression) else ClassExpression.join(v[0][0], v[0][1:])
        return Hypothesis(e, v[1], v[2], cov.n_pos, cov.n_neg, v[3])

    pool = [v for v in found.values() if precision(v) >= cfg.min_precision and v[1] > 0]
    keys = [(-round(v[3], 12), -precision(v)) for v in pool]
    by_key = sorted(range(len(pool)), key=keys.__getitem__)

    def rest(h: Hypothesis) -> tuple:
        return (h.expression.length, -sum(int(depth[c]) for c in h.expression.classes()), _canon_str(h.expression))

    out: list[Hypothesis] = []
    seen_cov: set[tuple[int, int, frozenset[int]]] = set()
    i = 0
    while i < len(by_key) and len(out) < cfg.n_best:
        j = i + 1
        while j < len(by_key) and keys[by_key[j]] == keys[by_key[i]]:
            j += 1
        for h in sorted((hypothesis(pool[k]) for k in by_key[i:j]), key=rest):
            sig = (h.tp, h.fp, frozenset(h.expression.classes()))
            if sig in seen_cov:
                continue
            seen_cov.add(sig)
            out.append(h)
            if len(out) >= cfg.n_best:
                break
        i = j
    return out


def _canon(expr: ClassExpression) -> object:
    if expr.op == "class":
        return expr.cls
    if expr.op == "some":
        return ("some", expr.role, _canon(expr.args[0]))
    return (expr.op, frozenset(_canon(a) for a in expr.args))


def _canon_str(expr: ClassExpression) -> str:
    """A canonical text of ``expr`` (an ``and``/``or``'s parts sorted): the last tie-break of the
    ranking. Not ``repr(_canon(expr))``: a frozenset's order follows its members' hashes, which
    for tuples holding strings change with Python's hash seed, so equally good hypotheses came
    out in another order from one process to the next."""
    if expr.op == "class":
        return str(expr.cls)
    if expr.op == "some":
        return f"some {expr.role} ({_canon_str(expr.args[0])})"
    return f"{expr.op}(" + ", ".join(sorted(_canon_str(a) for a in expr.args)) + ")"


def coverage_vector(
    onto: Ontology,
    expr: ClassExpression,
    examples: Sequence[Sequence[int]],
    previous: Sequence[Sequence[int] | None] | None = None,
) -> np.ndarray:
    """Boolean coverage of ``expr`` over examples (direct classes per example; ``previous``: the
    direct classes of each example's previous token, ``None`` when it has none), through the
    same matrices the search uses — what the reasoner test compares HermiT against."""
    return coverage_vectors(onto, [expr], examples, previous)[:, 0]


@dataclass(frozen=True)
class ClosedExamples:
    """Examples' classes with all their superclasses, flattened: one ``(row, class)`` pair per
    example and class (and the same for each example's previous token) — what
    :func:`coverage_vectors` scatters into its columns, made once (:func:`close_examples`) and
    reused for every expression evaluated on the same examples (a simulator scoring a neuron's
    candidate labels on its held-out windows)."""

    n: int
    """Examples."""
    rows: np.ndarray
    classes: np.ndarray
    prev_rows: np.ndarray | None
    """``None`` when no previous tokens were given."""
    prev_classes: np.ndarray | None
    memo: dict = field(default_factory=dict, compare=False, repr=False)
    """Indexes built on first use (:meth:`columns`)."""

    def class_columns(self, onto: Ontology, classes: Sequence[int], *, previous: bool = False) -> dict:
        """``{class: coverage}`` (each a read-only boolean vector over the examples) for at least
        ``classes``: :meth:`columns`, kept per class for the next call (a neuron's labels, scored
        by two simulators, name many of the same classes)."""
        kept = self.memo.get(("class", previous))
        if kept is None:
            kept = self.memo[("class", previous)] = {}
        missing = [c for c in classes if c not in kept]
        if missing:
            by_class = np.ascontiguousarray(self.columns(onto, missing, previous=previous).T)
            by_class.flags.writeable = False
            for c, v in zip(missing, by_class):
                kept[c] = v
        return kept

    def columns(self, onto: Ontology, classes: np.ndarray, *, previous: bool = False) -> np.ndarray:
        """Boolean coverage (examples × ``classes``): whether each example (with ``previous``: its
        previous token) is an instance of each class — from an index of the examples by class,
        built on the first call (the examples of each class, found by binary search), so that a
        call costs what the classes cover, not what all the examples hold."""
        key = "previous" if previous else "examples"
        index = self.memo.get(key)
        if index is None:
            rows, cls = (self.prev_rows, self.prev_classes) if previous else (self.rows, self.classes)
            if rows is None:
                raise ValueError("no previous tokens' classes were given")
            rel, inv = _unique_inverse(cls, onto.n_classes)
            ptr, by_class = _kernels.group_rows(np.asarray(rows, dtype=np.int64), inv, len(rel))
            index = self.memo[key] = (rel, ptr, by_class)
        rel, ptr, by_class = index
        need = np.asarray(classes, dtype=np.int64)
        M = np.zeros((self.n, len(need)), dtype=bool)
        if not len(rel) or not len(need):
            return M
        j = np.minimum(np.searchsorted(rel, need), len(rel) - 1)
        k = np.flatnonzero(rel[j] == need)  # the needed classes some example holds
        j = j[k]
        starts, lens = ptr[j], ptr[j + 1] - ptr[j]
        total = int(lens.sum())
        if total:
            at = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(total)
            M[by_class[at], np.repeat(k, lens)] = True
        return M


def _flatten(closed: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lens = [len(c) for c in closed]
    if not sum(lens):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.repeat(np.arange(len(closed)), lens), np.concatenate(closed)


def close_examples(onto: Ontology, examples: Sequence[Sequence[int]],
                   previous: Sequence[Sequence[int] | None] | None = None) -> ClosedExamples:
    """:class:`ClosedExamples` of ``examples`` (direct classes per example) and ``previous``."""
    closure = _Closures(onto)
    rows, classes = _flatten(closure.many(examples))
    prev_rows = prev_classes = None
    if previous is not None:
        prev_rows, prev_classes = _flatten(closure.many(previous))
    return ClosedExamples(len(examples), rows, classes, prev_rows, prev_classes)


def close_windows(onto: Ontology, windows: Sequence[tuple[tuple[int, ...], ...]]) -> ClosedExamples:
    """:func:`close_examples` of the tokens of ``windows`` (each window's tokens' direct classes, a
    tuple of tuples), one after another, each token's previous token the one before it in its
    window (none for a window's first token): the same arrays, made from each window's closed
    classes (memoised per window, :meth:`_Closures.window`) without a Python step per token."""
    got = _Closures(onto).windows(windows)
    lens = np.concatenate([g[0] for g in got]) if got else np.zeros(0, dtype=np.int64)
    n = len(lens)
    if not n or not lens.sum():
        return close_examples(onto, [t for w in windows for t in w],
                              [p for w in windows for p in ((None, *w[:-1]) if w else ())])
    flat = np.concatenate([g[1] for g in got])
    rows = np.repeat(np.arange(n), lens)
    last = np.zeros(n, dtype=bool)  # each window's last token: no token has it as its previous one
    ends = np.cumsum([len(w) for w in windows])
    last[ends[np.diff(np.r_[0, ends]) > 0] - 1] = True
    keep = ~last[rows]
    prev_rows, prev_classes = rows[keep] + 1, flat[keep]
    if not len(prev_classes):
        prev_rows, prev_classes = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return ClosedExamples(n, rows, flat, prev_rows, prev_classes)


def _unique_inverse(values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` of ids below ``size``, by marking them in an
    array of ``size`` flags instead of sorting (the same arrays; ``values``' dtype kept)."""
    present = np.zeros(size, dtype=bool)
    present[values] = True
    rel = np.flatnonzero(present)
    pos = np.empty(size, dtype=np.int64)
    pos[rel] = np.arange(len(rel))
    return rel.astype(values.dtype, copy=False), pos[values]


def closed_pairs(onto: Ontology, closed: ClosedExamples) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """:func:`class_pairs` of examples closed by :func:`close_examples` / :func:`close_windows`
    (with previous tokens): the same ``(row, col, classes, n_atoms)``."""
    if closed.prev_rows is None:
        raise ValueError("closed_pairs needs the previous tokens' classes")
    rel, inv = _unique_inverse(closed.classes, onto.n_classes)
    rel2, inv2 = _unique_inverse(closed.prev_classes, onto.n_classes)
    return (np.concatenate([closed.rows, closed.prev_rows]), np.concatenate([inv, inv2 + len(rel)]),
            np.concatenate([rel, rel2]), len(rel))


def _filler_classes(e: ClassExpression) -> list[int]:
    """Classes named inside the ``some`` restrictions of ``e``."""
    if e.op == "some":
        return e.args[0].classes()
    return [c for a in e.args for c in _filler_classes(a)]


def coverage_vectors(
    onto: Ontology,
    exprs: Sequence[ClassExpression],
    examples: Sequence[Sequence[int]] | None,
    previous: Sequence[Sequence[int] | None] | None = None,
    *,
    closed: ClosedExamples | None = None,
) -> np.ndarray:
    """:func:`coverage_vector` of several expressions at once (examples × expressions): one
    column per class the expressions name, for the examples and for their previous tokens, then
    the expressions' ``and``/``or``/``some`` over those columns. ``closed``: the examples
    already closed by :func:`close_examples` (then ``examples`` and ``previous`` are not read)."""
    if closed is None:
        closed = close_examples(onto, examples or (), previous)
    n = closed.n
    needed = sorted({c for e in exprs for c in e.classes()})
    M = closed.class_columns(onto, needed)
    fillers = sorted({c for e in exprs for c in _filler_classes(e)})
    Mp = closed.class_columns(onto, fillers, previous=True) if closed.prev_rows is not None and fillers else None

    def ev(e: ClassExpression, M: dict, Mp: dict | None) -> np.ndarray:
        if e.op == "class":
            return M[e.cls]
        if e.op == "some":  # the filler holds of the previous token (none: no previous token known)
            return ev(e.args[0], Mp, None) if Mp is not None else np.zeros(n, dtype=bool)
        parts = [ev(a, M, Mp) for a in e.args]
        return np.logical_and.reduce(parts) if e.op == "and" else np.logical_or.reduce(parts)

    out = np.zeros((n, len(exprs)), dtype=bool)
    for k, e in enumerate(exprs):
        out[:, k] = ev(e, M, Mp)
    return out


# ---- graded search: a weighted disjunction that predicts how strongly a neuron fires ---------------


@dataclass(frozen=True)
class GradedConfig:
    """Settings of :func:`graded_search`."""

    max_parts: int = 20
    """Most disjuncts (parts) in the weighted disjunction (cross-validation usually stops far
    earlier: median 6 on real SmolLM2 neurons)."""
    min_gain: float = 0.002
    """A part is added only when it raises the explain-split correlation by at least this much."""
    min_support: int = 3
    """A candidate part must cover at least this many explain tokens."""
    min_windows: int = 3
    """… in at least this many windows (when the windows are known): a term repeated in one
    window only rarely holds elsewhere."""
    prior_count: float = 1.0
    """Pseudo-count of a part's weight at the mean activation of all explain tokens (shrinks the
    weights of rarely seen parts towards the mean)."""
    cv_min_gain: float = 0.003
    """A further part must raise the mean held-fold correlation by at least this much (0.003 vs
    0.01: +0.008 held-out on 50 real SmolLM2 neurons, with lowering parts)."""
    every_part_positive: bool = True
    """Every raising part must cover a positive example (else only the first one must)."""
    lowering: bool = True
    """Parts whose weight is below the mean of all tokens (tokens that *lower* the neuron, e.g.
    ``determiners`` on a unit that goes negative on them) may be added too; they need cover no
    positive. Under the graded prediction (the largest weight of the covering parts) such a
    part sets the tokens only it covers below the base."""
    n_conjunctions: int = 30
    """``A and (follows some B)`` candidates are formed from the best this-many atoms and
    restrictions (by their weight)."""
    roles: bool = True
    """Parts may name the previous token (``follows some C`` and the conjunctions above); else
    classes of the token itself only."""
    cross_validate: bool = True
    """Choose the number of parts by two-fold cross-validation over windows (else parts are added
    while they raise the explain-split correlation by ``min_gain``, up to ``max_parts``)."""


@dataclass(frozen=True)
class WeightedExpression:
    """A disjunction of parts, each with the activation it predicts."""

    parts: tuple[ClassExpression, ...]
    """The disjuncts, in the order the search added them."""
    weights: tuple[float, ...]
    """Predicted activation of a token covered by each part (a token covered by several parts
    gets the largest)."""
    base: float
    """Predicted activation of a token no part covers."""
    correlation: float
    """Correlation of the prediction with the activations of the explain tokens it was fitted on."""

    @property
    def expression(self) -> ClassExpression:
        """The parts joined by ``or``."""
        return ClassExpression.join("or", self.parts)


def part_weights(cover: np.ndarray, acts: np.ndarray, prior_count: float = 2.0) -> tuple[np.ndarray, float]:
    """Weights of parts from their coverage ``cover`` (n_tokens × n_parts, bool) of tokens with
    activations ``acts``: each part's mean activation over the tokens it covers, shrunk by
    ``prior_count`` pseudo-tokens at the mean of all tokens; the base is the mean activation of
    the tokens no part covers (the mean of all when every token is covered)."""
    acts = np.asarray(acts, dtype=np.float64)
    cover = np.asarray(cover, dtype=bool).reshape(len(acts), -1)
    mean_all = float(acts.mean()) if acts.size else 0.0
    cnt = cover.sum(0)
    w = (acts @ cover + prior_count * mean_all) / np.maximum(cnt + prior_count, 1e-12)
    rest = ~cover.any(1)
    base = float(acts[rest].mean()) if rest.any() else mean_all
    return w, base


def predict_graded(cover: np.ndarray, weights: Sequence[float], base: float) -> np.ndarray:
    """Per token: the largest weight of the parts covering it, else ``base``."""
    cover = np.asarray(cover, dtype=bool)
    w = np.asarray(weights, dtype=np.float64)
    if cover.size == 0 or len(w) == 0:
        return np.full(cover.shape[0], base)
    # each part's weight written over the tokens it covers, smallest weight first: what is left on a
    # token is the largest weight covering it (``np.where(cover, w, -inf).max(1)``, 4x faster)
    if np.isnan(w).any():
        vals = np.where(cover, w[None, :], -np.inf).max(1)
    else:
        vals = np.full(cover.shape[0], -np.inf)
        by_part = np.ascontiguousarray(cover.T)
        for k in np.argsort(w, kind="stable").tolist():
            vals[by_part[k]] = w[k]
    return np.where(np.isfinite(vals), vals, base)


def _corr(p: np.ndarray, a: np.ndarray) -> float:
    """Pearson correlation (0 when either is constant)."""
    if p.std() == 0 or a.std() == 0:
        return 0.0
    return float(np.corrcoef(p, a)[0, 1])


def graded_search(
    onto: Ontology,
    examples: Sequence[Sequence[int]],
    previous: Sequence[Sequence[int] | None],
    acts: Sequence[float],
    positive: np.ndarray,
    config: GradedConfig = GradedConfig(),
    *,
    groups: Sequence[int] | None = None,
    candidates: GradedCandidates | None = None,
    greedy_memo: dict | None = None,
    fold: np.ndarray | None | bool = False,
) -> WeightedExpression | None:
    """Greedy forward selection of a weighted disjunction over the explain tokens.

    ``examples``: every explain token's direct classes; ``previous``: its previous token's
    (``None`` for the first token of a window); ``acts``: its activation; ``positive``: which
    tokens are positive examples; ``groups``: the window of each token. Candidates are the atoms
    and ``follows some`` restrictions covering at least one positive and ``min_support`` tokens,
    plus ``A and (follows some B)`` conjunctions of the best of them. Each step adds the candidate
    (with its :func:`part_weights` weight) that most raises the Pearson correlation between the
    graded prediction and the activations — for all candidates at once, from column sums — while
    the gain is at least ``min_gain``.

    **How many parts** (against fitting noise): with ``groups`` spanning at least 4 windows,
    the windows are split in two folds (alternately); on each fold the greedy search runs on the
    other fold, and every prefix of its parts, with weights from that fold, is scored on this
    one. The number of parts is the one with the best mean held-fold correlation (the fewest
    that raises it by at least ``cv_min_gain`` per part, at least 1); the final search on all tokens
    stops there. ``None`` when no
    candidate covers a positive. ``candidates``: :func:`graded_candidates` of the same arguments,
    when the caller has it (searches whose settings differ only in how parts are chosen share it).
    ``greedy_memo``: a dict shared by searches over the same candidates and tokens that differ only
    in how many parts they keep (e.g. with and without cross-validation): the final greedy runs
    once, to ``max_parts``, and each takes its first parts (the greedy's first k parts do not
    depend on how many more it may add). ``fold``: :func:`held_fold` of ``groups``, when the caller
    has it (several searches over the same tokens)."""
    got = _graded_choice(onto, examples, previous, acts, positive, config, groups=groups, candidates=candidates,
                         greedy_memo=greedy_memo, fold=fold)
    if got is None:
        return None
    X, exprs, chosen, a = got
    cover = X[:, chosen]
    weights, base_v = part_weights(cover, a, config.prior_count)
    p = predict_graded(cover, weights, base_v)
    return WeightedExpression(tuple(exprs[k] for k in chosen), tuple(float(x) for x in weights), base_v, _corr(p, a))


def graded_parts(
    onto: Ontology,
    examples: Sequence[Sequence[int]],
    previous: Sequence[Sequence[int] | None],
    acts: Sequence[float],
    positive: np.ndarray,
    config: GradedConfig = GradedConfig(),
    *,
    groups: Sequence[int] | None = None,
    candidates: GradedCandidates | None = None,
    greedy_memo: dict | None = None,
    fold: np.ndarray | None | bool = False,
) -> tuple[ClassExpression, ...] | None:
    """The parts :func:`graded_search` chooses (the same arguments), in the order it adds them,
    without fitting their weights and correlation: what the concept-induction explainer keeps of a
    search (it fits each candidate's weights itself)."""
    got = _graded_choice(onto, examples, previous, acts, positive, config, groups=groups, candidates=candidates,
                         greedy_memo=greedy_memo, fold=fold)
    return None if got is None else tuple(got[1][k] for k in got[2])


def _graded_choice(onto, examples, previous, acts, positive, config, *, groups, candidates, greedy_memo, fold
                   ) -> tuple[np.ndarray, list[ClassExpression], list[int], np.ndarray] | None:
    """``(X, exprs, chosen, a)`` of :func:`graded_search`: its candidates' coverage and expressions,
    the columns it chooses, the activations (``None`` when it finds nothing)."""
    cfg = config
    a = np.asarray(acts, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    n = len(a)
    if n == 0 or not pos.any():
        return None
    X, exprs, nonzero = candidates if candidates is not None else graded_candidates(
        onto, examples, previous, a, pos, cfg, groups=groups)
    if not exprs:
        return None
    max_parts = cfg.max_parts
    if groups is not None and cfg.cross_validate:
        if fold is False:  # not given: from the groups
            fold = held_fold(groups)
        if fold is not None:
            curves = []
            row, col = nonzero
            row_ptr = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(np.bincount(row, minlength=n), out=row_ptr[1:])
            col = np.asarray(col, dtype=np.int64)
            for test in (fold, ~fold):
                train = ~test
                a_train = a[train]
                # the training tokens' rows of the coverage, and the candidates covering one of their positives
                ptr_t, col_t, ok_t = _kernels.fold_rows(row_ptr, col, train, pos, X.shape[1])
                seq = _greedy_csr(X.shape[1], a_train, cfg, cfg.max_parts, ok_t, ptr_t, col_t)
                S = X[:, seq]
                curve = list(_kernels.prefix_curve(np.ascontiguousarray(S[train]), a_train,
                                                   np.ascontiguousarray(S[test]), a[test],
                                                   float(cfg.prior_count)))
                curves.append(curve + [curve[-1] if curve else 0.0] * (cfg.max_parts - len(curve)))
            mean = np.mean(np.array(curves), axis=0)
            best, k_best = -np.inf, 1
            for k, v in enumerate(mean, start=1):
                if v > best + (max(cfg.cv_min_gain, _kernels.TIE) if k > 1 else 0.0):
                    best, k_best = v, k
            max_parts = k_best
    first_ok = _covers_any(nonzero, pos, X.shape[1])
    if not first_ok.any():
        return None
    if greedy_memo is None:
        chosen = _greedy(X, a, cfg, max_parts, first_ok, nonzero)
    else:
        key = (id(X), float(cfg.prior_count), float(cfg.min_gain), bool(cfg.lowering))
        got = greedy_memo.get(key)
        if got is None or (got[0] < max_parts and len(got[1]) == got[0]):
            limit = max(max_parts, cfg.max_parts)
            got = greedy_memo[key] = (limit, _greedy(X, a, cfg, limit, first_ok, nonzero), X)
        chosen = got[1][:max_parts]
    if not chosen:
        # nothing raises the correlation: the candidate covering a positive with the highest weight
        w_all = (a @ X + cfg.prior_count * a.mean()) / (X.sum(0) + cfg.prior_count)
        chosen = [int(np.argmax(np.where(first_ok, w_all, -np.inf)))]
    return X, exprs, chosen, a


def _nonzero(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a C-ordered 2-d array (row-major pairs), from its flat positions (faster
    than either ``np.nonzero`` or a compiled scan on coverage matrices of a few thousand rows)."""
    if X.shape[1] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.divmod(np.flatnonzero(X), X.shape[1])


def _covers_any(nonzero: tuple[np.ndarray, np.ndarray], rows: np.ndarray, K: int) -> np.ndarray:
    """``X[rows].any(0)`` of the ``K``-column coverage whose ``np.nonzero`` is ``nonzero``."""
    row, col = nonzero
    return np.bincount(col[rows[row]], minlength=K) > 0


CANDIDATE_SETTINGS = ("min_support", "min_windows", "prior_count", "every_part_positive", "lowering",
                      "n_conjunctions", "roles")
"""The :class:`GradedConfig` fields :func:`graded_candidates` reads (searches equal in these share candidates)."""


class GradedCandidates(NamedTuple):
    """The candidate parts of :func:`graded_search`."""

    X: np.ndarray
    """Coverage, tokens × candidates (bool)."""
    exprs: list[ClassExpression]
    """The expression of each column."""
    nonzero: tuple[np.ndarray, np.ndarray]
    """``np.nonzero(X)``: (token, column) pairs, row-major."""

    def without_roles(self) -> "GradedCandidates":
        """The candidates that name the token's own classes only: what :func:`graded_candidates`
        gives with ``roles=False`` and the same other settings (the same columns in the same
        order: the role filter removes restrictions and conjunctions and changes no other
        column)."""
        atoms = np.array([e.op == "class" for e in self.exprs], dtype=bool)
        new_col = np.cumsum(atoms) - 1
        row, col = self.nonzero
        keep = atoms[col]
        rows, cols = row[keep], new_col[col[keep]]
        X = np.zeros((self.X.shape[0], int(atoms.sum())), dtype=bool)  # self.X[:, atoms], from its pairs
        X[rows, cols] = True
        return GradedCandidates(X, [e for e, k in zip(self.exprs, atoms) if k], (rows, cols))


def graded_candidates(onto: Ontology, examples, previous, a: np.ndarray, pos: np.ndarray,
                      cfg: GradedConfig, *, groups=None, pairs=None) -> GradedCandidates:
    """Coverage (tokens × candidates) and the candidate expressions of :func:`graded_search`.

    The columns are those of :func:`coverage_matrices` over all tokens (each class of a token,
    then ``follows some C`` for each class of a previous token); they are filtered from the
    (token, column) pairs alone (``pairs``: :func:`class_pairs` of the same tokens, when the
    caller has it), and the matrix is built for the kept ones only (a few hundred of several
    thousand)."""
    a = np.asarray(a, dtype=np.float64)
    pos = np.asarray(pos, dtype=bool)
    n = len(a)
    row, col, classes, n_atoms = pairs if pairs is not None else class_pairs(onto, examples, previous)
    K = len(classes)
    stats = _pair_stats(onto, row, col, classes, groups)
    cnt = stats.count
    keep = (cnt >= cfg.min_support) & (cnt < n)
    if not cfg.roles:
        keep[n_atoms:] = False
    mean_all = float(a.mean())
    if cfg.every_part_positive:
        covers_pos = np.bincount(col[pos[row]], minlength=K) > 0
        if cfg.lowering:  # a part that lowers the neuron is described by the tokens it covers, no positive needed
            w0 = (np.bincount(col, weights=a[row], minlength=K) + cfg.prior_count * mean_all) / (cnt + cfg.prior_count)
            covers_pos = covers_pos | (w0 < mean_all)
        keep &= covers_pos
    win = None
    if groups is not None and cfg.min_windows > 1:
        win, n_windows = stats.windows()
        keep &= n_windows >= cfg.min_windows
    # deepest classes first, so that of candidates covering the same tokens the least general wins
    by_depth = stats.by_depth
    order = by_depth[keep[by_depth]].astype(np.int64, copy=False)
    new_col = np.full(K, -1, dtype=np.int64)
    new_col[order] = np.arange(len(order))
    X = np.zeros((n, len(order)), dtype=bool)
    kc = new_col[col]
    m = np.flatnonzero(kc >= 0)
    row_m, col_m = row[m], kc[m]
    X[row_m, col_m] = True
    exprs = _exprs_of(onto, classes[order].tolist(), (order >= n_atoms).tolist())
    if not exprs:
        return GradedCandidates(X, exprs, (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)))
    # each kept column's sum and count from its (token, column) pairs (no pair repeats)
    w = ((np.bincount(col_m, weights=a[row_m], minlength=len(order)) + cfg.prior_count * mean_all)
         / (cnt[order] + cfg.prior_count))
    # conjunctions "A and (follows some B)" of the best atoms and restrictions
    is_role = order >= n_atoms  # the columns of "follows some C"
    by_w = np.argsort(-w)
    atoms = by_w[~is_role[by_w]][: cfg.n_conjunctions].tolist()
    roles = by_w[is_role[by_w]][: cfg.n_conjunctions].tolist()
    if atoms and roles:
        # each conjunction's support, positives and windows counted without forming its column
        ai, ri = np.array(atoms, dtype=np.int64), np.array(roles, dtype=np.int64)
        cnt_c, pos_c, win_c = _kernels.conjunction_counts(
            X, ai, ri, pos, win if win is not None else np.zeros(n, dtype=np.int64),
            int(win.max()) + 1 if win is not None and n else 0)
        ok = (cnt_c >= cfg.min_support) & (pos_c if cfg.every_part_positive else True)
        if win is not None:
            ok &= win_c >= cfg.min_windows
        ok_i, ok_j = np.divmod(np.flatnonzero(ok), len(roles))
        new = [ClassExpression.join("and", (exprs[atoms[i]], exprs[roles[j]])) for i, j in zip(ok_i, ok_j)]
        if new:
            # the conjunctions' columns from the few atoms' and restrictions' columns, gathered once each
            conj = X[:, ai][:, ok_i] & X[:, ri][:, ok_j]
            K0 = X.shape[1]
            X = np.concatenate([X, conj], axis=1)
            exprs += new
            conj_row, conj_col = np.nonzero(conj)
            row_m, col_m = np.concatenate([row_m, conj_row]), np.concatenate([col_m, conj_col + K0])
    return GradedCandidates(X, exprs, _row_major(row_m, col_m, X.shape[1]))


class _PairStats:
    """What :func:`graded_candidates` reads of the (token, column) pairs whatever its settings,
    made once for the searches that build their candidates from the same pairs."""

    def __init__(self, onto: Ontology, row: np.ndarray, col: np.ndarray, classes: np.ndarray, groups) -> None:
        self.held = (onto, row, col, classes, groups)
        """The arrays these are of (held, so that their ids stay theirs while kept)."""
        self.count = np.bincount(col, minlength=len(classes))
        """Tokens of each column."""
        self.by_depth = np.argsort(-onto.depth[classes], kind="stable")
        """The columns, deepest class first (stable)."""
        self._windows: tuple[np.ndarray, np.ndarray] | None = None

    def windows(self) -> tuple[np.ndarray, np.ndarray]:
        """``(win, n_windows)``: each token's window numbered 0 … W-1, and the distinct windows
        among each column's tokens (made on first use; the pairs' groups must be given)."""
        if self._windows is None:
            _, row, col, classes, groups = self.held
            _, win = np.unique(np.asarray(groups), return_inverse=True)
            seen = np.zeros((len(classes), int(win.max()) + 1), dtype=bool)
            seen[col, win[row]] = True
            self._windows = (win, seen.sum(1))
        return self._windows


_pair_stats_last: list[_PairStats] = []


def _pair_stats(onto: Ontology, row: np.ndarray, col: np.ndarray, classes: np.ndarray, groups) -> _PairStats:
    """:class:`_PairStats` of the pairs, kept for the next call on the same arrays (the explainer's
    searches with other support settings build their candidates from the same pairs)."""
    held = (onto, row, col, classes, groups)
    for got in list(_pair_stats_last):
        if all(x is y for x, y in zip(got.held, held)):
            return got
    got = _PairStats(onto, row, col, classes, groups)
    _pair_stats_last[:] = [got]
    return got


def _row_major(rows: np.ndarray, cols: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of the ``width``-column matrix whose true cells are exactly the distinct
    ``(rows, cols)`` pairs, row-major: their flat positions sorted (~0.2 ms for 40,000 pairs) instead
    of a scan of every cell (:func:`_nonzero`: ~1 ms on ~2,600 × 800). The pairs come in runs (token
    by token, then the conjunctions' columns), which the stable sort (timsort for 64-bit keys) merges:
    on the 40 calls of 20 real neurons (~38,000 pairs each) 2.3 ms a call against the default
    quicksort's 4.4 (loaded machine); the same array, equal integers being indistinguishable."""
    keys = rows.astype(np.int64) * width + cols
    keys.sort(kind="stable")
    return np.divmod(keys, width)


_EXPRS: "weakref.WeakKeyDictionary[Ontology, dict]" = weakref.WeakKeyDictionary()


def _memo_expr(onto: Ontology) -> dict:
    """The ontology's memo of shared atoms and restrictions (started afresh past ``_Closures.MAX_ITEMS``)."""
    memo = _EXPRS.get(onto)
    if memo is None or len(memo) >= _Closures.MAX_ITEMS:
        with _Closures._lock:
            memo = _EXPRS.get(onto)
            if memo is None or len(memo) >= _Closures.MAX_ITEMS:
                memo = _EXPRS[onto] = {}
    return memo


def _exprs_of(onto: Ontology, classes: list[int], some: list[bool]) -> list[ClassExpression]:
    """``[_some_expr(onto, c) if s else _atom_expr(onto, c) for c, s in zip(classes, some)]``, the
    memo looked up once."""
    memo = _memo_expr(onto)
    out = []
    for c, s in zip(classes, some):
        got = memo.get(~c if s else c)
        if got is None:
            got = _some_expr(onto, c) if s else _atom_expr(onto, c)
        out.append(got)
    return out


def _atom_expr(onto: Ontology, c: int) -> ClassExpression:
    """``ClassExpression.atom(c)``, one shared (frozen) instance per class."""
    memo = _memo_expr(onto)
    got = memo.get(c)
    if got is None:
        got = memo[c] = ClassExpression.atom(c)
    return got


def _some_expr(onto: Ontology, c: int) -> ClassExpression:
    """``ClassExpression.some(ClassExpression.atom(c))``, one shared instance per class."""
    memo = _memo_expr(onto)
    got = memo.get(~c)
    if got is None:
        got = memo[~c] = ClassExpression.some(_atom_expr(onto, c))
    return got


def class_pairs(onto: Ontology, examples, previous) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """:func:`_pairs` of the tokens' classes (``examples``) and their previous tokens' (``previous``),
    each closed under superclasses."""
    closure = _Closures(onto)
    return _pairs(closure.many(examples), closure.many(previous))


def _pairs(closed: list[np.ndarray], closed_prev: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(row, col, classes, n_atoms)``: the (token, column) pairs of the coverage matrix whose
    columns are each class of a token (sorted; the first ``n_atoms``) then each class of a
    previous token (``follows some C``; sorted), as :func:`coverage_matrices` numbers them."""
    out_rows, out_cols, out_classes = [], [], []
    offset = 0
    for cl in (closed, closed_prev):
        lens = np.array([len(c) for c in cl], dtype=np.int64)
        flat = np.concatenate(cl) if cl else np.zeros(0, dtype=np.int32)
        rel, inv = np.unique(flat, return_inverse=True)
        out_rows.append(np.repeat(np.arange(len(cl)), lens))
        out_cols.append(inv.reshape(-1) + offset)
        out_classes.append(rel)
        offset += len(rel)
    return (np.concatenate(out_rows), np.concatenate(out_cols), np.concatenate(out_classes),
            len(out_classes[0]))


def _n_windows(X: np.ndarray, win: np.ndarray) -> np.ndarray:
    """Per column of ``X`` (tokens × candidates), the number of distinct windows ``win`` (each
    token's window, 0 … W-1) among the tokens it covers."""
    row, col = np.nonzero(X)
    seen = np.zeros((X.shape[1], int(win.max()) + 1 if len(win) else 0), dtype=bool)
    seen[col, win[row]] = True
    return seen.sum(1)


def _greedy(X: np.ndarray, a: np.ndarray, cfg: GradedConfig, max_parts: int,
            first_ok: np.ndarray | None = None, nonzero: tuple[np.ndarray, np.ndarray] | None = None) -> list[int]:
    """Columns of ``X`` chosen one by one, each the one that most raises the correlation of the
    graded prediction with ``a`` (by at least ``cfg.min_gain``); the first among ``first_ok``.

    The change a candidate brings to the prediction depends on a token only through the token's
    current prediction (``base``, or the weight of the chosen part that sets it: the first of the
    largest) and whether a chosen part covers it: tokens fall in at most ``len(chosen) + 1`` such
    states. So the sums the correlation needs are, per candidate, sums over states of the tokens it
    covers in each state and of their activations. A part's weight is the mean of the tokens it
    covers (:func:`part_weights`), whatever else is chosen, so adding a part moves only tokens it
    covers to its state (and the base changes): the sums are updated from the covered candidates
    of the moved tokens alone. The loop is compiled (:func:`ontology.graded_kernels.greedy`).
    ``nonzero``: ``np.nonzero(X)`` (row-major), when the caller has it."""
    return _greedy_pairs(len(a), X.shape[1], a, cfg, max_parts, first_ok,
                         np.nonzero(X) if nonzero is None else nonzero)


def _greedy_pairs(n: int, K: int, a: np.ndarray, cfg: GradedConfig, max_parts: int, first_ok: np.ndarray | None,
                  nonzero: tuple[np.ndarray, np.ndarray]) -> list[int]:
    """:func:`_greedy` of the ``n`` × ``K`` coverage given by its row-major nonzero ``(row, col)``."""
    if n < 2 or K == 0 or a.std() == 0:
        return []
    row, col = nonzero
    row_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=n), out=row_ptr[1:])
    return _greedy_csr(K, a, cfg, max_parts, first_ok, row_ptr, col)


def _greedy_csr(K: int, a: np.ndarray, cfg: GradedConfig, max_parts: int, first_ok: np.ndarray | None,
                row_ptr: np.ndarray, col: np.ndarray) -> list[int]:
    """:func:`_greedy_pairs` of the coverage given as rows (``col[row_ptr[i]:row_ptr[i + 1]]``)."""
    if len(a) < 2 or K == 0 or a.std() == 0:
        return []
    ok = np.ones(K, dtype=bool) if first_ok is None else np.asarray(first_ok, dtype=bool)
    got = _kernels.greedy(row_ptr, np.asarray(col, dtype=np.int64), np.asarray(a, dtype=np.float64), K,
                          int(max_parts), float(cfg.prior_count), float(cfg.min_gain), bool(cfg.lowering), ok,
                          first_ok is not None)
    return [int(k) for k in got]


def held_fold(groups: Sequence[int]) -> np.ndarray | None:
    """The held fold of :func:`cross_validated_correlation` (one of the two; the other is its
    complement): the windows (``groups``) in alternate folds; ``None`` with fewer than 4 windows."""
    g = np.asarray(groups)
    uniq = np.unique(g)
    return np.isin(g, uniq[1::2]) if len(uniq) >= 4 else None


def cross_validated_correlation(cover: np.ndarray, acts: Sequence[float], groups: Sequence[int],
                                prior_count: float = 1.0, *, fold: np.ndarray | None | bool = False) -> float:
    """Mean held-fold correlation of a weighted disjunction's graded prediction: the windows
    (``groups``) split alternately in two folds, weights (:func:`part_weights`) fitted on one fold
    and the prediction correlated with the activations of the other, both ways. With fewer than
    4 windows: the correlation on all tokens. ``fold``: :func:`held_fold` of ``groups``, when the
    caller has it (it scores several covers on the same tokens)."""
    a = np.asarray(acts, dtype=np.float64)
    cover = np.ascontiguousarray(np.asarray(cover, dtype=bool).reshape(len(a), -1))
    if cover.shape[1] == 0:
        return 0.0
    if fold is False:  # not given: from the groups
        fold = held_fold(groups)
    if fold is None:  # the last prefix of the compiled curve: all parts
        return float(_kernels.prefix_last(cover, a, cover, a, float(prior_count)))
    out = [float(_kernels.prefix_last(cover[~test], a[~test], cover[test], a[test], float(prior_count)))
           for test in (fold, ~fold)]
    return float(np.mean(out))
