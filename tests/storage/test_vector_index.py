"""The label vector index: recall against exact search, filters before ranking (a selective one
too), persistence beside the database, a writer killed between its commit and the index write,
``neurolabel db reindex``, and no database connection held while ranking."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from neurolabel.storage import db, label_index
from neurolabel.storage import queries as q
from neurolabel.storage import vector_index as vi
from tests.storage.factories import explanation, hash_embedder

ROOT = Path(__file__).resolve().parents[2]


def _clustered(n: int, seed: int = 0) -> np.ndarray:
    """Label-like vectors: normalised sums of three of 300 'word' vectors (many near neighbours)."""
    rng = np.random.default_rng(seed)
    words = rng.normal(size=(300, vi.DIM))
    v = words[rng.integers(0, 300, size=(n, 3))].sum(axis=1)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _index(n: int, layers: np.ndarray, scores: np.ndarray) -> tuple[vi.LabelIndex, np.ndarray]:
    vecs = _clustered(n)
    rec = np.zeros(n, dtype=vi.RECORD)
    rec["id"] = np.arange(1, n + 1)
    rec["stamp"] = 1.0
    rec["model_id"] = 1
    rec["layer"] = layers
    rec["explainer"] = [vi.explainer_code("pmi" if i % 2 else "concept_induction") for i in range(n)]
    rec["score"] = scores
    rec["vec"] = vecs
    index = vi.LabelIndex()
    index.apply(rec)
    return index, vecs


def _recall(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> float:
    return len({i for i, _ in got} & {i for i, _ in want}) / max(1, len(want))


def test_recall_at_10_against_exact_and_filters(monkeypatch) -> None:
    n = 6000
    rng = np.random.default_rng(1)
    layers = np.where(np.arange(n) < 40, 7, rng.integers(0, 6, size=n))  # layer 7: 40 labels (selective)
    scores = rng.uniform(-0.2, 0.9, size=n).astype(np.float32)
    index, vecs = _index(n, layers, scores)
    monkeypatch.setattr(vi, "EXACT_ROWS", 100)  # so that the graph answers the unfiltered queries
    queries = _clustered(50, seed=2)
    recalls = [_recall(index.search(qv, 10), index.search(qv, 10, exact=True)) for qv in queries]
    assert np.mean(recalls) >= 0.95, np.mean(recalls)
    exact = index.search(queries[0], 10, exact=True)
    assert [i for i, _ in exact] == list(np.argsort(-(vecs @ queries[0]), kind="stable")[:10] + 1)

    # a selective filter (40 of 6,000 labels): every result passes it, and none is lost to a
    # truncated candidate list (graph search then filtering would find ~0 of them)
    for qv in queries[:10]:
        got = index.search(qv, 10, layer=7)
        sims = np.where(layers == 7, vecs @ qv, -np.inf)
        assert [i for i, _ in got] == list(np.argsort(-sims, kind="stable")[:10] + 1)
    # a broad filter goes through the graph with a bitmap: only passing labels, good recall
    broad = []
    for qv in queries[:20]:
        got = index.search(qv, 10, explainer="pmi", min_score=0.3)
        assert all((i - 1) % 2 == 1 and scores[i - 1] >= 0.3 for i, _ in got) and len(got) == 10
        broad.append(_recall(got, index.search(qv, 10, explainer="pmi", min_score=0.3, exact=True)))
    assert np.mean(broad) >= 0.9, np.mean(broad)
    assert index.search(queries[0], 10, layer=99) == []


def test_replaced_and_deleted_labels_leave_the_results() -> None:
    index, vecs = _index(50, np.zeros(50, dtype=int), np.zeros(50, dtype=np.float32))
    top = index.search(vecs[4], 1)[0][0]
    assert top == 5
    moved = np.zeros(1, dtype=vi.RECORD)
    moved[0] = (5, 2.0, 1, 0, 0, 0.5, 0, vecs[30])
    index.apply(moved)
    assert [i for i, _ in index.search(vecs[30], 2)] in ([5, 31], [31, 5])
    assert index.search(vecs[4], 1)[0][0] != 5 or index.search(vecs[4], 1)[0][1] < 0.999
    index.apply(label_index.tombstones([5], 3.0))
    assert 5 not in [i for i, _ in index.search(vecs[30], 5)]
    older = moved.copy()
    older["stamp"] = 1.5  # an out-of-date record (a log replayed after a newer one) changes nothing
    assert index.apply(older) == 0 and len(index) == 49 and index.dead == 2


def _write(url: str, labels: list[tuple[int, str]]) -> None:
    with db.session_scope(url) as s:
        q.save_explanations(session=s, explanations=[explanation(0, i, t, 0.5) for i, t in labels],
                            embedder=hash_embedder)


def test_persisted_beside_sqlite_and_updated_on_commit(sqlite_migrated: str) -> None:
    url = sqlite_migrated
    folder = vi.index_location(url)
    assert folder is not None and folder.parent == Path(url.split("///", 1)[1]).parent
    _write(url, [(i, f"label {i}") for i in range(5)])
    assert len(vi.read_log(folder)) == 5  # appended when the transaction committed
    with pytest.raises(RuntimeError), db.session_scope(url) as s:
        q.save_explanations(session=s, explanations=[explanation(0, 9, "rolled back", 0.5)],
                            embedder=hash_embedder)
        raise RuntimeError("abort")
    assert len(vi.read_log(folder)) == 5  # a rolled-back write never reaches the index
    with db.session_scope(url) as s:
        r = label_index.reindex(session=s, folder=folder)
        assert r.rebuilt and r.labels == 5
        assert label_index.check_index(session=s, folder=folder).consistent
    _write(url, [(1, "renamed")])
    snap = vi.load(folder)
    assert snap.watermark is not None and len(snap.index) == 5
    best = snap.index.search(hash_embedder(["renamed"])[0], 1)[0]
    assert best[1] == pytest.approx(1.0, abs=1e-5)
    with db.session_scope(url) as s:
        assert label_index.check_index(session=s, folder=folder).consistent


_KILLED_WRITER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from neurolabel.storage import db, vector_index
from neurolabel.storage import queries as q
from tests.storage.factories import explanation, hash_embedder

vector_index.before_log_append = lambda: os.kill(os.getpid(), signal.SIGKILL)
with db.session_scope({url!r}) as s:
    q.save_explanations(session=s, explanations=[explanation(1, i, f"after crash {{i}}", 0.5) for i in range(3)],
                        embedder=hash_embedder)
print("not reached")
"""


