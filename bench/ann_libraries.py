"""Which ANN library for label embeddings: faiss HNSW against usearch HNSW against exact numpy,
on MiniLM-like label vectors (normalised sums of three real MiniLM word embeddings).

Prints per library: build time, query median / p99 (one query at a time, as a request does),
recall@10 against exact search, and for faiss a layer filter (1/30 of the labels) applied
during the graph walk. usearch's Python API cannot filter during the walk.

    .venv/bin/python bench/ann_libraries.py            # 10^5 labels
    .venv/bin/python bench/ann_libraries.py --n 20000
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    from neurolabel.core.assets import minilm_dir
    from neurolabel.lm.embeddings import embed

    words = [w.strip() for w in (Path(minilm_dir()) / "vocab.txt").read_text().splitlines()]
    words = sorted({w for w in words if re.fullmatch(r"[a-z]{4,12}", w)})
    random.Random(0).shuffle(words)
    wv = embed(sorted(words[:4000]), batch_size=256)
    rng = np.random.default_rng(0)
    n = args.n

    def make(m: int, k: int) -> np.ndarray:
        v = wv[rng.integers(0, len(wv), size=(m, k))].sum(1)
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    x, queries = make(n, 3), make(args.queries, 2)
    layer = rng.integers(0, 30, size=n)

    def exact(q, mask=None):
        s = x @ q
        if mask is not None:
            s = np.where(mask, s, -np.inf)
        return set(np.argpartition(-s, 10)[:10].tolist())

    truth = [exact(q) for q in queries]
    lat = []
    for q in queries[:50]:
        t = time.perf_counter()
        exact(q)
        lat.append((time.perf_counter() - t) * 1e3)
    print(f"# {n:,} labels, {len(queries)} queries; exact numpy median {np.median(lat):.2f} ms (baseline)")

    def report(name, build_s, fn, filtered=None):
        lat, rec = [], []
        for q, want in zip(queries, truth):
            t = time.perf_counter()
            got = fn(q)
            lat.append((time.perf_counter() - t) * 1e3)
            rec.append(len(want & set(got)) / 10)
        line = (f"{name:34s} build {build_s:6.1f} s  median {np.median(lat):5.2f} ms  "
                f"p99 {np.percentile(lat, 99):5.2f} ms  recall@10 {np.mean(rec):.3f}")
        if filtered:
            lat, rec = [], []
            for i, q in enumerate(queries[:50]):
                mask = layer == i % 30
                t = time.perf_counter()
                got = filtered(q, mask)
                lat.append((time.perf_counter() - t) * 1e3)
                rec.append(len(exact(q, mask) & set(got)) / 10)
            line += f"  | layer filter: median {np.median(lat):.2f} ms recall@10 {np.mean(rec):.3f}"
        print(line, flush=True)

    import faiss

    for efs in (64, 128):
        faiss.omp_set_num_threads(2)
        t = time.perf_counter()
        idx = faiss.IndexHNSWFlat(384, 32, faiss.METRIC_INNER_PRODUCT)
        idx.hnsw.efConstruction = 64
        idx.add(x)
        build = time.perf_counter() - t
        faiss.omp_set_num_threads(1)
        idx.hnsw.efSearch = efs

        def fn(q, idx=idx):
            return idx.search(q[None], 10)[1][0].tolist()

        def filtered(q, mask, idx=idx, efs=efs):
            bits = np.packbits(mask, bitorder="little")
            params = faiss.SearchParametersHNSW(sel=faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits)), efSearch=efs)
            return idx.search(q[None], 10, params=params)[1][0].tolist()

        report(f"faiss HNSWFlat M32 ef{efs}", build, fn, filtered)
    from usearch.index import Index

    for efs in (64, 128):
        t = time.perf_counter()
        idx = Index(ndim=384, metric="ip", dtype="f16", connectivity=16, expansion_add=128, expansion_search=efs)
        idx.add(np.arange(n), x, threads=2)
        build = time.perf_counter() - t
        report(f"usearch f16 conn16 ef{efs}", build, lambda q, idx=idx: idx.search(q, 10, threads=1).keys.tolist())


if __name__ == "__main__":
    main()
