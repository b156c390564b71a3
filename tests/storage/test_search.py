"""Label search by full text and by meaning (real all-MiniLM-L6-v2), ranked and paginated."""

from __future__ import annotations

import pytest

from neurolabel.core.errors import StorageError
from neurolabel.storage import db
from neurolabel.storage import queries as q
from tests.storage.factories import explanation

LABELS = [
    (0, 0, "cats, kittens and other felines", 0.9),
    (0, 1, "numbers and digits", 0.7),
    (0, 2, "the word cat at the start of a sentence", 0.35),
    (0, 3, "rivers, lakes and flowing water", 0.5),
    (1, 0, "past tense verbs", 0.1),
    (1, 1, "dog breeds such as poodles", 0.6),
]


@pytest.fixture
def labelled(migrated_url: str) -> str:
    with db.session_scope(migrated_url) as s:
        q.save_explanations(
            session=s, explanations=[explanation(l, i, t, sc) for l, i, t, sc in LABELS], threshold=0.3
        )
        q.save_explanations(session=s, explanations=[explanation(0, 0, "cat pictures", 0.8, model="other")])
    return migrated_url


def _keys(rows):
    return [(r["model"], r["layer"], r["index"]) for r in rows]


@pytest.mark.slow
def test_text_search_ranked_filtered_paginated(labelled: str) -> None:
    with db.session_scope(labelled) as s:
        hits = q.search_labels(session=s, query="cats", model="tiny")
        assert set(_keys(hits)) == {("tiny", 0, 0), ("tiny", 0, 2)}  # stemmed: cats ~ cat
        assert all(h["relevance"] > 0 for h in hits)
        assert hits[0]["relevance"] >= hits[1]["relevance"]
        assert _keys(q.search_labels(session=s, query="cat")) == _keys(q.search_labels(session=s, query="CAT!"))
        assert len(q.search_labels(session=s, query="cat")) == 3  # both models
        assert _keys(q.search_labels(session=s, query="cat", min_score=0.85)) == [("tiny", 0, 0)]
        assert _keys(q.search_labels(session=s, query="rivers lakes")) == [("tiny", 0, 3)]
        assert q.search_labels(session=s, query="rivers poodles") == []  # every word must match
        page1 = q.search_labels(session=s, query="cat", limit=2)
        page2 = q.search_labels(session=s, query="cat", limit=2, offset=2)
        assert len(page1) == 2 and len(page2) == 1
        assert set(_keys(page1 + page2)) == set(_keys(q.search_labels(session=s, query="cat")))
        assert q.search_labels(session=s, query="  ") == []
        assert q.search_labels(session=s, query='"AND OR NOT (*') == []  # no syntax errors
        with pytest.raises(StorageError, match="mode"):
            q.search_labels(session=s, query="cat", mode="fuzzy")  # type: ignore[arg-type]


@pytest.mark.slow
def test_semantic_search_by_meaning_and_refresh(labelled: str) -> None:
    with db.session_scope(labelled) as s:
        hits = q.search_labels(session=s, query="a feline pet", mode="semantic", model="tiny", limit=3)
        assert hits[0]["text"] == "cats, kittens and other felines"
        assert hits[0]["relevance"] > hits[1]["relevance"] > hits[2]["relevance"]
        water = q.search_labels(session=s, query="streams and ponds", mode="semantic", limit=1)
        assert _keys(water) == [("tiny", 0, 3)]
        assert all(h["score"] >= 0.55 for h in q.search_labels(session=s, query="cat", mode="semantic", min_score=0.55))
        allhits = q.search_labels(session=s, query="animals", mode="semantic", limit=10)
        assert len(allhits) == 7
        assert q.search_labels(session=s, query="animals", mode="semantic", limit=3, offset=3) == allhits[3:6]
        assert q.search_labels(session=s, query="cat", mode="semantic", model="nope") == []
    # a label written later (by another session) is found without restarting
    with db.session_scope(labelled) as s:
        q.save_explanations(session=s, explanations=[explanation(2, 0, "snowy mountain peaks", 0.9)])
    with db.session_scope(labelled) as s:
        top = q.search_labels(session=s, query="alpine summits covered in snow", mode="semantic", limit=1)
        assert _keys(top) == [("tiny", 2, 0)]
        # and a changed label is re-embedded
        q.save_explanations(session=s, explanations=[explanation(2, 0, "programming languages", 0.9)])
    with db.session_scope(labelled) as s:
        top = q.search_labels(session=s, query="Python and Java code", mode="semantic", limit=1)
        assert _keys(top) == [("tiny", 2, 0)] and top[0]["text"] == "programming languages"


def test_semantic_index_incremental_and_deletions(sqlite_migrated: str) -> None:
    """The in-memory index picks up new, changed and (on reconcile) deleted labels."""
    from sqlalchemy import delete

    from neurolabel.storage.models import Neuron
    from neurolabel.storage.search import SemanticIndex
    from tests.storage.factories import hash_embedder

    url = sqlite_migrated
    index = SemanticIndex()
    with db.session_scope(url) as s:
        q.save_explanations(session=s, explanations=[explanation(0, i, f"label {i}", 0.5) for i in range(5)],
                            embedder=hash_embedder)
    with db.session_scope(url) as s:
        assert index.refresh(s) == 5 and len(index) == 5
        assert index.refresh(s) == 0  # nothing changed: only (id, updated_at) were read
        target = hash_embedder(["label 3"])[0]
        (best_id, sim), *_ = index.top(target, 2)
        assert sim == pytest.approx(1.0, abs=1e-5)
        q.save_explanations(session=s, explanations=[explanation(0, 3, "renamed", 0.5)], embedder=hash_embedder)
    with db.session_scope(url) as s:
        assert index.refresh(s) == 1
        assert index.top(target, 1)[0][1] < 0.5
        assert index.top(hash_embedder(["renamed"])[0], 1)[0][0] == best_id
        s.execute(delete(Neuron).where(Neuron.index == 3))
    with db.session_scope(url) as s:
        index.RECONCILE_S = 0.0
        index.refresh(s)
        assert best_id not in [i for i, _ in index.top(hash_embedder(["renamed"])[0], 10)]
        assert len(index.top(target, 10)) == 4
        assert index.top(target, 10, min_score=0.6) == []
