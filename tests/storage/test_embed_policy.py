"""Which labels get a vector (``embed`` = best | accepted | all | none): by default each
explainer's best-scored candidate only (the label the neuron page shows for it), with
``accepted`` also its top-ranked and every accepted one; labels promoted later get theirs in the
write that promotes them; ``db reindex`` fills in what the policy wants and the check counts only
those as missing; semantic search (index and exact) sees only labels with a vector, full-text
search sees every label."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select, update

from neurolabel.core.errors import StorageError
from neurolabel.storage import db, label_index
from neurolabel.storage import queries as q
from neurolabel.storage import search as search_mod
from neurolabel.storage import vector_index as vi
from neurolabel.storage.models import ExplanationRow, Neuron
from tests.storage.factories import explanation, hash_embedder

ROOT = Path(__file__).resolve().parents[2]
THRESHOLD = 0.5

# neuron (0, 1): concept induction ranks 0..3 (best score at rank 1, two accepted), pmi ranks 0..2 (its best
# score at rank 1, none accepted), tokens ranks 0..1 (none scored: its first candidate is its best)
CANDIDATES = [
    ("ci", 0, "ci first", 0.2),
    ("ci", 1, "ci accepted one", 0.7),
    ("ci", 2, "ci accepted two", 0.55),
    ("ci", 3, "ci weak", 0.1),
    ("pmi", 0, "pmi first", 0.1),
    ("pmi", 1, "pmi best scored", 0.4),
    ("pmi", 2, "pmi unscored", None),
    ("tok", 0, "tok first", None),
    ("tok", 1, "tok second", None),
]
BEST = {"ci accepted one", "pmi best scored", "tok first"}
ACCEPTED = BEST | {"ci first", "ci accepted two", "pmi first"}


def _explanations(cands=CANDIDATES, index: int = 1):
    return [explanation(0, index, t, s, explainer=e, rank=r) for e, r, t, s in cands]


def _write(url: str, embed: str, cands=CANDIDATES, index: int = 1) -> None:
    with db.session_scope(url) as s:
        q.save_explanations(session=s, explanations=_explanations(cands, index), threshold=THRESHOLD,
                            embedder=hash_embedder, embed=embed)


def _with_vector(url: str) -> set[str]:
    with db.session_scope(url) as s:
        return set(s.execute(select(ExplanationRow.text).where(ExplanationRow.embedding.is_not(None))).scalars())


def _check(url: str, embed: str = "best") -> label_index.IndexReport:
    with db.session_scope(url) as s:
        return label_index.check_index(session=s, folder=vi.index_location(url), embed=embed)


@pytest.fixture
def url(db_url: str) -> str:
    db.upgrade(db_url)
    return db.normalize_url(db_url)


def test_default_stores_the_vector_of_each_explainers_best_scored_label(url: str) -> None:
    _write(url, "best")
    assert _with_vector(url) == BEST
    r = _check(url)
    assert r.consistent and r.labels == len(BEST) and r.indexed == len(BEST) and r.unembedded == 0
    # checked against the policy `accepted`, the labels it adds lack their vectors
    assert _check(url, "accepted").unembedded == len(ACCEPTED - BEST)
    with db.session_scope(url) as s:  # every label stays findable by full text
        assert {h["text"] for h in q.search_labels(session=s, query="weak", mode="text")} == {"ci weak"}
        assert {h["text"] for h in q.search_labels(session=s, query="second", mode="text")} == {"tok second"}


def test_accepted_stores_the_top_ranked_best_scored_and_accepted(url: str) -> None:
    _write(url, "accepted")
    assert _with_vector(url) == ACCEPTED
    for policy in ("accepted", "best"):
        r = _check(url, policy)
        assert r.consistent and r.labels == len(ACCEPTED) and r.unembedded == 0, (policy, r)


def test_all_and_none(url: str) -> None:
    _write(url, "all")
    assert _with_vector(url) == {t for *_, t, _ in CANDIDATES}
    assert _check(url).consistent
    _write(url, "none", index=2)  # another neuron without vectors: the check wants its best ones
    r = _check(url)
    assert r.unembedded == len(BEST) and not r.consistent and r.missing == 0 and r.extra == 0
    assert _check(url, "none").unembedded == len(BEST)
    assert _check(url, "all").unembedded == len(CANDIDATES)
    with db.session_scope(url) as s:
        fixed = label_index.reindex(session=s, folder=vi.index_location(url), embedder=hash_embedder)
    assert fixed.embedded == len(BEST)
    assert _check(url).consistent
    with db.session_scope(url) as s:
        n = s.execute(select(ExplanationRow.id).where(ExplanationRow.embedding.is_(None))).all()
    assert len(n) == len(CANDIDATES) - len(BEST)  # the other candidates of neuron (0, 2)
    with db.session_scope(url) as s:
        more = label_index.reindex(session=s, folder=vi.index_location(url), embedder=hash_embedder,
                                   embed="accepted")
    assert more.embedded == len(ACCEPTED - BEST) and _check(url, "accepted").consistent
    with pytest.raises(StorageError, match="embed policy"):
        _write(url, "some")
    with pytest.raises(StorageError, match="embed policy"):
        _check(url, "some")


def test_promoted_label_gets_its_vector_and_renamed_one_loses_it(url: str) -> None:
    _write(url, "best")
    rescored = [(e, r, t, 0.9 if t == "ci weak" else s) for e, r, t, s in CANDIDATES]
    _write(url, "best", rescored)  # re-scoring makes "ci weak" the best-scored: it gets a vector in that write
    assert _with_vector(url) == BEST | {"ci weak"}
    _write(url, "best")  # no longer the best: its vector stays (same text)
    assert _with_vector(url) == BEST | {"ci weak"}
    renamed = [(e, r, "ci renamed" if t == "ci weak" else t, 0.0 if t == "ci weak" else s)
               for e, r, t, s in CANDIDATES]
    _write(url, "best", renamed)  # a new text the policy does not want: its old vector leaves the index
    assert "ci renamed" not in _with_vector(url) and "ci weak" not in _with_vector(url)
    r = _check(url)
    assert r.consistent, r
    index = vi.load(vi.index_location(url)).index
    assert index.search(hash_embedder(["ci weak"])[0], 1)[0][1] < 0.5


def test_a_label_accepted_later_gets_a_vector_only_under_accepted(url: str) -> None:
    rescored = [(e, r, t, 0.6 if t == "ci weak" else s) for e, r, t, s in CANDIDATES]  # accepted, not the best
    _write(url, "best")
    _write(url, "best", rescored)
    assert _with_vector(url) == BEST
    _write(url, "accepted", index=2)
    _write(url, "accepted", rescored, index=2)
    with db.session_scope(url) as s:
        second = set(s.execute(select(ExplanationRow.text).join(Neuron, Neuron.id == ExplanationRow.neuron_id).where(
            ExplanationRow.embedding.is_not(None), Neuron.index == 2)).scalars())
    assert second == ACCEPTED | {"ci weak"}


def test_check_catches_a_wanted_vector_that_is_missing(url: str) -> None:
    _write(url, "best")
    with db.session_scope(url) as s:
        s.execute(update(ExplanationRow).where(ExplanationRow.text == "pmi best scored").values(embedding=None))
    r = _check(url)
    # the row lacks its vector (counted once as unembedded) and the index holds one the database lacks
    assert r.unembedded == 1 and r.extra == 1 and not r.consistent
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "neurolabel.service.cli", "db", "reindex", "--db", url]
    checked = subprocess.run([*cli, "--check"], capture_output=True, text=True, env=env, timeout=120)
    assert checked.returncode == 1 and "1 label(s) the best policy wants without a vector" in checked.stdout


def test_semantic_search_sees_only_labels_with_a_vector(url: str, monkeypatch) -> None:
    monkeypatch.setattr(search_mod, "_query_vector", lambda text: hash_embedder([text])[0])
    _write(url, "best")
    with db.session_scope(url) as s:
        for exact in (False, True):
            hits = q.search_labels(session=s, query="ci weak", mode="semantic", limit=20, exact=exact)
            assert {h["text"] for h in hits} == BEST, exact
            top = q.search_labels(session=s, query="pmi best scored", mode="semantic", limit=1, exact=exact)
            assert top[0]["text"] == "pmi best scored"


def test_cli_reindex_embed_all(url: str) -> None:
    if url.startswith("sqlite"):
        pytest.skip("one engine is enough for the subprocess (MiniLM loads there)")
    _write(url, "none")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "neurolabel.service.cli", "db", "reindex", "--db", url, "--embed", "all"]
    done = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and f"label vectors computed: {len(CANDIDATES)}" in done.stdout, done.stdout + done.stderr
    assert _with_vector(url) == {t for *_, t, _ in CANDIDATES}
    assert _check(url).consistent


def test_a_partial_write_that_makes_a_stored_label_best_embeds_it_in_the_transaction(url: str) -> None:
    group = [("x", 0, "x first", 0.1), ("x", 1, "x best", 0.3), ("x", 2, "x second", 0.2)]
    _write(url, "best", group)
    assert _with_vector(url) == {"x best"}
    late: list[list[str]] = []

    def late_embedder(texts):
        late.append(list(texts))
        return hash_embedder(texts)

    with db.session_scope(url) as s:  # only rank 1 re-scored: rank 2, stored before, is now the best-scored
        q.save_explanations(session=s, explanations=_explanations([("x", 1, "x best", 0.0)]), threshold=THRESHOLD,
                            embedder=hash_embedder, late_embedder=late_embedder)
    assert late == [["x second"]]
    assert _with_vector(url) == {"x best", "x second"}  # the old best keeps its vector (same text)
    assert _check(url).consistent


LONG = ("mentions of the token \"come\", the token \"little\", no longer (no more) right after no longer, "
        "a kind of time unit (sec), a number word (hundred, thousand, second, million), a kind of change verb "
        "(come on) right after a kind of change verb, a kind of long, the token \"never\", the token \"thou\", "
        "a token right after a number (digits) or a preposition (on, till), a kind of hallucinogenic drug "
        "(psilocybin), a kind of organization (country, business); lower on mentions of the token \"the\"")


def _vector(url: str, text: str):
    import numpy as np

    with db.session_scope(url) as s:
        raw = s.execute(select(ExplanationRow.embedding).where(ExplanationRow.text == text)).scalar_one()
    return np.frombuffer(raw, dtype="<f4")


def test_the_vector_of_a_long_label_is_that_of_its_search_text_written_or_filled_in(url: str) -> None:
    import numpy as np

    from neurolabel.storage.search_text import search_text

    assert search_text(LONG) != LONG
    cands = [("ci", 0, LONG, 0.6), ("ci", 1, "ci short", 0.1)]
    _write(url, "best", cands, index=1)  # the write path
    assert np.array_equal(_vector(url, LONG), hash_embedder([search_text(LONG)])[0])
    later = [("ci", 0, LONG + " or a kind of animal", 0.6)]
    _write(url, "none", later, index=2)  # no vector now: `db reindex` fills it in (fill_vectors)
    with db.session_scope(url) as s:
        report = label_index.reindex(session=s, folder=vi.index_location(url), embedder=hash_embedder)
    assert report.embedded == 1
    assert np.array_equal(_vector(url, LONG + " or a kind of animal"), hash_embedder([search_text(LONG)])[0])
    with db.session_scope(url) as s:  # the stored text and full-text search keep the whole label
        hits = q.search_labels(session=s, query="psilocybin", mode="text", limit=10)
    assert {h["text"] for h in hits} == {LONG, LONG + " or a kind of animal"}


def test_the_label_embedder_embeds_the_search_text_with_minilm(url: str) -> None:
    import numpy as np

    from neurolabel.lm.embeddings import embed_labels
    from neurolabel.storage.search_text import search_text

    with db.session_scope(url) as s:  # the default embedder: MiniLM at the label precision
        q.save_explanations(session=s, explanations=_explanations([("ci", 0, LONG, 0.6)], index=3),
                            threshold=THRESHOLD)
    got = _vector(url, LONG)
    cut, full = embed_labels([search_text(LONG)])[0], embed_labels([LONG])[0]
    assert float(got @ cut) > 0.99999
    assert float(got @ full) < 0.99  # not the whole label's vector


def test_reindex_revector_recomputes_old_whole_label_vectors_from_search_texts(url: str) -> None:
    import numpy as np

    from neurolabel.storage.search_text import search_text

    _write(url, "best", [("ci", 0, LONG, 0.6), ("ci", 1, "ci short", 0.1)], index=4)
    with db.session_scope(url) as s:  # as a database written before the rule holds it: the whole label's vector
        s.execute(update(ExplanationRow).where(ExplanationRow.text == LONG).values(
            embedding=hash_embedder([LONG])[0].astype("<f4").tobytes()))
    with db.session_scope(url) as s:
        report = label_index.reindex(session=s, folder=vi.index_location(url), embedder=hash_embedder, revector=True)
    assert report.revectored == 1 and report.rebuilt
    assert np.array_equal(_vector(url, LONG), hash_embedder([search_text(LONG)])[0])
    assert _check(url).consistent


def test_cli_reindex_revector(url: str) -> None:
    import numpy as np

    from neurolabel.lm.embeddings import embed_labels
    from neurolabel.storage.search_text import search_text

    if url.startswith("sqlite"):
        pytest.skip("one engine is enough for the subprocess (MiniLM loads there)")
    _write(url, "best", [("ci", 0, LONG, 0.6)], index=5)  # a hash vector, as if from an older rule
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "neurolabel.service.cli", "db", "reindex", "--db", url]
    bad = subprocess.run(cli + ["--check", "--revector"], capture_output=True, text=True, env=env, timeout=300)
    said = "".join((bad.stdout + bad.stderr).replace("│", " ").split())  # the message boxed and wrapped
    assert bad.returncode == 2 and "--revectorrewritesvectors:giveoneofthem" in said, said
    done = subprocess.run(cli + ["--revector"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "recomputed from their search texts: 1" in done.stdout, done.stdout + done.stderr
    assert float(_vector(url, LONG) @ embed_labels([search_text(LONG)])[0]) > 0.99999
    assert _check(url).consistent