def test_writer_killed_between_commit_and_index_write(db_url: str, tmp_path: Path) -> None:
    """The database has the labels, the index does not: readers still find them, the check
    reports them, ``reindex`` writes them back."""
    url = db.normalize_url(db_url)
    db.upgrade(url)
    folder = vi.index_location(url)
    _write(url, [(i, f"label {i}") for i in range(4)])
    with db.session_scope(url) as s:
        label_index.reindex(session=s, folder=folder, full=True)
    script = tmp_path / "writer.py"
    script.write_text(_KILLED_WRITER.format(root=str(ROOT), url=url))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "not reached" not in proc.stdout
    with db.session_scope(url) as s:
        assert len(q.search_labels(session=s, query="x", mode="text")) == 0  # the session works
        report = label_index.check_index(session=s, folder=folder)
    assert report.labels == 7 and report.indexed == 4 and report.missing == 3 and not report.consistent
    # a reader that starts now (a fresh process-wide index) is not silently wrong
    from neurolabel.storage.search import SemanticIndex

    fresh = SemanticIndex(folder)
    with db.session_scope(url) as s:
        fresh.refresh(s)
    crash_vec = hash_embedder(["after crash 1"])[0]
    assert fresh.top(crash_vec, 1)[0][1] == pytest.approx(1.0, abs=1e-5)
    # the CLI sees the damage and repairs it
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "neurolabel.service.cli", "db", "reindex", "--db", url]
    checked = subprocess.run([*cli, "--check"], capture_output=True, text=True, env=env, timeout=120)
    assert checked.returncode == 1 and "3 missing" in checked.stdout and "INCONSISTENT" in checked.stdout
    repaired = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=120)
    assert repaired.returncode == 0 and "3 record(s) appended" in repaired.stdout, repaired.stdout + repaired.stderr
    with db.session_scope(url) as s:
        assert label_index.check_index(session=s, folder=folder).consistent
    assert vi.load(folder).index.search(crash_vec, 1)[0][1] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.postgres
def test_no_connection_held_while_ranking(pg_url: str, monkeypatch) -> None:
    from neurolabel.storage import search

    url = db.normalize_url(pg_url)
    db.upgrade(url)
    _write(url, [(i, f"label {i}") for i in range(5)])
    monkeypatch.setattr(search, "_query_vector", lambda text: hash_embedder([text])[0])
    engine = db.get_engine(url)
    seen: list[int] = []
    top = search.SemanticIndex.top

    def watching(self, *a, **kw):
        seen.append(engine.pool.checkedout())
        return top(self, *a, **kw)

    monkeypatch.setattr(search.SemanticIndex, "top", watching)
    with db.session_scope(url) as s:
        hits = q.search_labels(session=s, query="label 2", mode="semantic", limit=3, layer=0, explainer="pmi")
    assert seen == [0]
    assert hits[0]["text"] == "label 2" and hits[0]["relevance"] == pytest.approx(1.0, abs=1e-5)


def test_saved_snapshot_keeps_replaced_and_deleted_masked(tmp_path: Path) -> None:
    index, vecs = _index(30, np.zeros(30, dtype=int), np.zeros(30, dtype=np.float32))
    moved = np.zeros(1, dtype=vi.RECORD)
    moved[0] = (3, 2.0, 1, 0, 0, 0.5, 0, vecs[20])
    index.apply(moved)
    index.apply(label_index.tombstones([7], 3.0))
    vi.save(tmp_path / "ix", index, watermark=5.0)
    back = vi.load(tmp_path / "ix").index
    assert len(back) == 29 and back.dead == 2 and back.stamps() == index.stamps()
    assert 7 not in [i for i, _ in back.search(vecs[6], 3, exact=True)]
    assert back.search(vecs[2], 1, exact=True)[0][0] != 3


