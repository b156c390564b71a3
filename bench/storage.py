"""Label-database benchmark on the real PostgreSQL server.

Creates a fresh database, migrates it, fills it by COPY with 10^5 neurons (statistics and two
64-token examples each) and 10^6 explanations (synthetic labels made of words from the MiniLM
vocabulary, each with a Score row and an embedding: the normalised sum of its words' real
MiniLM embeddings), then measures through :mod:`storage.queries` — one session per call, as a
web request would — the latency of:

- neuron lookup (``get_neuron``: statistics, examples, explanations with scores),
- full-text label search (``search_labels(mode="text")``, 1–2 random vocabulary words),
- semantic label search (``search_labels(mode="semantic")``, query embedding included) through
  the HNSW label index and, on the same queries, exact (``exact=True``, the reference),

and prints median / p99 with ratios against baselines measured in the same run: a primary-key
fetch (the floor of a round trip), an ``ILIKE`` scan (full text without the index), the query
embedding alone and exact ranking. It also prints the index's build time (``neurolabel db
reindex --full``), size on disk, first load, and recall@10 against exact search (unfiltered and
with a layer filter). The database and the index are dropped at the end (``--keep`` keeps them).

    .venv/bin/python bench/storage.py            # 10^5 neurons, 10^6 explanations
    .venv/bin/python bench/storage.py --quick    # 10^4 neurons, 10^5 explanations
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
_INDEX_ROOT = tempfile.mkdtemp(prefix="nl-bench-index-")
os.environ["NEUROLABEL_INDEX_DIR"] = _INDEX_ROOT

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
from sqlalchemy import text  # noqa: E402

from neurolabel.storage import db  # noqa: E402
from neurolabel.storage.queries import get_neuron, search_labels  # noqa: E402

ADMIN_URL = os.environ.get("NEUROLABEL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
EXPLAINERS = [("concept_induction", r) for r in range(3)] + [("pmi", r) for r in range(4)] + [
    ("llm_summary", r) for r in range(3)
]
TEMPLATES = ["{0} and {1}", "words about {0}", "{0}, {1} or {2}", "the token {0}", "{0} in {1} contexts",
             "{0} {1}", "names of {0} and {2}", "{2} following {1}"]


def _vocabulary(n: int, rng: random.Random) -> list[str]:
    from neurolabel.core.assets import minilm_dir

    words = [w.strip() for w in (Path(minilm_dir()) / "vocab.txt").read_text().splitlines()]
    words = sorted({w for w in words if re.fullmatch(r"[a-z]{4,12}", w)})
    rng.shuffle(words)
    return sorted(words[:n])


def _timeit(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


def _summary(ms: list[float]) -> tuple[float, float]:
    return statistics.median(ms), float(np.percentile(ms, 99))


def fill(pg_url: str, *, n_neurons: int, per_neuron: int, examples: int, vocab: list[str],
         word_vecs: np.ndarray, seed: int) -> None:
    """COPY synthetic neurons, examples, explanations and scores into a migrated database."""
    rng = np.random.default_rng(seed)
    now = datetime.now(timezone.utc)
    n_layers = 30
    per_layer = -(-n_neurons // n_layers)
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO models (id, name, architecture, source, unit_map, n_layers, n_units, created_at) "
                     "VALUES (1, 'bench', 'LlamaForCausalLM', 'synthetic', '{}', %s, %s, %s)",
                     (n_layers, per_layer, now))
        conn.execute("DROP INDEX IF EXISTS ix_explanations_text_tsv")
        t0 = time.perf_counter()
        with conn.cursor().copy('COPY neurons (id, model_id, layer, "index", stats, recorded_at) FROM STDIN') as cp:
            for nid in range(1, n_neurons + 1):
                layer, index = divmod(nid - 1, per_layer)
                stats = {"count": 100000, "mean": 0.01, "std": 0.2, "max": 5.0, "min": -0.3, "frac_active": 0.3}
                cp.write_row((nid, 1, layer, index, json.dumps(stats), now))
        tokens = json.dumps([f" tok{i}" for i in range(64)])
        with conn.cursor().copy("COPY examples (id, neuron_id, kind, position, split, window_id, quantile, tokens, "
                                "activations, max_activation) FROM STDIN") as cp:
            eid = 0
            for nid in range(1, n_neurons + 1):
                for pos in range(examples):
                    eid += 1
                    acts = np.round(rng.random(64) * 5, 3).tolist()
                    cp.write_row((eid, nid, "top", pos, "explain" if pos % 2 == 0 else "score", eid, None, tokens,
                                  json.dumps(acts), max(acts)))
        conn.commit()
        print(f"  neurons + examples copied in {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        n_expl = n_neurons * per_neuron
        chunk = 50_000
        xid = 0
        for start in range(0, n_expl, chunk):
            m = min(chunk, n_expl - start)
            words = rng.integers(0, len(vocab), size=(m, 3))
            tmpl = rng.integers(0, len(TEMPLATES), size=m)
            scores = rng.uniform(-0.2, 0.9, size=m)
            vecs = word_vecs[words].sum(axis=1)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            vecs = vecs.astype("<f4")
            with conn.cursor().copy("COPY explanations (id, neuron_id, explainer, explainer_version, rank, text, "
                                    "structured, params, score, accepted, embedding, created_at, updated_at) "
                                    "FROM STDIN") as cp:
                for j in range(m):
                    xid += 1
                    nid = (xid - 1) // per_neuron + 1
                    explainer, rank = EXPLAINERS[(xid - 1) % per_neuron % len(EXPLAINERS)]
                    w = words[j]
                    label = TEMPLATES[tmpl[j]].format(vocab[w[0]], vocab[w[1]], vocab[w[2]])
                    sc = float(scores[j])
                    cp.write_row((xid, nid, explainer, "1", rank, label, "{}", "{}", sc, sc >= 0.3,
                                  vecs[j].tobytes(), now, now))
            first = xid - m + 1
            with conn.cursor().copy("COPY scores (id, explanation_id, scorer, simulator, split, score, parts, "
                                    "n_tokens, method, created_at) FROM STDIN") as cp:
                for j in range(m):
                    sc = float(scores[j])
                    cp.write_row((first + j, first + j, "correlation", "embedding", "score", sc,
                                  json.dumps({"top_only": sc, "random_only": sc / 2}), 640, "json", now))
            conn.commit()
            print(f"  explanations {xid:,}/{n_expl:,} ({time.perf_counter() - t0:.0f} s)", flush=True)
        t1 = time.perf_counter()
        conn.execute("CREATE INDEX ix_explanations_text_tsv ON explanations USING gin (text_tsv)")
        for table in ("models", "neurons", "examples", "explanations", "scores"):
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
        print(f"  GIN index + analyze in {time.perf_counter() - t1:.1f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10^4 neurons, 10^5 explanations")
    ap.add_argument("--neurons", type=int, default=None)
    ap.add_argument("--per-neuron", type=int, default=10, help="explanations per neuron")
    ap.add_argument("--examples", type=int, default=2, help="examples per neuron")
    ap.add_argument("--vocab", type=int, default=4000)
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="do not drop the database")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n_neurons = args.neurons or (10_000 if args.quick else 100_000)
    iters = args.iterations or (100 if args.quick else 300)
    rng = random.Random(args.seed)

    name = f"nl_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0]
    pg_url = f"{base}/{name}"
    url = db.normalize_url(pg_url)
    try:
        from neurolabel.lm.embeddings import embed

        print(f"neurolabel storage benchmark: {n_neurons:,} neurons, {n_neurons * args.per_neuron:,} explanations "
              f"(PostgreSQL, database {name})", flush=True)
        t = time.perf_counter()
        db.upgrade(url)
        vocab = _vocabulary(args.vocab, rng)
        word_vecs = embed(vocab, batch_size=256)
        print(f"  migrated + embedded {len(vocab):,} vocabulary words in {time.perf_counter() - t:.1f} s", flush=True)
        t = time.perf_counter()
        fill(pg_url, n_neurons=n_neurons, per_neuron=args.per_neuron, examples=args.examples, vocab=vocab,
             word_vecs=word_vecs, seed=args.seed)
        print(f"fill: {time.perf_counter() - t:.1f} s", flush=True)

        with psycopg.connect(pg_url) as conn:
            n_layers, per_layer = conn.execute("SELECT n_layers, n_units FROM models").fetchone()
        keys = [(rng.randrange(n_neurons) // per_layer, rng.randrange(n_neurons) % per_layer) for _ in range(iters)]
        keys = [(layer, idx) for layer, idx in keys if layer * per_layer + idx < n_neurons]
        queries = [" ".join(rng.sample(vocab, rng.choice((1, 1, 2)))) for _ in range(iters)]
        sem_queries = [f"{rng.choice(vocab)} and {rng.choice(vocab)}" for _ in range(iters)]

        engine = db.get_engine(url)
        ids = [rng.randrange(1, n_neurons + 1) for _ in range(iters)]

        def floor(i: int) -> None:
            with db.session_scope(url) as s:
                s.execute(text("SELECT stats FROM neurons WHERE id = :i"), {"i": ids[i % len(ids)]}).one()

        def lookup(i: int) -> None:
            layer, idx = keys[i % len(keys)]
            with db.session_scope(url) as s:
                assert get_neuron(session=s, model="bench", layer=layer, index=idx) is not None

        n_hits = []

        def fulltext(i: int) -> None:
            with db.session_scope(url) as s:
                n_hits.append(len(search_labels(session=s, query=queries[i % len(queries)], limit=20)))

        def fulltext_common(i: int) -> None:
            with db.session_scope(url) as s:
                search_labels(session=s, query=("words", "names", "token", "contexts")[i % 4], limit=20)

        def ilike(i: int) -> None:
            with db.session_scope(url) as s:
                s.execute(text("SELECT id FROM explanations WHERE text ILIKE :q ORDER BY score DESC LIMIT 20"),
                          {"q": f"%{queries[i].split()[0]}%"}).all()

        def semantic(i: int) -> None:
            with db.session_scope(url) as s:
                search_labels(session=s, query=sem_queries[i % len(sem_queries)], mode="semantic", limit=20)

        def semantic_exact(i: int) -> None:
            with db.session_scope(url) as s:
                search_labels(session=s, query=sem_queries[i % len(sem_queries)], mode="semantic", limit=20,
                              exact=True)

        def semantic_layer(i: int) -> None:
            with db.session_scope(url) as s:
                search_labels(session=s, query=sem_queries[i % len(sem_queries)], mode="semantic", limit=20,
                              layer=i % n_layers)

        qvecs = embed(sem_queries)

        def semantic_ranking(i: int) -> None:
            index.top(qvecs[i % len(qvecs)], 20)

        def exact_ranking(i: int) -> None:
            index.top(qvecs[i % len(qvecs)], 20, exact=True)

        def embed_only(i: int) -> None:
            embed([sem_queries[i % len(sem_queries)]])

        from neurolabel.storage.label_index import reindex
        from neurolabel.storage.search import semantic_index
        from neurolabel.storage.vector_index import index_location

        folder = index_location(url)
        t = time.perf_counter()
        with db.session_scope(url) as s:
            reindex(session=s, folder=folder, full=True, progress=False)
        build_s = time.perf_counter() - t
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        print(f"\nindex build (db reindex --full): {build_s:.1f} s, {size / 2**20:.0f} MiB on disk", flush=True)
        for fn in (floor, lookup, fulltext):  # warm the pool and caches a little
            _timeit(fn, 5)
        t = time.perf_counter()
        with db.session_scope(url) as s:
            index = semantic_index(s)
            search_labels(session=s, query="warm up", mode="semantic", limit=1)
        load_s = time.perf_counter() - t
        del engine
        print(f"semantic index first load (from disk + check against the database): {load_s:.1f} s", flush=True)
        recall = [len({i for i, _ in index.top(v, 10)} & {i for i, _ in index.top(v, 10, exact=True)}) / 10
                  for v in qvecs]
        recall_layer = [
            len({i for i, _ in index.top(v, 10, layer=j % n_layers)}
                & {i for i, _ in index.top(v, 10, layer=j % n_layers, exact=True)}) / 10
            for j, v in enumerate(qvecs[:50])]
        print(f"{'operation':34s} {'n':>5s} {'median ms':>10s} {'p99 ms':>9s}", flush=True)

        rows = []
        for label, fn, n in (
            ("primary-key fetch (baseline)", floor, iters),
            ("neuron lookup", lookup, iters),
            ("ILIKE scan (baseline)", ilike, 5),
            ("full-text search", fulltext, iters),
            ("full-text, word in 1/8 of labels", fulltext_common, max(20, iters // 5)),
            ("query embedding only (baseline)", embed_only, iters),
            ("exact ranking (vector given)", exact_ranking, max(20, iters // 5)),
            ("index ranking (vector given)", semantic_ranking, iters),
            ("semantic search, exact", semantic_exact, max(20, iters // 5)),
            ("semantic search, index", semantic, iters),
            ("semantic search, layer filter", semantic_layer, iters),
        ):
            rows.append((label, n, *_summary(_timeit(fn, n))))
            print(f"{label:34s} {n:5d} {rows[-1][2]:10.2f} {rows[-1][3]:9.2f}", flush=True)
        res = {r[0]: r for r in rows}
        print(f"\nfull-text hits per random-word query: median {statistics.median(n_hits):.0f} (limit 20)")
        lk, ft, se = res["neuron lookup"], res["full-text search"], res["semantic search, index"]
        print(f"\nneuron lookup / primary-key fetch (median): {lk[2] / res['primary-key fetch (baseline)'][2]:.1f}x")
        print(f"ILIKE scan / full-text search (median):     {res['ILIKE scan (baseline)'][2] / ft[2]:.1f}x faster")
        print(f"semantic search / embedding only (median):  {se[2] / res['query embedding only (baseline)'][2]:.1f}x")
        ex = res["semantic search, exact"]
        print(f"exact / index semantic search (median):     {ex[2] / se[2]:.1f}x faster "
              f"(ranking alone: {res['exact ranking (vector given)'][2] / res['index ranking (vector given)'][2]:.1f}x)")
        print(f"recall@10 of the index against exact search: {np.mean(recall):.3f} ({len(recall)} queries), "
              f"with a layer filter {np.mean(recall_layer):.3f} ({len(recall_layer)} queries)")
        ok = lk[3] <= 50 and ft[3] <= 50
        print(f"target p99 <= 50 ms for lookup ({lk[3]:.1f}) and full-text ({ft[3]:.1f}): {'MET' if ok else 'NOT MET'}")
        ok = se[3] <= 50 and np.mean(recall) >= 0.95
        print(f"target semantic p99 <= 50 ms ({se[3]:.1f}) with recall@10 >= 0.95 ({np.mean(recall):.3f}): "
              f"{'MET' if ok else 'NOT MET'}")
    finally:
        db.dispose_engines()
        if not args.keep:
            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            shutil.rmtree(_INDEX_ROOT, ignore_errors=True)
        else:
            print(f"kept database {pg_url} and its index under {_INDEX_ROOT}")


if __name__ == "__main__":
    main()
