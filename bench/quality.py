"""Quality of the labels: planted-concept recovery and held-out scores on real neurons.

1. Planted units (``bench/planted.py``: real sentences, a synthetic unit firing on words under a
   WordNet class): per explainer, the recovery rate — the explainer's best-scored explanation
   names the planted class (its class IRI for class expressions; one of the class's labels in
   the text otherwise) — and the mean held-out score.
2. Real SmolLM2-135M MLP neurons recorded on the default corpus: per explainer, the mean
   held-out score (undefined scores count as 0 in means and as failures in fractions), the
   fraction >= 0.5, and the same for a shuffled-label baseline (each neuron scored with the
   candidates of another neuron, best candidate kept, exactly as for its own). Target: the
   best label per neuron scores >= 2x the shuffled baseline.

Each explainer is scored with its pipeline default simulator (``service.pipeline``).

    .venv/bin/python bench/quality.py            # 100 real neurons
    .venv/bin/python bench/quality.py --quick    # small run
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neurolabel.core.errors import ExplanationError, ScoringError  # noqa: E402
from neurolabel.core.registry import EXPLAINERS  # noqa: E402
from neurolabel.core.types import Explanation, NeuronRecord  # noqa: E402

log = logging.getLogger("bench.quality")


def _score_all(explanations: list[Explanation], record: NeuronRecord, sim_tag: str) -> list[Explanation]:
    from neurolabel.scoring.validate import simulate_and_score
    from neurolabel.service.pipeline import simulator_applies, fallback_simulator, plugin

    out = []
    for e in explanations:
        e = replace(e, model=record.model, neuron=record.neuron, score=None)
        sim = plugin("simulator", sim_tag)
        if not simulator_applies(sim, e):
            sim = fallback_simulator(e)[1]
        try:
            out.append(simulate_and_score(e, record, simulator=sim))
        except ScoringError as exc:
            log.warning("%s: %s", record.neuron, exc)
    return out


def _value(e: Explanation | None) -> float:
    return 0.0 if e is None or e.score is None or e.score.score is None else float(e.score.score)


def _best(scored: list[Explanation]) -> Explanation | None:
    return max(scored, key=_value) if scored else None


def _ratio(own: float, shuffled: float) -> str:
    return f"{own / shuffled:.2f}" if shuffled > 0 else "n/a"


def _explain(tag: str, record: NeuronRecord) -> list[Explanation]:
    from neurolabel.service.pipeline import plugin

    try:
        return plugin("explainer", tag).explain(record)
    except ExplanationError as exc:
        log.info("%s %s: %s", record.neuron, tag, exc)
        return []


def _recovered(expl: Explanation | None, cls: int, onto) -> bool:
    if expl is None:
        return False
    iris = expl.structured.get("iris") if expl.structured else None
    if iris:
        return onto.iri(cls) in iris
    text = f" {expl.text.lower()} "
    return any(f" {lab.lower().replace('_', ' ')}" in text for lab in onto.labels[cls])


def planted(explainers: list[str], sims: dict[str, str], n_classes: int, noise: float, n_windows: int) -> None:
    from bench.planted import DEFAULT_CLASSES, planted_records
    from neurolabel.ontology.build import default_ontology

    classes = DEFAULT_CLASSES[:n_classes]
    t0 = time.perf_counter()
    records = planted_records(classes, noise=noise, n_windows=n_windows, window_tokens=32, n_top=10, n_random=10)
    onto = default_ontology()
    print(f"\n## 1. planted-concept units: {len(classes)} classes, noise {noise}, "
          f"{n_windows} windows ({time.perf_counter() - t0:.1f} s to build)")
    print(f"{'explainer':<18} {'simulator':<10} {'recovered':>10} {'mean score':>11}  best labels")
    for tag in explainers:
        hits, scores, labels = 0, [], []
        for cls_name, rec in zip(classes, records):
            best = _best(_score_all(_explain(tag, rec), rec, sims[tag]))
            hits += _recovered(best, onto.find(cls_name), onto)
            scores.append(_value(best))
            labels.append(f"{cls_name.split('.')[0]}->{best.text[:40] if best else '-'}")
        print(f"{tag:<18} {sims[tag]:<10} {hits:>4}/{len(classes):<5} {np.mean(scores):>11.3f}  {'; '.join(labels[:4])}")


def real(explainers: list[str], sims: dict[str, str], layers: list[int], units: list[int], max_tokens: int,
         llm_neurons: int, seed: int) -> None:
    from neurolabel.activations.models import load_target
    from neurolabel.activations.record import record_activations

    t0 = time.perf_counter()
    target = load_target("default")
    recording = record_activations(target, "default", layers=layers, units=units, max_tokens=max_tokens,
                                   top_k=10, n_random=10, window_tokens=32, progress=False)
    records = [r for r in recording.records() if r.windows("top", "score")]
    n = len(records)
    print(f"\n## 2. real neurons: {n} SmolLM2-135M neurons (layers {layers}, units {units[0]}-{units[-1]}), "
          f"{recording.n_tokens} corpus tokens, 32-token windows, 10 top/10 random per split "
          f"(recorded in {time.perf_counter() - t0:.1f} s)")
    rng = np.random.default_rng(seed)
    perm = (np.arange(n) + rng.integers(1, n)) % n  # a derangement: nobody gets their own label
    own = {tag: np.zeros(n) for tag in explainers}
    shuf = {tag: np.zeros(n) for tag in explainers}
    used = {tag: np.zeros(n, dtype=bool) for tag in explainers}
    print(f"{'explainer':<18} {'simulator':<10} {'neurons':>7} {'mean':>7} {'>=0.5':>6} {'shuffled mean':>14} "
          f"{'shuffled >=0.5':>15} {'ratio':>6} {'s/neuron':>9}")
    for tag in explainers:
        limit = min(n, llm_neurons) if sims[tag] == "llm" or tag == "llm_summary" else n
        t1 = time.perf_counter()
        cands = [_explain(tag, records[i]) for i in range(limit)]
        for i in range(limit):
            j = int(perm[i]) if perm[i] < limit else int((i + 1) % limit)
            own[tag][i] = _value(_best(_score_all(cands[i], records[i], sims[tag])))
            shuf[tag][i] = _value(_best(_score_all(cands[j], records[i], sims[tag])))
            used[tag][i] = True
        m = used[tag]
        o, s = own[tag][m], shuf[tag][m]
        print(f"{tag:<18} {sims[tag]:<10} {m.sum():>7} {o.mean():>7.3f} {np.mean(o >= 0.5):>6.2f} {s.mean():>14.3f} "
              f"{np.mean(s >= 0.5):>15.2f} {_ratio(o.mean(), s.mean()):>6} {(time.perf_counter() - t1) / max(1, limit):>9.2f}")
    every = np.any([used[t] for t in explainers], axis=0)  # best among the explainers run on it
    best_own = np.max([own[t] for t in explainers], axis=0)[every]
    best_shuf = np.max([shuf[t] for t in explainers], axis=0)[every]
    own_m, shuf_m = best_own.mean(), best_shuf.mean()
    print(f"{'best label':<18} {'-':<10} {every.sum():>7} {own_m:>7.3f} {np.mean(best_own >= 0.5):>6.2f} "
          f"{shuf_m:>14.3f} {np.mean(best_shuf >= 0.5):>15.2f} {_ratio(own_m, shuf_m):>6}")
    met = own_m > 0 and own_m >= 2 * max(shuf_m, 0.0)
    print(f"target: best label mean >= 2x shuffled baseline mean -> {'MET' if met else 'NOT MET'} "
          f"({own_m:.3f} vs {shuf_m:.3f}, ratio {_ratio(own_m, shuf_m)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run (few classes, 12 neurons, small corpus)")
    ap.add_argument("--explainers", default="", help="comma-separated tags (default: every installed one)")
    ap.add_argument("--neurons", type=int, default=100, help="real neurons (spread over 4 layers)")
    ap.add_argument("--llm-neurons", type=int, default=20, help="real neurons explained by llm_summary (slow on CPU)")
    ap.add_argument("--max-tokens", type=int, default=32_768, help="corpus tokens recorded")
    ap.add_argument("--skip-planted", action="store_true")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--simulators", default="", help="one tag for all or explainer=sim,... (default: pipeline defaults)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from neurolabel.service.pipeline import resolve_simulators

    explainers = [t for t in args.explainers.split(",") if t] or [
        t for t in ("concept_induction", "pmi", "llm_summary") if t in EXPLAINERS]
    from neurolabel.service.cli_label import _parse_simulators

    sims = resolve_simulators(explainers, _parse_simulators(args.simulators))
    if args.quick:
        args.neurons, args.llm_neurons, args.max_tokens = 12, 4, 8192
    print(f"# bench/quality.py {'--quick ' if args.quick else ''}explainers={explainers} simulators={sims}")
    t0 = time.perf_counter()
    if not args.skip_planted:
        planted(explainers, sims, n_classes=4 if args.quick else 10, noise=0.0 if args.quick else 0.05,
                n_windows=400 if args.quick else 1500)
    if not args.skip_real:
        layers = [10] if args.quick else [4, 10, 16, 22]
        per_layer = max(1, args.neurons // len(layers))
        real(explainers, sims, layers, list(range(per_layer)), args.max_tokens, args.llm_neurons, args.seed)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