def test_unreadable_snapshot_is_named_and_rebuilt(sqlite_migrated: str) -> None:
    from neurolabel.core.errors import StorageError

    url = sqlite_migrated
    folder = vi.index_location(url)
    _write(url, [(i, f"label {i}") for i in range(3)])
    with db.session_scope(url) as s:
        label_index.reindex(session=s, folder=folder, full=True)
    base = folder / f"base-{(folder / 'CURRENT').read_text().strip()}"
    (base / "index.faiss").write_bytes(b"not a faiss index")
    with db.session_scope(url) as s:
        with pytest.raises(StorageError, match="reindex --full"):
            label_index.check_index(session=s, folder=folder)
        with pytest.raises(StorageError, match="reindex --full"):
            label_index.reindex(session=s, folder=folder)
        r = label_index.reindex(session=s, folder=folder, full=True)
        assert r.rebuilt and r.labels == 3
        assert label_index.check_index(session=s, folder=folder).consistent


def test_index_location_of_a_server_database(tmp_path: Path) -> None:
    a = vi.index_location("postgresql+psycopg://me:secret@db.local:5432/labels", root=tmp_path)
    assert a == vi.index_location("postgresql://me@db.local:5432/labels", root=tmp_path)  # no password in it
    assert a.parent == tmp_path and "secret" not in str(a)
    assert a != vi.index_location("postgresql://me@db.local:5432/other", root=tmp_path)
    assert vi.index_location("sqlite://") is None and vi.index_location("sqlite:///:memory:") is None


def _record(label_id: int, stamp: float) -> np.ndarray:
    rec = np.zeros(1, dtype=vi.RECORD)
    rec[0] = (label_id, stamp, 1, 0, 0, 0.5, 0, hash_embedder([f"label {label_id}"])[0])
    return rec


def test_append_cuts_a_torn_record_of_a_killed_writer(tmp_path: Path) -> None:
    folder = tmp_path / "ix"
    vi.append_records(folder, np.concatenate([_record(1, 1.0), _record(2, 1.0)]))
    with open(folder / "log.bin", "ab") as f:  # a writer killed mid-append
        f.write(_record(3, 1.0).tobytes()[:100])
    assert [int(i) for i in vi.read_log(folder)["id"]] == [1, 2]
    vi.append_records(folder, _record(4, 1.0))
    assert [int(i) for i in vi.read_log(folder)["id"]] == [1, 2, 4]  # not misaligned by the torn bytes
    records, at = vi.read_log_since(folder, None)
    assert len(records) == 3 and at.offset == 3 * vi.RECORD.itemsize
    assert len(vi.read_log_since(folder, at)[0]) == 0
    vi.append_records(folder, _record(5, 1.0))
    more, at2 = vi.read_log_since(folder, at)
    assert [int(i) for i in more["id"]] == [5] and at2.offset == 4 * vi.RECORD.itemsize


def test_running_reader_reads_the_log_and_rechecks_the_database(sqlite_migrated: str, monkeypatch) -> None:
    """A reader that is up applies what writers append to the log without a query; a label the
    log lacks (its append failed) is found at the next database check; a log rewritten by
    ``reindex`` is read from its start."""
    from sqlalchemy import event

    from neurolabel.storage.search import SemanticIndex

    url = sqlite_migrated
    folder = vi.index_location(url)
    _write(url, [(i, f"label {i}") for i in range(3)])
    reader = SemanticIndex(folder)
    reader.RECHECK_S = 3600.0
    statements: list[str] = []
    event.listen(db.get_engine(url), "before_cursor_execute",
                 lambda conn, cursor, sql, *a: statements.append(sql))
    with db.session_scope(url) as s:
        assert reader.refresh(s) == 3
    _write(url, [(7, "written later")])
    statements.clear()
    with db.session_scope(url) as s:
        assert reader.refresh(s) == 1
    assert statements == []  # from the log alone
    assert reader.top(hash_embedder(["written later"])[0], 1)[0][1] == pytest.approx(1.0, abs=1e-5)

    def disk_full() -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(vi, "before_log_append", disk_full)
    _write(url, [(8, "not in the log")])
    monkeypatch.setattr(vi, "before_log_append", None)
    lost = hash_embedder(["not in the log"])[0]
    with db.session_scope(url) as s:
        assert reader.refresh(s) == 0  # the database check is not due yet
        assert reader.top(lost, 1)[0][1] < 0.5
        reader.RECHECK_S = 0.0
        assert reader.refresh(s) == 1  # the check finds it
    assert reader.top(lost, 1)[0][1] == pytest.approx(1.0, abs=1e-5)
    reader.RECHECK_S = 3600.0
    with db.session_scope(url) as s:
        label_index.reindex(session=s, folder=folder, full=True)  # a new base and a new log
    _write(url, [(9, "after the rebuild")])
    with db.session_scope(url) as s:
        assert reader.refresh(s) == 1
    assert reader.top(hash_embedder(["after the rebuild"])[0], 1)[0][1] == pytest.approx(1.0, abs=1e-5)
    assert len(reader) == 6
