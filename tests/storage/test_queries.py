"""Writes and reads on both engines: idempotency, versions, validation, best labels, filters."""

from __future__ import annotations

import math
import os

import pytest
from sqlalchemy import select

from neurolabel.core.errors import StorageError
from neurolabel.core.types import ActivationRecord, NeuronId
from neurolabel.storage import db
from neurolabel.storage import queries as q
from neurolabel.storage.models import Score
from tests.storage.factories import counts, explanation, hash_embedder, record


def _seed(url: str) -> None:
    with db.session_scope(url) as s:
        q.upsert_model(session=s, name="tiny", architecture="LlamaForCausalLM", source="test",
                       unit_map={"mlp": "model.layers.{layer}.mlp.act_fn"}, n_layers=2, n_units=8)
        q.save_neuron_records(session=s, records=[record(0, i) for i in range(4)] + [record(1, 0)])
        q.save_explanations(
            session=s,
            explanations=[
                explanation(0, 0, "cats and kittens", 0.8),
                explanation(0, 0, "animals", 0.4, rank=1),
                explanation(0, 1, "numbers and digits", 0.2),
                explanation(0, 2, "the letter q", None, explainer="llm_summary"),
                explanation(1, 0, "rivers and lakes", 0.6, explainer="concept_induction"),
            ],
            threshold=0.3,
            embedder=hash_embedder,
        )


def test_record_round_trip_and_idempotent_rewrite(migrated_url: str) -> None:
    _seed(migrated_url)
    with db.session_scope(migrated_url) as s:
        before = counts(s)
        got = q.load_neuron_record(session=s, model="tiny", neuron=NeuronId(0, 2))
        assert got == record(0, 2)
        assert q.load_neuron_record(session=s, model="tiny", neuron=NeuronId(5, 5)) is None
        assert q.recorded_neurons(session=s, model="tiny", layer=0) == [NeuronId(0, i) for i in range(4)]
        assert len(q.recorded_neurons(session=s, model="tiny")) == 5
    # the same work again, and a re-recording with fewer windows
    _seed(migrated_url)
    with db.session_scope(migrated_url) as s:
        assert counts(s) == before
        q.save_neuron_records(session=s, records=[record(0, 2, scale=2.0, n_top=1)])
        assert q.load_neuron_record(session=s, model="tiny", neuron=NeuronId(0, 2)) == record(0, 2, scale=2.0, n_top=1)
        assert counts(s)["examples"] == before["examples"] - 2
        assert q.list_models(session=s)[0]["n_units"] == 8


def test_batched_writes_commit_per_batch(migrated_url: str) -> None:
    recs = [record(2, i) for i in range(7)]
    session = db.session_factory(db.get_engine(migrated_url))()
    try:
        assert q.save_neuron_records(session=session, records=iter(recs), batch_size=3) == 7
        # committed without the caller committing: another connection sees every row
        with db.session_scope(migrated_url) as other:
            assert len(q.recorded_neurons(session=other, model="tiny", layer=2)) == 7
    finally:
        session.close()


def test_explanations_versions_rescoring_and_best_label(migrated_url: str) -> None:
    _seed(migrated_url)
    with db.session_scope(migrated_url) as s:
        best = q.best_label(session=s, model="tiny", layer=0, index=0)
        assert best["text"] == "cats and kittens" and best["accepted"] and best["score"] == pytest.approx(0.8)
        assert best["scores"][0]["parts"] == {"top_only": 0.4, "random_only": None}
        assert q.best_label(session=s, model="tiny", layer=0, index=1) is None  # 0.2 < threshold
        assert q.best_label(session=s, model="tiny", layer=0, index=2) is None  # unscored
        # same key again: replaces text and score, no new row
        ids = q.save_explanations(session=s, explanations=[explanation(0, 1, "digits 0-9", 0.9)],
                                  threshold=0.3, embedder=hash_embedder)
        # a new explainer version adds a row, old one kept
        ids2 = q.save_explanations(session=s, explanations=[explanation(0, 1, "counting words", 0.5, version="2")],
                                   threshold=0.3, embedder=hash_embedder)
        assert ids != ids2
    with db.session_scope(migrated_url) as s:
        n = q.get_neuron(session=s, model="tiny", layer=0, index=1)
        texts = [(e["explainer_version"], e["text"], e["score"]) for e in n["explanations"]]
        assert texts == [("1", "digits 0-9", pytest.approx(0.9)), ("2", "counting words", pytest.approx(0.5))]
        assert n["best_label"]["text"] == "digits 0-9"
        assert n["stats"]["count"] == 500 and len(n["examples"]) == 7
        assert s.execute(select(Score).where(Score.explanation_id == ids[0])).scalars().one().score == pytest.approx(0.9)
        assert q.explained_neurons(session=s, model="tiny", explainer="pmi", version="2") == {NeuronId(0, 1)}
        assert q.explained_neurons(session=s, model="tiny", explainer="pmi", version="1") == {NeuronId(0, 0), NeuronId(0, 1)}
        # re-storing unscored drops the stale score
        q.save_explanations(session=s, explanations=[explanation(0, 1, "digits 0-9", None)], embedder=hash_embedder)
        assert s.execute(select(Score).where(Score.explanation_id == ids[0])).first() is None
        assert q.get_neuron(session=s, model="tiny", layer=9, index=9) is None


