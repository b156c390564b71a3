"""A labelling run's write finds the rows it replaces through the tables' unique indexes: on SQLite
no statement of a write scans a whole table of labels, neurons or failures (a row-value ``IN``
alone made SQLite scan the whole unique index, so each write's cost grew with the database), and
the lookups select exactly the written keys."""

from __future__ import annotations

from sqlalchemy import event, select

from neurolabel.core.types import NeuronId
from neurolabel.storage import db
from neurolabel.storage import queries as q
from neurolabel.storage.models import ExplanationRow, Neuron
from tests.storage.factories import explanation, hash_embedder

TABLES = ("explanations", "neurons", "explanation_failures", "scores")


def _write(url: str, neurons, *, rank_texts=("one", "two", "three"), failures=()) -> None:
    with db.session_scope(url) as s:
        q.save_explanations(session=s, embedder=hash_embedder, explanations=[
            explanation(layer, index, f"{text} {layer}:{index}", 0.1 * r, explainer=ex, rank=r)
            for layer, index in neurons for ex in ("ci", "pmi") for r, text in enumerate(rank_texts)])
        if failures:
            q.record_failures(session=s, model="tiny", failures=failures)


def test_no_statement_of_a_write_scans_a_table(sqlite_migrated: str) -> None:
    url = sqlite_migrated
    _write(url, [(0, i) for i in range(40)] + [(1, i) for i in range(40)],
           failures=[(NeuronId(2, 0), "ci", "1", "no class")])
    statements: list[tuple[str, object]] = []
    engine = db.get_engine(url)

    def seen(conn, cursor, statement, parameters, context, executemany):
        if not executemany and statement.lstrip().upper().startswith(("SELECT", "DELETE")):
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", seen)
    try:  # one neuron of layer 0 rewritten, two new ones over two layers, a failure cleared
        _write(url, [(0, 3), (2, 0), (3, 5)])
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert statements
    with engine.connect() as conn:
        for statement, parameters in statements:
            plan = [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()]
            scans = [step for step in plan if step.startswith("SCAN") and step.split()[1] in TABLES]
            assert not scans, (statement, plan)
    with db.session_scope(url) as s:  # the written keys, and only those, were replaced or added
        rows = s.execute(select(Neuron.layer, Neuron.index, ExplanationRow.explainer, ExplanationRow.rank,
                                ExplanationRow.text).join(Neuron, Neuron.id == ExplanationRow.neuron_id)).all()
    assert len(rows) == (80 + 2) * 6
    assert {r.text for r in rows if (r.layer, r.index) == (3, 5)} == {"one 3:5", "two 3:5", "three 3:5"}
    with db.session_scope(url) as s:
        assert q.failed_neurons(session=s, model="tiny", explainer="ci", version="1") == {}
