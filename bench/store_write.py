"""Cost of one labelling-run write (``pipeline.run.store`` of ``RunSpec.store_every``'s 128 neurons'
scored explanations) as the label database grows towards a whole model's: a whole-model run of
SmolLM2-135M writes 360 batches of 128 neurons into one database that ends with ~440,000
explanations, so a write whose cost grows with the table makes the run quadratic.

The database (SQLite by default, ``--db`` a PostgreSQL URL) is filled by bulk inserts with
``--neurons`` neurons of one model and ``--per-neuron`` explanations each (as a run leaves them:
two explainers, ranks 0…, a score and a vector for the best-scored one), then the same 128-neuron
write of real explanations (concept induction and PMI on real SmolLM2 neurons of layer 10: a
recorded slice from ``bench/pipeline.py --cache``, else 16 neurons recorded here over 4,096
tokens) is timed at each size on neurons not written before: CPU seconds of this process
(``time.process_time``; the database is in-process for SQLite) and wall seconds, label vectors
from a hash (MiniLM's cost is not what this measures). Each timed write is paired with one by the
baseline, in the same database at the same size: the writes' key lookups as row-value ``IN``
alone (``storage.writes._by_key`` before it led with the indexed first column on SQLite, which
scanned the whole unique index for each of them).

    .venv/bin/python bench/store_write.py                       # 0, 10k and 46,080 neurons' worth
    .venv/bin/python bench/store_write.py --sizes 0,200000      # four whole models' worth
    .venv/bin/python bench/store_write.py --cache /work/pcache  # reuse bench/pipeline.py's slice
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
import tempfile
import time
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neurolabel.pipeline.spec import RunSpec  # noqa: E402

BATCH = RunSpec().store_every
"""Neurons per timed write, as a labelling run writes them (``RunSpec.store_every``, 128)."""


def hash_embedder(texts):
    out = np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=384) for t in texts])
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def _explanations(cache: Path | None):
    """Scored explanations of real neurons (concept induction and PMI), one list per neuron."""
    import glob

    from neurolabel.pipeline.run import build_plugins, explain_and_score_one
    from neurolabel.pipeline.spec import RunSpec

    records = None
    for path in sorted(glob.glob(str(cache / "pipeline-slice-*.pkl"))) if cache else ():
        with open(path, "rb") as f:
            got = pickle.load(f)[0]
        if records is None or len(got) > len(records):
            records = got
    if records is None:
        from neurolabel.activations.models import load_target
        from neurolabel.activations.record import record_activations

        records = list(record_activations(load_target("default"), "default", layers=[10], units=list(range(16)),
                                          max_tokens=4096, progress=False).records())
    records = records[:16]
    plugins = build_plugins(RunSpec(layers=(10,), explainers=("concept_induction", "pmi")))
    return [list(explain_and_score_one(r, ["concept_induction", "pmi"], plugins).explanations) for r in records]


def _fill(url: str, model: str, n_neurons: int, per_neuron: int, start: int) -> None:
    """Bulk rows: neurons ``start`` … ``n_neurons - 1`` of ``model`` (layer = i // 1536) with
    ``per_neuron`` explanations each, half per explainer, the best-scored of each with a vector."""
    from sqlalchemy import insert, select

    from neurolabel.storage.db import session_scope
    from neurolabel.storage.models import ExplanationRow, Neuron, utcnow
    from neurolabel.storage.writes import ensure_models

    now = utcnow()
    vec = hash_embedder(["x"])[0].astype("<f4").tobytes()
    with session_scope(url) as s:
        mid = ensure_models(session=s, names=[model])[model]
        for lo in range(start, n_neurons, 5000):
            hi = min(n_neurons, lo + 5000)
            s.execute(insert(Neuron), [{"model_id": mid, "layer": i // 1536, "index": i % 1536} for i in range(lo, hi)])
            ids = dict(s.execute(select(Neuron.index + Neuron.layer * 1536, Neuron.id).where(
                Neuron.model_id == mid, Neuron.layer.between(lo // 1536, (hi - 1) // 1536))).all())
            rows = []
            for i in range(lo, hi):
                for j in range(per_neuron):
                    ex, rank = ("concept_induction", j // 2) if j % 2 == 0 else ("pmi", j // 2)
                    rows.append({"neuron_id": ids[i], "explainer": ex, "explainer_version": "bench", "rank": rank,
                                 "text": f"label {i} {j}", "structured": {}, "params": {},
                                 "score": 0.5 - 0.01 * rank, "accepted": False,
                                 "embedding": vec if rank == 0 else None, "created_at": now, "updated_at": now})
            s.execute(insert(ExplanationRow), rows)
        s.commit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="0,10000,46080",
                    help="neurons already labelled before the timed writes (comma separated, increasing)")
    ap.add_argument("--per-neuron", type=int, default=10, help="explanations per bulk neuron (a run leaves ~9.5)")
    ap.add_argument("--writes", type=int, default=5, help="timed writes per size and code path")
    ap.add_argument("--db", default=None, help="database URL (default: a SQLite file in a temporary folder)")
    ap.add_argument("--cache", type=Path, default=None, help="bench/pipeline.py's --cache folder (its recorded slice)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from neurolabel.core.types import NeuronId
    from neurolabel.pipeline.run import store
    from neurolabel.storage import writes
    from neurolabel.storage.db import upgrade

    by_key = writes._by_key

    def _row_value_in(session, *columns, keys):
        from sqlalchemy import tuple_

        return [tuple_(*columns).in_(list(keys))]

    sizes = sorted(int(x) for x in args.sizes.split(","))
    per = _explanations(args.cache)
    n_expl = sum(len(p) for p in per) * BATCH / len(per)
    model = "smollm2-135m"
    print(f"# bench/store_write.py: writes of {BATCH} neurons (~{n_expl:.0f} real scored explanations, concept "
          f"induction + PMI) into a label database holding N neurons x {args.per_neuron} explanations")
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{tmp}/store-write.db"
        upgrade(url)
        filled, fresh = 0, 10_000_000
        for size in sizes:
            _fill(url, model, size, args.per_neuron, filled)
            filled = size
            times: dict[str, tuple[list, list]] = {"current": ([], []), "baseline": ([], [])}
            for w in range(args.writes + 1):  # the first pair warms up (not counted)
                for name in ("current", "baseline"):
                    batch = []
                    for k in range(BATCH):  # neurons no write touched before (layers past the model's)
                        fresh += 1
                        neuron = NeuronId(fresh // 1536, fresh % 1536)
                        batch += [replace(e, model=model, neuron=neuron) for e in per[k % len(per)]]
                    writes._by_key = by_key if name == "current" else _row_value_in
                    try:
                        c0, t0 = time.process_time(), time.perf_counter()
                        store(batch, [], database_url=url, model=model, versions={}, threshold=None,
                              embedder=hash_embedder)
                        c1, t1 = time.process_time(), time.perf_counter()
                    finally:
                        writes._by_key = by_key
                    if w:
                        times[name][0].append(c1 - c0)
                        times[name][1].append(t1 - t0)
            cur, base = ({k: 1000 * float(np.median(v)) for k, v in zip(("cpu", "wall"), times[n])}
                         for n in ("current", "baseline"))
            print(f"N = {size:>7} neurons ({size * args.per_neuron:>8} explanations): write of {BATCH} neurons "
                  f"{cur['cpu']:7.1f} ms CPU, {cur['wall']:7.1f} ms wall; baseline {base['cpu']:7.1f} ms CPU, "
                  f"{base['wall']:7.1f} ms wall ({cur['cpu'] / base['cpu']:.2f}x CPU; medians of {args.writes})")


if __name__ == "__main__":
    main()
