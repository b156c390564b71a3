"""Read queries: recorded neurons, a neuron with everything known about it, best labels,
filtered neuron lists, model overviews. Results are plain dicts (JSON-able except datetimes)."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from functools import lru_cache
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Integer, Text, and_, bindparam, cast, exists, func, select
from sqlalchemy.orm import Session, aliased

from neurolabel.core.types import ActivationRecord, NeuronId, NeuronRecord, NeuronStats, token_stats_from_json
from neurolabel.storage.models import Example, ExplanationFailure, ExplanationRow, Model, Neuron, Score


# the load stage's two statements, built once (building them took ~10% of a record's load), over the
# tables' columns (Core statements, run on the session's connection: the ORM's execution path took
# ~0.4 ms of a record's ~2.5 ms load, for the same rows)
_N, _E, _M = Neuron.__table__.c, Example.__table__.c, Model.__table__.c
_RECORD_NEURON = (
    select(_N.id, _N.layer, _N.index, _N.recorded_at, _N.stats, _N.token_stats, _N.prefix)
    .join(Model.__table__, _M.id == _N.model_id)
    .where(_M.name == bindparam("model"), _N.layer == bindparam("layer"), _N.index == bindparam("index"))
)
_RECORD_EXAMPLES = (  # tokens and activations as their stored JSON text, decoded by _json_loads
    select(_E.kind, cast(_E.tokens, Text), cast(_E.activations, Text), _E.window_id, _E.split, _E.quantile)
    .where(_E.neuron_id == bindparam("neuron_id"))
    .order_by(_E.kind, _E.position)
)


try:
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - orjson is a dependency; the standard library reads the same
    _orjson_loads = None


def _json_loads(text: str) -> Any:
    """A window's tokens or activations from their JSON text (as written by the column's
    ``json.dumps``): by orjson (a window's 64 activations decode in ~1.4 µs instead of ~14 µs with
    :func:`json.loads`), else, for text orjson refuses (``NaN``, lone surrogates), by
    :func:`json.loads`. Used for these two columns only: a list of strings and a list of floats
    read back the same either way (orjson reads integers beyond 64 bits as floats)."""
    if _orjson_loads is not None:
        try:
            return _orjson_loads(text)
        except ValueError:  # orjson.JSONDecodeError
            pass
    return json.loads(text)


_TOKENS_MEMO: dict[str, tuple[str, ...]] = {}
"""A window's tokens by their stored JSON text: the records of a model's neurons share the corpus's
windows (~3,200 at 100,000 tokens), so a labelling run's loads decode each once per process and
hand out the same tuple (~0.4 ms of a record's ~2.2 ms load was decoding tokens again)."""
_TOKENS_MEMO_MAX = 8192
"""Windows the memo keeps before it starts afresh."""


def load_neuron_record(*, session: Session, model: str, neuron: NeuronId) -> NeuronRecord | None:
    """The stored :class:`core.NeuronRecord` of ``neuron``, or ``None`` when it was never recorded.

    Reads columns, not ORM objects (the labelling run's load stage: ~110 windows per neuron at the
    recorder's defaults, where building mapped instances cost about a quarter of the read)."""
    conn = session.connection()
    row = conn.execute(_RECORD_NEURON, {"model": model, "layer": neuron.layer, "index": neuron.index}).one_or_none()
    if row is None or row.recorded_at is None:
        return None
    kinds: dict[str, list[ActivationRecord]] = {"top": [], "random": [], "quantile": []}
    examples = conn.execute(_RECORD_EXAMPLES, {"neuron_id": row.id}).all()
    memo = _TOKENS_MEMO
    for kind, tokens, activations, window_id, split, quantile in examples:
        decoded = memo.get(tokens)
        if decoded is None:
            if len(memo) >= _TOKENS_MEMO_MAX:
                memo.clear()
            decoded = memo[tokens] = tuple(_json_loads(tokens))
        kinds[kind].append(
            ActivationRecord(
                tokens=decoded,
                activations=tuple(map(float, _json_loads(activations))),
                window_id=window_id,
                split=split,  # type: ignore[arg-type]
                kind=kind,  # type: ignore[arg-type]
                quantile=quantile,
            )
        )
    stats = None
    if row.stats:
        s = row.stats
        stats = NeuronStats(
            count=int(s["count"]), mean=s["mean"], std=s["std"], max=s["max"], min=s["min"],
            frac_active=s["frac_active"],
        )
    return NeuronRecord(
        model=model,
        neuron=NeuronId(row.layer, row.index),
        top=tuple(kinds["top"]),
        random=tuple(kinds["random"]),
        quantile=tuple(kinds["quantile"]),
        stats=stats,
        token_stats=token_stats_from_json(row.token_stats),
        prefix=tuple(row.prefix or ()),
    )


def recorded_neurons(*, session: Session, model: str, layer: int | None = None) -> list[NeuronId]:
    """Neurons of ``model`` (optionally one layer) whose activations are stored, sorted."""
    q = (
        select(Neuron.layer, Neuron.index)
        .join(Model, Model.id == Neuron.model_id)
        .where(Model.name == model, Neuron.recorded_at.is_not(None))
    )
    if layer is not None:
        q = q.where(Neuron.layer == layer)
    return [NeuronId(l, i) for l, i in session.execute(q.order_by(Neuron.layer, Neuron.index)).all()]


def explained_neurons(*, session: Session, model: str, explainer: str, version: str) -> set[NeuronId]:
    """Neurons of ``model`` that already have an explanation by ``explainer`` at ``version``."""
    q = (
        select(Neuron.layer, Neuron.index)
        .join(Model, Model.id == Neuron.model_id)
        .join(ExplanationRow, ExplanationRow.neuron_id == Neuron.id)
        .where(
            Model.name == model,
            ExplanationRow.explainer == explainer,
            ExplanationRow.explainer_version == version,
        )
        .distinct()
    )
    return {NeuronId(l, i) for l, i in session.execute(q).all()}


def failed_neurons(*, session: Session, model: str, explainer: str, version: str) -> dict[NeuronId, str]:
    """Neurons of ``model`` that ``explainer`` at ``version`` failed to explain, with the error
    of the last attempt."""
    q = (
        select(Neuron.layer, Neuron.index, ExplanationFailure.error)
        .join(Model, Model.id == Neuron.model_id)
        .join(ExplanationFailure, ExplanationFailure.neuron_id == Neuron.id)
        .where(
            Model.name == model,
            ExplanationFailure.explainer == explainer,
            ExplanationFailure.explainer_version == version,
        )
    )
    return {NeuronId(l, i): e for l, i, e in session.execute(q).all()}


def explanation_dict(row: ExplanationRow, scores: Sequence[Score] = ()) -> dict[str, Any]:
    """The public form of one explanation row."""
    return {
        "id": row.id,
        "explainer": row.explainer,
        "explainer_version": row.explainer_version,
        "rank": row.rank,
        "text": row.text,
        "structured": row.structured or {},
        "params": row.params or {},
        "score": row.score,
        "accepted": bool(row.accepted),
        "selected": bool(row.selected),
        "score_se": row.score_se,
        "ontology": {"name": row.ontology, "hash": row.ontology_hash} if row.ontology_hash else None,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "scores": [
            {
                "scorer": s.scorer,
                "simulator": s.simulator,
                "split": s.split,
                "score": s.score,
                "parts": s.parts or {},
                "n_tokens": s.n_tokens,
                "method": s.method,
            }
            for s in scores
        ],
    }


def _best_order():
    """The neuron's label first (``selected``), then by score (undefined last), then by id."""
    return (ExplanationRow.selected.desc(), ExplanationRow.score.desc().nulls_last(), ExplanationRow.id)


_EXPLANATION_COLUMNS = (
    ExplanationRow.id,
    ExplanationRow.explainer,
    ExplanationRow.explainer_version,
    ExplanationRow.rank,
    ExplanationRow.text,
    ExplanationRow.structured,
    ExplanationRow.params,
    ExplanationRow.score,
    ExplanationRow.accepted,
    ExplanationRow.selected,
    ExplanationRow.score_se,
    ExplanationRow.ontology,
    ExplanationRow.ontology_hash,
    ExplanationRow.created_at,
    ExplanationRow.updated_at,
)
_SCORE_COLUMNS = (
    Score.id.label("s_id"),
    Score.scorer,
    Score.simulator,
    Score.split,
    Score.score.label("s_score"),
    Score.parts,
    Score.n_tokens,
    Score.method,
)

# The statements of the server's hot reads, built once with bound parameters and run on the
# session's connection (Core execution), as the load stage's above. Measured in one thread on the
# 2-core machine (loaded): a select built per call and run through the ORM session cost ~200 us CPU,
# a built one on the connection ~90. Per call, PostgreSQL (SQLite), two alternations: get_neuron
# 1.75-2.01 -> 0.66-0.68 ms (1.17 -> 0.32), best_label 0.78-0.86 -> 0.18-0.19 (0.48 -> 0.06),
# list_neurons 1.41-1.44 -> 0.42-0.43 (1.33 -> 0.50); the same answers (tests/service/test_query_counts.py).
_F = ExplanationFailure.__table__.c
_NEURON_AND_FAILURES = (  # the neuron with its failed attempts (usually none: one row)
    select(_N.id, _N.layer, _N.index, _N.stats, _N.recorded_at, _F.explainer, _F.explainer_version,
           _F.error, _F.attempts, _F.last_at)
    .select_from(Neuron.__table__.join(Model.__table__, _M.id == _N.model_id)
                 .outerjoin(ExplanationFailure.__table__, _F.neuron_id == _N.id))
    .where(_M.name == bindparam("model"), _N.layer == bindparam("layer"), _N.index == bindparam("index"))
    .order_by(_F.explainer, _F.explainer_version)
)
_NEURON_EXPLANATIONS = (
    select(*_EXPLANATION_COLUMNS, *_SCORE_COLUMNS)
    .outerjoin(Score, Score.explanation_id == ExplanationRow.id)
    .where(ExplanationRow.neuron_id == bindparam("neuron_id"))
    .order_by(*_best_order(), Score.id)
)
_EXAMPLE_COLUMNS = (_E.kind, _E.position, _E.split, _E.window_id, _E.quantile)
_NEURON_EXAMPLES = {  # by raw_examples: tokens and activations as stored JSON text, or decoded
    raw: select(*_EXAMPLE_COLUMNS,
                (cast(_E.tokens, Text) if raw else _E.tokens).label("tokens"),
                (cast(_E.activations, Text) if raw else _E.activations).label("activations"),
                _E.max_activation)
    .where(_E.neuron_id == bindparam("neuron_id"))
    .order_by(_E.kind, _E.position)
    for raw in (False, True)
}
_BEST_LABEL = (  # the selected (else best) accepted explanation with its scores, one statement
    select(*_EXPLANATION_COLUMNS, *_SCORE_COLUMNS)
    .outerjoin(Score, Score.explanation_id == ExplanationRow.id)
    .where(ExplanationRow.id == (
        select(ExplanationRow.id)
        .join(Neuron, Neuron.id == ExplanationRow.neuron_id)
        .join(Model, Model.id == Neuron.model_id)
        .where(Model.name == bindparam("model"), Neuron.layer == bindparam("layer"),
               Neuron.index == bindparam("index"), ExplanationRow.accepted)
        .order_by(*_best_order())
        .limit(1)
        .scalar_subquery()))
    .order_by(Score.id)
)


def _connection(session: Session):
    """The session's connection, after flushing what the session holds unflushed (as
    ``session.execute`` would: a caller may read what it has just added in the same session)."""
    if session.new or session.dirty or session.deleted:
        session.flush()
    return session.connection()


def _score_dict(r: Any) -> dict[str, Any]:
    return {"scorer": r.scorer, "simulator": r.simulator, "split": r.split, "score": r.s_score,
            "parts": r.parts or {}, "n_tokens": r.n_tokens, "method": r.method}


@dataclass(frozen=True)
class RawJSON:
    """A value that is already JSON text, as the database stores it (written into an answer
    as it is, not parsed and written again)."""

    text: str


def get_neuron(*, session: Session, model: str, layer: int, index: int,
               raw_examples: bool = False) -> dict[str, Any] | None:
    """A neuron with its statistics, examples, explanations (best first, with their scores),
    best accepted label and failed explanation attempts; ``None`` when the neuron is unknown.
    Three indexed statements, built once (the neuron with its failures, its explanations with
    their scores, its examples). ``raw_examples``: each example's ``tokens`` and ``activations``
    are :class:`RawJSON` (the stored JSON text; a server writes it into its answer unparsed)."""
    conn = _connection(session)
    rows = conn.execute(_NEURON_AND_FAILURES, {"model": model, "layer": layer, "index": index}).all()
    if not rows:
        return None
    row = rows[0]
    explanations: dict[int, dict[str, Any]] = {}
    for r in conn.execute(_NEURON_EXPLANATIONS, {"neuron_id": row.id}).all():
        e = explanations.get(r.id)
        if e is None:
            e = explanations[r.id] = explanation_dict(r)
        if r.s_id is not None:
            e["scores"].append(_score_dict(r))
    examples = conn.execute(_NEURON_EXAMPLES[raw_examples], {"neuron_id": row.id}).all()
    ordered = list(explanations.values())
    return {
        "model": model,
        "layer": row.layer,
        "index": row.index,
        "stats": row.stats,
        "recorded_at": row.recorded_at,
        "examples": [
            {
                "kind": ex.kind,
                "position": ex.position,
                "split": ex.split,
                "window_id": ex.window_id,
                "quantile": ex.quantile,
                "tokens": RawJSON(ex.tokens) if raw_examples else list(ex.tokens),
                "activations": RawJSON(ex.activations) if raw_examples else list(ex.activations),
                "max_activation": ex.max_activation,
            }
            for ex in examples
        ],
        "explanations": ordered,
        # the selected label (first in ``ordered``); rows written around the write path: the best accepted
        "best_label": next((e for e in ordered if e["accepted"]), None),
        "failures": [
            {"explainer": f.explainer, "explainer_version": f.explainer_version, "error": f.error,
             "attempts": f.attempts, "last_at": f.last_at}
            for f in rows if f.explainer is not None
        ],
    }


def best_label(*, session: Session, model: str, layer: int, index: int) -> dict[str, Any] | None:
    """The neuron's label: its selected accepted explanation (:func:`storage.writes.select_labels`), or
    ``None``. One statement, built once (the label's row with its scores)."""
    rows = _connection(session).execute(_BEST_LABEL, {"model": model, "layer": layer, "index": index}).all()
    if not rows:
        return None
    out = {"model": model, "layer": layer, "index": index, **explanation_dict(rows[0])}
    out["scores"] = [_score_dict(r) for r in rows if r.s_id is not None]
    return out


@lru_cache(maxsize=64)
def _neurons_page(model: bool, layer: bool, explainer: bool, min_score: bool, labelled: bool | None):
    """The statement of :func:`list_neurons` for one combination of its filters (which are given,
    and ``labelled``), built once with bound parameters (building it took about two thirds of a
    call's CPU)."""
    e_cond = [ExplanationRow.neuron_id == Neuron.id]
    if explainer:
        e_cond.append(ExplanationRow.explainer == bindparam("explainer"))
    page = select(Neuron.id, Neuron.layer, Neuron.index, Neuron.recorded_at, Model.name).join(
        Model, Model.id == Neuron.model_id)
    if model:
        page = page.where(Model.name == bindparam("model"))
    if layer:
        page = page.where(Neuron.layer == bindparam("layer"))
    if explainer:
        page = page.where(exists().where(*e_cond))
    if min_score:
        page = page.where(exists().where(*e_cond, ExplanationRow.score >= bindparam("min_score")))
    if labelled is not None:
        has = exists().where(ExplanationRow.neuron_id == Neuron.id, ExplanationRow.accepted)
        page = page.where(has if labelled else ~has)
    # one model: its (model_id, layer, index) index gives the order without a sort
    order = (Neuron.layer, Neuron.index) if model else (Model.name, Neuron.layer, Neuron.index)
    page = page.order_by(*order).limit(bindparam("limit")).offset(bindparam("offset")).subquery()
    # the per-neuron figures are computed for the page only, not for the rows an offset skips
    p_cond = [ExplanationRow.neuron_id == page.c.id]
    if explainer:
        p_cond.append(ExplanationRow.explainer == bindparam("explainer"))
    # the label (text and score) by one sorted subquery per neuron, its row joined by id (two such
    # subqueries before: PostgreSQL backend 0.69 -> 0.61-0.67 ms CPU a 50-row page)
    label_id = (
        select(ExplanationRow.id)
        .where(ExplanationRow.neuron_id == page.c.id, ExplanationRow.accepted)
        .order_by(*_best_order())
        .limit(1)
        .scalar_subquery()
    )
    label = aliased(ExplanationRow, name="label_row")
    best_score = select(func.max(ExplanationRow.score)).where(*p_cond).scalar_subquery()
    n_expl = select(func.count(ExplanationRow.id)).where(*p_cond).scalar_subquery()
    return (
        select(
            page.c.name,
            page.c.layer,
            page.c.index,
            page.c.recorded_at,
            n_expl.label("n_explanations"),
            best_score.label("best_score"),
            label.text.label("label"),
            label.score.label("label_score"),
        )
        .select_from(page.outerjoin(label, label.id == label_id))
        .order_by(page.c.name, page.c.layer, page.c.index)
    )


def list_neurons(
    *,
    session: Session,
    model: str | None = None,
    layer: int | None = None,
    explainer: str | None = None,
    min_score: float | None = None,
    labelled: bool | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Neurons filtered by model, layer, explainer, minimum explanation score and whether they
    have an accepted label; ordered by model, layer, index; paginated. One statement: the page
    of neurons is chosen first, its per-neuron figures computed for that page only.

    Each row: model, layer, index, recorded (bool), n_explanations, best_score (over the
    explanations that pass the explainer filter), label and label_score (best accepted)."""
    params: dict[str, Any] = {"model": model, "layer": layer, "explainer": explainer, "min_score": min_score}
    params = {k: v for k, v in params.items() if v is not None}
    q = _neurons_page(*(v is not None for v in (model, layer, explainer, min_score)), labelled)
    return [
        {
            "model": r.name,
            "layer": r.layer,
            "index": r.index,
            "recorded": r.recorded_at is not None,
            "n_explanations": int(r.n_explanations or 0),
            "best_score": r.best_score,
            "label": r.label,
            "label_score": r.label_score,
        }
        for r in _connection(session).execute(q, {**params, "limit": limit, "offset": offset}).all()
    ]


def list_models(*, session: Session) -> list[dict[str, Any]]:
    """Every model with its neuron, recorded-neuron, explanation and labelled-neuron counts."""
    n_neurons = select(func.count(Neuron.id)).where(Neuron.model_id == Model.id).scalar_subquery()
    n_recorded = (
        select(func.count(Neuron.id))
        .where(Neuron.model_id == Model.id, Neuron.recorded_at.is_not(None))
        .scalar_subquery()
    )
    n_expl = (
        select(func.count(ExplanationRow.id))
        .join(Neuron, Neuron.id == ExplanationRow.neuron_id)
        .where(Neuron.model_id == Model.id)
        .scalar_subquery()
    )
    n_labelled = (
        select(func.count(func.distinct(ExplanationRow.neuron_id)))
        .join(Neuron, Neuron.id == ExplanationRow.neuron_id)
        .where(Neuron.model_id == Model.id, ExplanationRow.accepted)
        .scalar_subquery()
    )
    q = select(Model, n_neurons, n_recorded, n_expl, n_labelled).order_by(Model.name)
    return [
        {
            "name": m.name,
            "architecture": m.architecture,
            "source": m.source,
            "n_layers": m.n_layers,
            "n_units": m.n_units,
            "unit_map": m.unit_map or {},
            "created_at": m.created_at,
            "n_neurons": int(a or 0),
            "n_recorded": int(b or 0),
            "n_explanations": int(c or 0),
            "n_labelled": int(d or 0),
        }
        for m, a, b, c, d in session.execute(q).all()
    ]


SCORE_BINS = tuple(round(-1.0 + 0.1 * i, 1) for i in range(21))
"""Edges of the score histogram in :func:`model_overview` (-1.0, -0.9, …, 1.0)."""


def model_overview(*, session: Session, model: str) -> dict[str, Any] | None:
    """Per layer: neurons, labelled neurons and fraction, and a histogram of each neuron's best
    explanation score (edges :data:`SCORE_BINS`); ``None`` for an unknown model."""
    m = session.execute(select(Model).where(Model.name == model)).scalar_one_or_none()
    if m is None:
        return None
    rows = session.execute(
        select(
            Neuron.layer,
            func.max(ExplanationRow.score),
            func.count(ExplanationRow.id),
            func.sum(cast(ExplanationRow.accepted, Integer)),
        )
        .select_from(Neuron)
        .outerjoin(ExplanationRow, and_(ExplanationRow.neuron_id == Neuron.id))
        .where(Neuron.model_id == m.id)
        .group_by(Neuron.id, Neuron.layer)
    ).all()
    layers: dict[int, dict[str, Any]] = {}
    for layer, best, n_expl, n_acc in rows:
        d = layers.setdefault(
            layer,
            {"layer": layer, "n_neurons": 0, "n_explained": 0, "n_labelled": 0, "histogram": [0] * 20,
             "_scores": []},
        )
        d["n_neurons"] += 1
        if n_expl:
            d["n_explained"] += 1
        if n_acc:
            d["n_labelled"] += 1
        if best is not None:
            d["_scores"].append(best)
            b = min(19, max(0, int((best + 1.0) / 0.1)))
            d["histogram"][b] += 1
    out = []
    for layer in sorted(layers):
        d = layers[layer]
        scores = sorted(d.pop("_scores"))
        d["labelled_fraction"] = d["n_labelled"] / d["n_neurons"] if d["n_neurons"] else 0.0
        d["mean_best_score"] = sum(scores) / len(scores) if scores else None
        d["median_best_score"] = float(statistics.median(scores)) if scores else None
        out.append(d)
    total = sum(d["n_neurons"] for d in out)
    labelled = sum(d["n_labelled"] for d in out)
    return {
        "model": m.name,
        "architecture": m.architecture,
        "n_layers": m.n_layers,
        "n_units": m.n_units,
        "n_neurons": total,
        "n_labelled": labelled,
        "labelled_fraction": labelled / total if total else 0.0,
        "histogram_edges": list(SCORE_BINS),
        "layers": out,
    }

