"""The neuron's label (``ExplanationRow.selected``) is chosen by the one-standard-error rule of
:func:`scoring.validate.choose_label` over the stored scores, their standard errors and the
explain-split tokens each label was fitted on; every write of a neuron's explanations chooses
again; the reads (neuron page, best label, neuron list, label pages) show the selected one;
the migration gives existing databases the label they had (the highest-scoring accepted one)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select, text

from neurolabel.core.types import ScoreResult
from neurolabel.storage import db
from neurolabel.storage import queries as q
from neurolabel.storage.labels import best_labels_page
from neurolabel.storage.models import ExplanationRow
from tests.storage.factories import explanation, hash_embedder

THRESHOLD = 0.3


def _scored(text: str, score: float, se: float | None, fit: int | None, *, explainer: str, index: int = 1,
            rank: int = 0):
    e = explanation(0, index, text, None, explainer=explainer, rank=rank)
    structured = dict(e.structured) if fit is None else {**e.structured, "fit_tokens": fit}
    parts = {"top_only": score / 2} if se is None else {"top_only": score / 2, "se": se}
    return replace(e, structured=structured,
                   score=ScoreResult(score=score, scorer="correlation", simulator="symbolic", parts=parts, n_tokens=64))


def _save(url: str, explanations) -> None:
    with db.session_scope(url) as s:
        q.save_explanations(session=s, explanations=explanations, threshold=THRESHOLD, embedder=hash_embedder)


def _selected(url: str, index: int = 1) -> list[str]:
    with db.session_scope(url) as s:
        return list(s.execute(select(ExplanationRow.text).join(ExplanationRow.neuron)
                              .where(ExplanationRow.selected, ExplanationRow.neuron.has(index=index))).scalars())


def _reads(url: str, index: int = 1) -> dict[str, object]:
    with db.session_scope(url) as s:
        page = q.get_neuron(session=s, model="tiny", layer=0, index=index)
        best = q.best_label(session=s, model="tiny", layer=0, index=index)
        row = next(r for r in q.list_neurons(session=s, model="tiny") if r["index"] == index)
        labels = {r["index"]: r for r in best_labels_page(session=s, model="tiny").rows}
    return {"page": page["best_label"]["text"], "first": page["explanations"][0]["text"], "best": best["text"],
            "list": (row["label"], row["label_score"]), "labels": labels[index]["text"]}


def test_a_label_within_one_standard_error_gives_way_to_the_one_fitted_on_more_tokens(migrated_url: str) -> None:
    ci = _scored("ci within noise", 0.50, 0.05, 2000, explainer="concept_induction")
    ci2 = _scored("ci second", 0.48, 0.05, 2000, explainer="concept_induction", rank=1)
    tiers = _scored("tiers broad", 0.46, 0.04, 50000, explainer="token_tiers")
    pmi = _scored("pmi", 0.2, 0.05, 2000, explainer="pmi")
    _save(migrated_url, [ci, ci2, tiers, pmi])
    assert _selected(migrated_url) == ["tiers broad"]
    got = _reads(migrated_url)
    assert got == {"page": "tiers broad", "first": "tiers broad", "best": "tiers broad",
                   "list": ("tiers broad", 0.46), "labels": "tiers broad"}
    with db.session_scope(migrated_url) as s:
        row = s.execute(select(ExplanationRow).where(ExplanationRow.text == "ci within noise")).scalar_one()
        assert (row.score_se, row.fit_tokens, row.selected) == (0.05, 2000, False)
    # a rerun of concept induction that is better by more than its standard error takes the label back
    _save(migrated_url, [replace(ci, text="ci clearly better", score=replace(ci.score, score=0.6))])
    assert _selected(migrated_url) == ["ci clearly better"]
    assert _reads(migrated_url)["list"] == ("ci clearly better", 0.6)
    # ... and when it is re-scored below the acceptance threshold, the label goes back to the token list
    _save(migrated_url, [replace(ci, text="ci clearly better", score=replace(ci.score, score=0.1))])
    assert _selected(migrated_url) == ["tiers broad"]
    # no accepted explanation left: no label
    _save(migrated_url, [replace(tiers, score=replace(tiers.score, score=0.05)),
                         replace(ci2, score=replace(ci2.score, score=0.05)),
                         replace(pmi, score=replace(pmi.score, score=0.05))])
    assert _selected(migrated_url) == []
    with db.session_scope(migrated_url) as s:
        assert q.best_label(session=s, model="tiny", layer=0, index=1) is None


def test_without_standard_errors_the_label_is_the_highest_scoring_accepted_one(migrated_url: str) -> None:
    _save(migrated_url, [_scored("ci", 0.50, None, 2000, explainer="concept_induction"),
                         _scored("tiers", 0.49, None, 50000, explainer="token_tiers"),
                         _scored("llm", 0.45, 0.01, None, explainer="llm_summary", index=2),
                         _scored("pmi", 0.44, 0.01, None, explainer="pmi", index=2)])
    assert _selected(migrated_url, 1) == ["ci"]
    # equal (unknown) fitted tokens within one standard error: the higher score
    assert _selected(migrated_url, 2) == ["llm"]


def test_the_migration_gives_existing_neurons_their_highest_scoring_accepted_label(db_url: str) -> None:
    db.upgrade(db_url, "0008")
    url = db.normalize_url(db_url)
    with db.session_scope(url) as s:
        s.execute(text("INSERT INTO models (id, name, unit_map, created_at) "
                       "VALUES (1, 'tiny', '{}', CURRENT_TIMESTAMP)"))
        for nid, idx in ((1, 0), (2, 1), (3, 2)):
            s.execute(text("INSERT INTO neurons (id, model_id, layer, \"index\") VALUES (:i, 1, 0, :x)"),
                      {"i": nid, "x": idx})
        rows = [(1, 1, "a", 0.4, True), (2, 1, "b", 0.7, True), (3, 1, "c", 0.9, False),
                (4, 2, "d", 0.5, True), (5, 2, "e", 0.5, True), (6, 3, "f", 0.1, False)]
        for i, n, t, sc, acc in rows:
            s.execute(text(
                "INSERT INTO explanations (id, neuron_id, explainer, explainer_version, rank, text, structured, "
                "params, score, accepted, created_at, updated_at) VALUES (:i, :n, 'pmi', '1', :i, :t, '{}', '{}', "
                ":sc, :acc, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"i": i, "n": n, "t": t, "sc": sc, "acc": acc})
    db.upgrade(url)
    with db.session_scope(url) as s:
        got = s.execute(select(ExplanationRow.text).where(ExplanationRow.selected).order_by(ExplanationRow.id)).scalars()
        assert list(got) == ["b", "d"]
        assert s.execute(select(ExplanationRow.score_se, ExplanationRow.fit_tokens)
                         .where(ExplanationRow.id == 1)).one() == (None, None)
    db.downgrade(url, "0008")
    db.upgrade(url)