def test_list_neurons_filters_and_overview(migrated_url: str) -> None:
    _seed(migrated_url)
    with db.session_scope(migrated_url) as s:
        key = lambda rows: [(r["layer"], r["index"]) for r in rows]  # noqa: E731
        assert key(q.list_neurons(session=s, model="tiny")) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
        assert key(q.list_neurons(session=s, layer=1)) == [(1, 0)]
        assert key(q.list_neurons(session=s, explainer="llm_summary")) == [(0, 2)]
        assert key(q.list_neurons(session=s, min_score=0.5)) == [(0, 0), (1, 0)]
        assert key(q.list_neurons(session=s, labelled=True)) == [(0, 0), (1, 0)]
        assert key(q.list_neurons(session=s, labelled=False)) == [(0, 1), (0, 2), (0, 3)]
        assert key(q.list_neurons(session=s, limit=2, offset=1)) == [(0, 1), (0, 2)]
        row = q.list_neurons(session=s, layer=0, limit=1)[0]
        assert row["label"] == "cats and kittens" and row["n_explanations"] == 2 and row["recorded"]
        assert q.list_neurons(session=s, model="nope") == []
        ov = q.model_overview(session=s, model="tiny")
        assert ov["n_neurons"] == 5 and ov["n_labelled"] == 2
        layer0 = ov["layers"][0]
        assert layer0["n_labelled"] == 1 and layer0["labelled_fraction"] == pytest.approx(0.25)
        assert sum(layer0["histogram"]) == 2  # neurons with a scored explanation
        assert q.model_overview(session=s, model="nope") is None
        models = q.list_models(session=s)
        assert models[0]["n_neurons"] == 5 and models[0]["n_explanations"] == 5 and models[0]["n_labelled"] == 2


def _broken(rec, **changes):
    """A record whose window bypassed ActivationRecord's own checks (as a buggy producer might)."""
    w = rec.top[0]
    bad = object.__new__(ActivationRecord)
    for f in ("tokens", "activations", "window_id", "split", "kind", "quantile"):
        object.__setattr__(bad, f, changes.get(f, getattr(w, f)))
    from dataclasses import replace

    return replace(rec, top=(bad, *rec.top[1:]))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"activations": (0.0, math.nan, 1.0, 0.0, 0.0, 0.0)}, "not finite"),
        ({"activations": (0.0, 1.0)}, "6 tokens but 2 activations"),
    ],
)
def test_bad_records_raise_and_change_nothing(migrated_url: str, change, message) -> None:
    _seed(migrated_url)
    with db.session_scope(migrated_url) as s:
        before = counts(s)
    with pytest.raises(StorageError, match=message) as info:
        with db.session_scope(migrated_url) as s:
            q.save_neuron_records(session=s, records=[record(0, 0, scale=3.0), _broken(record(0, 3), **change)])
    assert "tiny 0:3" in str(info.value) and "top[0]" in str(info.value)
    with db.session_scope(migrated_url) as s:
        assert counts(s) == before
        assert q.load_neuron_record(session=s, model="tiny", neuron=NeuronId(0, 0)) == record(0, 0)


def test_bad_explanations_raise(sqlite_migrated: str) -> None:
    with db.session_scope(sqlite_migrated) as s:
        with pytest.raises(StorageError, match="text is empty"):
            q.save_explanations(session=s, explanations=[explanation(0, 0, "  ", 0.1)], embedder=hash_embedder)
        with pytest.raises(StorageError, match="not finite"):
            q.save_explanations(session=s, explanations=[explanation(0, 0, "x", math.inf)], embedder=hash_embedder)


def test_sqlite_is_wal_with_busy_timeout(sqlite_migrated: str) -> None:
    with db.get_engine(sqlite_migrated).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.SQLITE_BUSY_TIMEOUT_MS
    assert os.path.exists(sqlite_migrated.removeprefix("sqlite:///"))


def test_default_url_comes_from_settings(monkeypatch, tmp_path) -> None:
    from neurolabel.core.settings import get_settings

    monkeypatch.setenv("NEUROLABEL_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    get_settings.cache_clear()
    try:
        assert db.normalize_url() == f"sqlite:///{tmp_path / 'x.db'}"
        assert db.normalize_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
        with pytest.raises(StorageError, match="not a valid"):
            db.normalize_url("nonsense")
    finally:
        get_settings.cache_clear()
