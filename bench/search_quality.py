"""Semantic search over label vectors computed from shorter *search texts* than the full label.

Planted units (``bench/planted.py``: ten WordNet classes, at noise 0, 0.05 and 0.1: 30 units whose
concept is known) and real SmolLM2 neurons (distractors: the 96 layer-10 neurons of
``bench/pipeline.py``'s slice and the 150 neurons of ``bench/quality.py``'s 100k-token recording,
from their caches) are explained by ``concept_induction``; each keeps one label, its best-scored
candidate (the store's ``best`` policy). The queries are the planted classes' names (WordNet lemma
names, up to three per class); a query's relevant labels are the three planted units of its class.
Each rule computes the vector of a label from a search text; queries are embedded as
``storage.search`` embeds them (float32), labels as the label embedder does
(:func:`lm.embeddings.embed_labels`). Reported per rule: MRR (first relevant label), recall@10
(share of the relevant labels in the top ten), the mean MiniLM tokens embedded per label (with
``[CLS]``/``[SEP]``, at most 256), and on the real labels the recall@10 of each label's ten nearest
labels by full-text vectors (context, not the criterion). Known items: each WordNet class a real
label names in a raising part is a query whose relevant label is that one; their MRR is reported
by the position of the part (1 = the strongest), which shows what a cut keeps and loses. The
rule adopted (:func:`storage.search_text.search_text`) is ``cmp64``: the label compacted
(:func:`storage.search_text.compact`) and cut to 64 tokens (``cmpN``: compacted, then cut to N;
``--against``: the rule the paired differences are taken against).

    .venv/bin/python bench/search_quality.py --cache /work/qcache --slice-cache /work/pcache
    # the figures in storage/search_text.py (layer 10's slice, then layer 20's: bench/pipeline.py --layer 20)
    .venv/bin/python bench/search_quality.py --caps 96 --compact 96,64,48 --against cap96 --records \
        /work/pcache/pipeline-slice-5c1694005899889a.pkl
    # the figures of the first rule (cap96): all three recordings of real neurons (396 labels)
    .venv/bin/python bench/search_quality.py --caps 128,96,64 --records \
        /work/pcache/pipeline-slice-871af6a754a64eb5.pkl /work/qcache/quality-57ad69d4b659967b.pkl \
        /work/qcache/quality-9ed2bc9ecc0de3b3.pkl
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NOISES = (0.0, 0.05, 0.1)


def _labels(records, tag: str = "concept_induction") -> list:
    from bench.quality import _best, _explain, _score_all
    from neurolabel.pipeline.simulators import resolve_simulators

    sim = resolve_simulators([tag])[tag]
    out = []
    for r in records:
        b = _best(_score_all(_explain(tag, r), r, sim))
        out.append(b)
    return out


def _real_records(cache: Path | None, slice_cache: Path | None, files: list[Path]) -> list:
    got = []
    for path in files:  # named recordings (a pickle whose first item is the records) instead of the caches'
        with path.open("rb") as f:
            got += list(pickle.load(f)[0])
    if files:
        return got
    for folder, pattern in ((slice_cache, "pipeline-slice-*.pkl"), (cache, "quality-*.pkl")):
        if folder is None:
            continue
        # the largest file of each kind: the full slice (96 neurons) / the 100k-token recording
        files = sorted(folder.glob(pattern), key=lambda p: p.stat().st_size)
        if not files:
            raise SystemExit(f"no {pattern} in {folder}: run bench/pipeline.py / bench/quality.py with --cache first")
        with files[-1].open("rb") as f:
            got += list(pickle.load(f)[0])
    return got


def _known_items(expls, onto, offset: int) -> list[tuple[str, int, int]]:
    """``(query, label index, part position)``: the WordNet classes named in each label's raising
    parts (atoms and conjuncts, not what a part follows), position 1 = the strongest part."""
    out = []
    for j, e in enumerate(expls):
        tree = e.structured.get("expression") or {}
        parts = tree["or"] if "or" in tree else [tree]
        weights, base = e.structured.get("weights") or [], e.structured.get("base", 0.0)
        if len(weights) != len(parts):
            continue
        pos, seen = 0, set()
        for part, w in zip(parts, weights):
            if w < base:
                continue
            pos += 1
            atoms = [part] if "class" in part else [a for a in part.get("and", []) if "class" in a]
            for a in atoms:
                iri = a["class"]
                if "wordnet" not in iri:
                    continue
                name = onto.label(onto.find(iri)).lower().replace("_", " ")
                if name not in seen:
                    seen.add(name)
                    out.append((name, offset + j, pos))
    return out


def _n_tokens(texts: list[str]) -> np.ndarray:
    from neurolabel.lm.embeddings import load_embedder

    model = load_embedder()
    ids = model.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=model.max_seq_length)["input_ids"]
    return np.array([len(x) for x in ids])


def _rank_metrics(sim: np.ndarray, relevant: list[set[int]]) -> tuple[float, float]:
    rr, rec = _per_query(sim, relevant)
    return float(np.mean(rr)), float(np.mean(rec))


def _diff(a: np.ndarray, b: np.ndarray, n: int = 2000) -> str:
    """Mean of ``b - a`` (paired per query) and its 95% bootstrap interval over the queries."""
    d = np.asarray(b) - np.asarray(a)
    rng = np.random.default_rng(0)
    boot = d[rng.integers(0, len(d), size=(n, len(d)))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return f"{d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _per_query(sim: np.ndarray, relevant: list[set[int]]) -> tuple[np.ndarray, np.ndarray]:
    mrr, rec = [], []
    for q, rel in enumerate(relevant):
        order = np.argsort(-sim[q], kind="stable")
        ranks = [int(np.flatnonzero(order == j)[0]) for j in rel]
        mrr.append(1.0 / (1 + min(ranks)))
        rec.append(np.mean([r < 10 for r in ranks]))
    return np.array(mrr), np.array(rec)


def _neighbours(mat: np.ndarray, k: int = 10) -> np.ndarray:
    s = mat @ mat.T
    np.fill_diagonal(s, -np.inf)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=None, help="bench/quality.py's recording cache (150 real neurons)")
    ap.add_argument("--slice-cache", type=Path, default=None, help="bench/pipeline.py's slice cache (96 neurons)")
    ap.add_argument("--records", type=Path, nargs="*", default=[],
                    help="recording pickles of real neurons (bench/quality.py's or bench/pipeline.py's cache files) "
                         "used instead of the caches' largest ones")
    ap.add_argument("--caps", default="128,96,64,48,32", help="token caps measured")
    ap.add_argument("--compact", default="", help="token caps measured on the compacted text (cmpN)")
    ap.add_argument("--against", default="full", help="the rule the paired differences are taken against")
    args = ap.parse_args()
    from bench.planted import DEFAULT_CLASSES, planted_records
    from neurolabel.lm.embeddings import embed, embed_labels
    from neurolabel.ontology.build import default_ontology
    from neurolabel.storage.search_text import cap_tokens, compact

    t0 = time.perf_counter()
    onto = default_ontology()
    planted_texts, planted_class = [], []
    for noise in NOISES:
        recs = planted_records(DEFAULT_CLASSES, noise=noise, n_windows=1500, window_tokens=32, n_top=10, n_random=10)
        for c, e in enumerate(_labels(recs)):
            if e is not None:
                planted_texts.append(e.text)
                planted_class.append(c)
    real_expl = [e for e in _labels(_real_records(args.cache, args.slice_cache, args.records)) if e is not None]
    real = [e.text for e in real_expl]
    texts = planted_texts + real
    # known items: each WordNet class a real label names in a raising part, by the part's position
    items = _known_items(real_expl, onto, offset=len(planted_texts))
    queries, relevant = [], []
    for c, name in enumerate(DEFAULT_CLASSES):
        rel = {j for j, k in enumerate(planted_class) if k == c}
        for lemma in list(dict.fromkeys(x.lower().replace("_", " ") for x in onto.labels[onto.find(name)]))[:3]:
            queries.append(lemma)
            relevant.append(rel)
    print(f"# bench/search_quality.py: {len(planted_texts)} planted labels, {len(real)} real labels, "
          f"{len(queries)} queries ({time.perf_counter() - t0:.0f} s to explain)")
    q = embed(queries)
    iq = embed([t for t, _, _ in items])
    buckets = [(1, 1), (2, 3), (4, 8), (9, 10_000)]
    rules = [("full", None)] + [(f"cap{n}", int(n)) for n in args.caps.split(",")]
    rules += [(f"cmp{n}", -int(n)) for n in args.compact.split(",") if n]
    full_real, per_rule = None, {}
    print(f"{'rule':<8} {'tokens/label':>12} {'real tokens':>12} {'MRR':>6} {'R@10':>6} {'nbr R@10':>9} {'embed s':>8}  "
          + "  ".join(f"item MRR p{a}-{b if b < 100 else ''}" for a, b in buckets))
    for name, cap in rules:
        st = (texts if cap is None else [cap_tokens(t, cap) for t in texts] if cap > 0
              else [cap_tokens(compact(t), -cap) for t in texts])
        t1 = time.process_time()
        mat = embed_labels(st)
        cpu = time.process_time() - t1
        mrr, rec = _rank_metrics(q @ mat.T, relevant)
        nb = _neighbours(mat[len(planted_texts):])
        if full_real is None:
            full_real = nb
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(nb, full_real)])
        ntok = _n_tokens(st)
        isim = iq @ mat.T
        per_rule[name] = (_per_query(q @ mat.T, relevant), _per_query(isim, [{j} for _, j, _ in items])[0])
        by = []
        for a, b in buckets:
            sel = [k for k, (_, _, pos) in enumerate(items) if a <= pos <= b]
            by.append(_rank_metrics(isim[sel], [{items[k][1]} for k in sel])[0] if sel else float("nan"))
        print(f"{name:<8} {ntok.mean():>12.1f} {ntok[len(planted_texts):].mean():>12.1f} {mrr:>6.3f} {rec:>6.3f} "
              f"{overlap:>9.3f} {cpu:>8.2f}  " + "  ".join(f"{v:>13.3f}" for v in by))
    print(f"difference to {args.against}, paired per query, mean [95% bootstrap interval]: planted MRR | planted R@10 | "
          "known-item MRR by position bucket")
    ((f_rr, f_rec), f_item) = per_rule[args.against]
    for name, ((rr, rec), item) in per_rule.items():
        if name == args.against:
            continue
        cols = []
        for a, b in buckets:
            sel = [k for k, (_, _, pos) in enumerate(items) if a <= pos <= b]
            cols.append(_diff(f_item[sel], item[sel]) if sel else "-")
        print(f"{name:<8} {_diff(f_rr, rr)} | {_diff(f_rec, rec)} | " + " | ".join(cols))
    print("known items per position bucket: " + ", ".join(
        f"p{a}-{b if b < 100 else ''}: {sum(a <= p <= b for _, _, p in items)}" for a, b in buckets))


if __name__ == "__main__":
    main()
