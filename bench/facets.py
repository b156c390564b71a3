"""Facets (polysemantic labels) against the single best label, on held-out windows.

1. Planted units (``bench/planted.py``: real sentences, synthetic units): two-concept units
   (fires on words under either of two WordNet classes) and one-concept units. Per event
   representation (``explainers/facets.py``): how often the number of facets is right (2 and 1)
   and the two facets name the two planted classes — the measurement the default representation
   was chosen by.
2. Real SmolLM2-135M neurons (layers 2, 6, 12, 18, 24, 29 × units 0–24, 32k corpus tokens,
   as ``bench/quality.py`` records them): :func:`facet_gain` — the share of neurons whose faceted
   label scores higher on held-out windows than their single best label (of the facets'
   sub-explainers, each scored by its pipeline default simulator), and the mean gain. The
   pipeline keeps whichever scores higher, so the kept label's mean is reported too.

    .venv/bin/python bench/facets.py            # full run
    .venv/bin/python bench/facets.py --quick    # small run
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neurolabel.core.errors import ExplanationError, ScoringError  # noqa: E402
from neurolabel.core.types import Explanation, NeuronRecord  # noqa: E402

log = logging.getLogger("bench.facets")

SUB_EXPLAINERS = ("concept_induction", "pmi")

PAIRS = (("bird.n.01", "weapon.n.01"), ("vehicle.n.01", "food.n.02"), ("person.n.01", "building.n.01"),
         ("body_part.n.01", "city.n.01"), ("garment.n.01", "time_period.n.01"), ("plant.n.02", "vehicle.n.01"))
SINGLES = ("bird.n.01", "vehicle.n.01", "person.n.01", "food.n.02", "animal.n.01", "building.n.01")


def _value(e: Explanation | None) -> float:
    return 0.0 if e is None or e.score is None or e.score.score is None else float(e.score.score)


def _score(e: Explanation, record: NeuronRecord, sim_tag: str) -> Explanation | None:
    from neurolabel.scoring.validate import simulate_and_score
    from neurolabel.pipeline.plugins import build
    from neurolabel.pipeline.simulators import applies, fallback

    sim = build("simulator", sim_tag)
    if not applies(sim, e):
        sim = fallback(e)[1]
    try:
        return simulate_and_score(e, record, simulator=sim)
    except ScoringError as exc:
        log.warning("%s: %s", record.neuron, exc)
        return None


def single_best(record: NeuronRecord, explainers: Sequence[str] = SUB_EXPLAINERS) -> Explanation | None:
    """The best held-out-scored explanation of ``record`` among ``explainers`` (default simulators)."""
    from neurolabel.pipeline.plugins import build
    from neurolabel.pipeline.simulators import default_simulator

    best = None
    for tag in explainers:
        try:
            cands = build("explainer", tag).explain(record)
        except ExplanationError:
            continue
        for c in cands:
            s = _score(c, record, default_simulator(tag))
            if s is not None and (best is None or _value(s) > _value(best)):
                best = s
    return best


def faceted(record: NeuronRecord, explainer: Any) -> Explanation | None:
    """The faceted label of ``record``, scored by the facets simulator, each facet scored too."""
    from neurolabel.scoring.facet_simulator import score_facets

    try:
        [e] = explainer.explain(record)
    except ExplanationError:
        return None
    s = _score(e, record, "facets")
    return None if s is None else score_facets(s, record)


def facet_gain(records: Sequence[NeuronRecord], *, explainer: Any = None,
               singles: Sequence[Explanation | None] | None = None) -> dict[str, Any]:
    """Faceted label vs single best label on each record's held-out windows.

    Returns ``n``, ``share_raised`` (facets score higher), ``mean_gain`` (facets − single, over all
    neurons; an undefined score counts as 0), ``mean_gain_where_raised``, ``mean_single``,
    ``mean_facets``, ``mean_kept`` (the higher of the two, as the pipeline keeps it), ``share_multi``
    (neurons given ≥ 2 facets) and ``share_raised_multi`` (of those, facets higher). ``singles``
    may pass precomputed single best labels (e.g. from ``bench/quality.py``)."""
    from neurolabel.explainers.facets import FacetsExplainer

    explainer = explainer or FacetsExplainer.from_defaults()
    single, fac, multi = [], [], []
    for i, rec in enumerate(records):
        best = singles[i] if singles is not None else single_best(rec)
        f = faceted(rec, explainer)
        single.append(_value(best))
        fac.append(_value(f))
        multi.append(f is not None and len(f.structured["facets"]) > 1)
    s, f, m = np.array(single), np.array(fac), np.array(multi, dtype=bool)
    gain = f - s
    raised = gain > 1e-9
    return {
        "n": int(len(s)),
        "share_raised": float(raised.mean()) if len(s) else 0.0,
        "mean_gain": float(gain.mean()) if len(s) else 0.0,
        "mean_gain_where_raised": float(gain[raised].mean()) if raised.any() else 0.0,
        "mean_single": float(s.mean()) if len(s) else 0.0,
        "mean_facets": float(f.mean()) if len(s) else 0.0,
        "mean_kept": float(np.maximum(s, f).mean()) if len(s) else 0.0,
        "share_multi": float(m.mean()) if len(s) else 0.0,
        "share_raised_multi": float(raised[m].mean()) if m.any() else 0.0,
    }


def planted(representations: Sequence[str], n_windows: int) -> None:
    from bench.planted import planted_records
    from neurolabel.explainers.facets import FacetsExplainer
    from neurolabel.ontology.build import default_ontology

    onto = default_ontology()
    t0 = time.perf_counter()
    recs = planted_records([*PAIRS, *SINGLES], n_windows=n_windows, window_tokens=32, n_top=20, n_random=20)
    print(f"\n## 1. planted units: {len(PAIRS)} two-concept, {len(SINGLES)} one-concept "
          f"({time.perf_counter() - t0:.1f} s to build)")
    print(f"{'representation':<18} {'2-concept: 2 facets':>20} {'naming both':>12} {'1-concept: 1 facet':>19} "
          f"{'s/neuron':>9}")
    for rep in representations:
        ex = FacetsExplainer.from_defaults(representation=rep)
        ex.explain(recs[0])  # warm-up (embedder, caches)
        t1 = time.perf_counter()
        two = both = one = 0
        for i, rec in enumerate(recs):
            try:
                [e] = ex.explain(rec)
            except ExplanationError:
                continue
            facets = e.structured["facets"]
            if i < len(PAIRS):
                want = {onto.iri(onto.find(c)) for c in PAIRS[i]}
                two += len(facets) == 2
                got = {iri for f in facets for iri in (f["structured"].get("iris") or ())}
                both += len(facets) == 2 and want <= got
            else:
                one += len(facets) == 1
        print(f"{rep:<18} {two:>14}/{len(PAIRS):<5} {both:>6}/{len(PAIRS):<5} {one:>13}/{len(SINGLES):<5} "
              f"{(time.perf_counter() - t1) / len(recs):>9.2f}")


def real_records(layers: list[int], units: list[int], max_tokens: int) -> tuple[list[NeuronRecord], int]:
    """Real SmolLM2 neurons recorded on the default corpus as ``bench/quality.py`` records them
    (10 top / 10 random windows of 32 tokens per split), with their corpus token count; cached as
    OpenAI-format JSONL under ``~/.cache/neurolabel/bench`` (keyed by the default corpus's name, the
    layers, units and tokens) so ``bench/decode.py`` reuses them."""
    import json

    from neurolabel.activations.openai_format import read_records, write_records

    from neurolabel.activations.corpus import load_corpus

    corpus = load_corpus("default")
    cache = Path.home() / ".cache" / "neurolabel" / "bench"
    tag = "".join(c if c.isalnum() or c in "-." else "_" for c in corpus.name)
    stem = f"real-{tag}-{'_'.join(map(str, layers))}-u{units[0]}-{units[-1]}-{max_tokens}"
    path, meta = cache / f"{stem}.jsonl", cache / f"{stem}.json"
    if path.is_file() and meta.is_file():
        return read_records(path), int(json.loads(meta.read_text())["n_tokens"])
    from neurolabel.activations.models import load_target
    from neurolabel.activations.record import record_activations

    recording = record_activations(load_target("default"), corpus, layers=layers, units=units,
                                   max_tokens=max_tokens, top_k=10, n_random=10, window_tokens=32, progress=False)
    records = [r for r in recording.records() if r.windows("top", "score")]
    cache.mkdir(parents=True, exist_ok=True)
    write_records(path, records)
    meta.write_text(json.dumps({"n_tokens": recording.n_tokens}))
    return records, recording.n_tokens


def real(layers: list[int], units: list[int], max_tokens: int, representations: Sequence[str]) -> None:
    from neurolabel.explainers.facets import FacetsExplainer

    t0 = time.perf_counter()
    records, n_tokens = real_records(layers, units, max_tokens)
    print(f"\n## 2. real neurons: {len(records)} SmolLM2-135M neurons (layers {layers}, units {units[0]}-{units[-1]}), "
          f"{n_tokens} corpus tokens, 10 top/10 random windows per split "
          f"(recorded or read from the cache in {time.perf_counter() - t0:.1f} s)")
    t1 = time.perf_counter()
    singles = [single_best(r) for r in records]
    print(f"single best label ({'+'.join(SUB_EXPLAINERS)}): {time.perf_counter() - t1:.1f} s")
    print(f"{'representation':<18} {'neurons':>7} {'single':>7} {'facets':>7} {'kept':>7} {'raised':>7} "
          f"{'mean gain':>10} {'gain|raised':>12} {'>=2 facets':>11} {'raised|>=2':>11} {'s/neuron':>9}")
    for rep in representations:
        t1 = time.perf_counter()
        g = facet_gain(records, explainer=FacetsExplainer.from_defaults(representation=rep), singles=singles)
        print(f"{rep:<18} {g['n']:>7} {g['mean_single']:>7.3f} {g['mean_facets']:>7.3f} {g['mean_kept']:>7.3f} "
              f"{g['share_raised']:>7.2f} {g['mean_gain']:>+10.4f} {g['mean_gain_where_raised']:>+12.4f} "
              f"{g['share_multi']:>11.2f} {g['share_raised_multi']:>11.2f} {(time.perf_counter() - t1) / max(1, g['n']):>9.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run")
    ap.add_argument("--representations", default="classes+token,classes,token,classes+context",
                    help="comma-separated event representations to compare")
    ap.add_argument("--real-representations", default="classes+token",
                    help="representations run on the real neurons (each one explains every neuron again)")
    ap.add_argument("--max-tokens", type=int, default=32_768)
    ap.add_argument("--skip-planted", action="store_true")
    ap.add_argument("--skip-real", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    reps = [r for r in args.representations.split(",") if r]
    real_reps = [r for r in args.real_representations.split(",") if r]
    print(f"# bench/facets.py {'--quick ' if args.quick else ''}sub-explainers={list(SUB_EXPLAINERS)}")
    t0 = time.perf_counter()
    if not args.skip_planted:
        planted(reps, n_windows=800 if args.quick else 1500)
    if not args.skip_real:
        layers = [6, 18] if args.quick else [2, 6, 12, 18, 24, 29]
        units = list(range(6 if args.quick else 25))
        real(layers, units, 8192 if args.quick else args.max_tokens, real_reps)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
