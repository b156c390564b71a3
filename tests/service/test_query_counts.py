"""Reads under load: neuron lookup, best label and neuron lists run a fixed number of SQL
statements per request however many neurons, explanations and scores they return (no N+1),
counted on the server's engine with an SQLAlchemy event listener over real HTTP."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from neurolabel.core.types import NeuronId
from neurolabel.service.app import create_app
from neurolabel.storage import db
from neurolabel.storage import queries as q
from tests.service.live import client, live_server
from tests.storage.factories import explanation, hash_embedder, record


def _grow(url: str, layer: int, n_neurons: int, per_neuron: int) -> None:
    with db.session_scope(url) as s:
        q.save_neuron_records(session=s, records=[record(layer, i, model="m") for i in range(n_neurons)])
        q.save_explanations(session=s, embedder=hash_embedder, threshold=0.3, explanations=[
            explanation(layer, i, f"label {layer} {i} {r}", 0.3 + 0.05 * r, model="m", rank=r)
            for i in range(n_neurons) for r in range(per_neuron)])
        q.record_failures(session=s, model="m", failures=[
            (NeuronId(layer, i), "llm_summary", "1", "unparseable") for i in range(n_neurons)])


@pytest.mark.postgres
def test_reads_run_a_bounded_number_of_statements(pg_url: str) -> None:
    url = db.normalize_url(pg_url)
    db.upgrade(url)
    _grow(url, 0, 2, 1)  # small: layer 0, one explanation per neuron
    _grow(url, 1, 40, 8)  # large: layer 1, eight per neuron
    app = create_app(url)
    statements: list[str] = []
    event.listen(app.state.engine, "before_cursor_execute",
                 lambda conn, cursor, sql, params, context, many: statements.append(sql))

    def count(http, path: str, **params) -> tuple[int, dict]:
        statements.clear()
        r = http.get(path, params=params)
        assert r.status_code == 200, r.text
        return len(statements), r.json()

    try:
        with live_server(app) as base, client(base) as http:
            small, body = count(http, "/v1/models/m/neurons/0/0")
            large, big = count(http, "/v1/models/m/neurons/1/0")
            assert len(body["explanations"]) == 1 and len(big["explanations"]) == 8
            assert len(big["examples"]) == len(body["examples"]) > 0 and big["failures"]
            assert small == large == 3, statements  # the neuron with its failures, explanations, examples
            small, _ = count(http, "/v1/models/m/neurons/0/0/label")
            large, _ = count(http, "/v1/models/m/neurons/1/7/label")
            assert small == large == 1, statements
            small, page = count(http, "/v1/models/m/neurons", layer=0)
            large, big = count(http, "/v1/models/m/neurons", layer=1, limit=40)
            assert len(page["items"]) == 2 and len(big["items"]) == 40
            assert all(i["n_explanations"] == 8 and i["label"] for i in big["items"])
            filtered, _ = count(http, "/v1/models/m/neurons", min_score=0.5, explainer="pmi", labelled=True)
            assert small == large == filtered == 1, statements
    finally:
        app.state.engine.dispose()


# The reads as they were before their statements were built once and run on the connection (ORM
# statements built per call, four statements for a neuron, two for its label): the reference the
# built statements must answer exactly as.
def _ref_get_neuron(session, model: str, layer: int, index: int, raw_examples: bool):
    from sqlalchemy import Text, cast, select

    from neurolabel.storage.models import Example, ExplanationFailure, ExplanationRow, Model, Neuron, Score
    from neurolabel.storage.reads import _EXPLANATION_COLUMNS, _SCORE_COLUMNS, RawJSON, _best_order, explanation_dict

    row = session.execute(
        select(Neuron.id, Neuron.layer, Neuron.index, Neuron.stats, Neuron.recorded_at)
        .join(Model, Model.id == Neuron.model_id)
        .where(Model.name == model, Neuron.layer == layer, Neuron.index == index)).one_or_none()
    if row is None:
        return None
    explanations: dict = {}
    for r in session.execute(select(*_EXPLANATION_COLUMNS, *_SCORE_COLUMNS)
                             .outerjoin(Score, Score.explanation_id == ExplanationRow.id)
                             .where(ExplanationRow.neuron_id == row.id).order_by(*_best_order(), Score.id)).all():
        e = explanations.get(r.id)
        if e is None:
            e = explanations[r.id] = explanation_dict(r)
        if r.s_id is not None:
            e["scores"].append({"scorer": r.scorer, "simulator": r.simulator, "split": r.split, "score": r.s_score,
                                "parts": r.parts or {}, "n_tokens": r.n_tokens, "method": r.method})
    tokens, activations = ((cast(Example.tokens, Text), cast(Example.activations, Text)) if raw_examples
                           else (Example.tokens, Example.activations))
    examples = session.execute(
        select(Example.kind, Example.position, Example.split, Example.window_id, Example.quantile,
               tokens.label("tokens"), activations.label("activations"), Example.max_activation)
        .where(Example.neuron_id == row.id).order_by(Example.kind, Example.position)).all()
    ordered = list(explanations.values())
    failures = session.execute(
        select(ExplanationFailure.explainer, ExplanationFailure.explainer_version, ExplanationFailure.error,
               ExplanationFailure.attempts, ExplanationFailure.last_at)
        .where(ExplanationFailure.neuron_id == row.id)
        .order_by(ExplanationFailure.explainer, ExplanationFailure.explainer_version)).all()
    return {
        "model": model, "layer": row.layer, "index": row.index, "stats": row.stats, "recorded_at": row.recorded_at,
        "examples": [{"kind": ex.kind, "position": ex.position, "split": ex.split, "window_id": ex.window_id,
                      "quantile": ex.quantile,
                      "tokens": RawJSON(ex.tokens) if raw_examples else list(ex.tokens),
                      "activations": RawJSON(ex.activations) if raw_examples else list(ex.activations),
                      "max_activation": ex.max_activation} for ex in examples],
        "explanations": ordered,
        "best_label": next((e for e in ordered if e["accepted"]), None),
        "failures": [{"explainer": f.explainer, "explainer_version": f.explainer_version, "error": f.error,
                      "attempts": f.attempts, "last_at": f.last_at} for f in failures],
    }


def _ref_best_label(session, model: str, layer: int, index: int):
    from sqlalchemy import select

    from neurolabel.storage.models import ExplanationRow, Model, Neuron, Score
    from neurolabel.storage.reads import _EXPLANATION_COLUMNS, _best_order, explanation_dict

    row = session.execute(
        select(*_EXPLANATION_COLUMNS).join(Neuron, Neuron.id == ExplanationRow.neuron_id)
        .join(Model, Model.id == Neuron.model_id)
        .where(Model.name == model, Neuron.layer == layer, Neuron.index == index, ExplanationRow.accepted)
        .order_by(*_best_order()).limit(1)).one_or_none()
    if row is None:
        return None
    scores = session.execute(select(Score).where(Score.explanation_id == row.id).order_by(Score.id)).scalars().all()
    return {"model": model, "layer": layer, "index": index, **explanation_dict(row, scores)}


def test_built_reads_answer_as_the_reference(db_url: str) -> None:
    """get_neuron, best_label and list_neurons (statements built once, run on the connection) give
    what the per-call ORM statements gave, on every neuron of a varied database: several
    explanations and scores, unscored, rejected and selected ones, failures (two on one neuron),
    unknown neurons; list_neurons under every combination of its filters."""
    import itertools

    from neurolabel.core.types import NeuronId
    from neurolabel.storage.reads import RawJSON
    from tests.service.live import seed

    url = db.normalize_url(db_url)
    db.upgrade(url)
    seed(url)  # model "tiny": a selected label, a rejected one, a failure, an unexplained neuron
    _grow(url, 0, 3, 1)
    _grow(url, 1, 6, 4)
    with db.session_scope(url) as s:
        q.save_explanations(session=s, embedder=hash_embedder, threshold=0.3, explanations=[
            explanation(1, 2, "unscored", None, model="m", explainer="tokens"),
            explanation(1, 3, "weak", 0.1, model="m", explainer="tokens")])
        q.record_failures(session=s, model="m", failures=[(NeuronId(1, 4), "concept_induction", "2", "no class")])
    neurons = [("tiny", 0, 1), ("tiny", 0, 2), ("tiny", 1, 0), ("tiny", 1, 3), ("tiny", 5, 5), ("nope", 0, 0)]
    neurons += [("m", 0, i) for i in range(4)] + [("m", 1, i) for i in range(7)]

    with db.session_scope(url) as s:
        seen = 0
        for model, layer, index in neurons:
            for raw in (False, True):
                got = q.get_neuron(session=s, model=model, layer=layer, index=index, raw_examples=raw)
                want = _ref_get_neuron(s, model, layer, index, raw)
                assert got == want, (model, layer, index, raw)  # RawJSON compares by its text
                if got:
                    assert all(isinstance(e["tokens"], RawJSON) == raw for e in got["examples"])
                    seen += bool(got["failures"]) + bool(got["explanations"])
            assert q.best_label(session=s, model=model, layer=layer, index=index) == \
                _ref_best_label(s, model, layer, index), (model, layer, index)
        assert seen > 20
        assert len(q.get_neuron(session=s, model="m", layer=1, index=4)["failures"]) == 2
        for model, layer, explainer, min_score, labelled in itertools.product(
                (None, "m", "tiny"), (None, 1), (None, "pmi", "tokens"), (None, 0.4), (None, True, False)):
            for limit, offset in ((50, 0), (3, 2)):
                kw = dict(model=model, layer=layer, explainer=explainer, min_score=min_score, labelled=labelled,
                          limit=limit, offset=offset)
                assert q.list_neurons(session=s, **kw) == _ref_list_neurons(s, **kw), kw


def _ref_list_neurons(session, *, model, layer, explainer, min_score, labelled, limit, offset):
    from sqlalchemy import exists, func, select

    from neurolabel.storage.models import ExplanationRow, Model, Neuron
    from neurolabel.storage.reads import _best_order

    e_cond = [ExplanationRow.neuron_id == Neuron.id]
    if explainer is not None:
        e_cond.append(ExplanationRow.explainer == explainer)
    page = select(Neuron.id, Neuron.layer, Neuron.index, Neuron.recorded_at, Model.name).join(
        Model, Model.id == Neuron.model_id)
    if model is not None:
        page = page.where(Model.name == model)
    if layer is not None:
        page = page.where(Neuron.layer == layer)
    if explainer is not None:
        page = page.where(exists().where(*e_cond))
    if min_score is not None:
        page = page.where(exists().where(*e_cond, ExplanationRow.score >= min_score))
    if labelled is not None:
        has = exists().where(ExplanationRow.neuron_id == Neuron.id, ExplanationRow.accepted)
        page = page.where(has if labelled else ~has)
    order = (Neuron.layer, Neuron.index) if model is not None else (Model.name, Neuron.layer, Neuron.index)
    page = page.order_by(*order).limit(limit).offset(offset).subquery()
    p_cond = [ExplanationRow.neuron_id == page.c.id]
    if explainer is not None:
        p_cond.append(ExplanationRow.explainer == explainer)
    best = [select(c).where(ExplanationRow.neuron_id == page.c.id, ExplanationRow.accepted)
            .order_by(*_best_order()).limit(1).scalar_subquery() for c in (ExplanationRow.text, ExplanationRow.score)]
    best_score = select(func.max(ExplanationRow.score)).where(*p_cond).scalar_subquery()
    n_expl = select(func.count(ExplanationRow.id)).where(*p_cond).scalar_subquery()
    rows = session.execute(select(page.c.name, page.c.layer, page.c.index, page.c.recorded_at,
                                  n_expl.label("n"), best_score.label("best"), best[0].label("label"),
                                  best[1].label("label_score"))
                           .order_by(page.c.name, page.c.layer, page.c.index)).all()
    return [{"model": r.name, "layer": r.layer, "index": r.index, "recorded": r.recorded_at is not None,
             "n_explanations": int(r.n or 0), "best_score": r.best, "label": r.label,
             "label_score": r.label_score} for r in rows]
