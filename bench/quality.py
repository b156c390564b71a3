"""Quality of the labels: planted-concept recovery, held-out scores on real neurons beside the
token-table ceiling measured in the same run, and how labels hold on other text.

1. Planted units (``bench/planted.py``: real sentences, a synthetic unit firing on words under a
   WordNet class): per explainer, the recovery rate — the explainer's best-scored explanation
   names the planted class — and the mean held-out score.
2. Real SmolLM2-135M MLP neurons (default: layers 2, 6, 12, 18, 24, 29 x units 0-24 = 150
   neurons, 100,000 tokens of the default corpus — as many as ``neurolabel label`` records by
   default; the issue's minimum is 32,768 (``--max-tokens 32768``) —, the recorder's defaults
   for top and random windows): per explainer, the best candidate's held-out score (each
   explanation scored by its explainer's default simulator, as the pipeline does): mean, median, share >= 0.5, share
   undefined (counted 0 in means), and the OpenAI-comparable part (as many random as top
   windows). The best label per neuron is the one the pipeline chooses among every explainer's
   best candidate (``scoring.validate.choose_label``: within one standard error of the highest
   score, the label fitted on the most explain-split tokens); the highest-scoring one is shown
   beside it. In the same
   run, on the same held-out windows, the reference tables (``bench/ceiling.py``): each token
   type's mean activation over the kept explain windows, over the whole explain split, and the
   previous + current token table — the ceiling a readable label should approach. Also the
   share of tokens, and of strongly active ones, that the ontology gives a class.
3. Cross-corpus: the same neurons recorded on other text (Debian's license texts by default,
   ``/usr/share/common-licenses``: modern legal English, in no built-in corpus); every neuron's
   best label, learnt on the main corpus, is scored on the held-out windows of that recording;
   beside it, the token table of the whole main-corpus explain split (no label) scored there.
   The cross corpus is recorded to ``--cross-max-tokens`` (32,768) whatever ``--max-tokens`` is,
   so labels learnt on more text are scored on the same windows.

    .venv/bin/python bench/quality.py                      # the issue's 150 neurons, 100k tokens
    .venv/bin/python bench/quality.py --max-tokens 32768   # the issue's minimum corpus
    .venv/bin/python bench/quality.py --quick              # 12 neurons, small corpus
    .venv/bin/python bench/quality.py --corpus wordnet     # which default corpus makes labels that hold
    .venv/bin/python bench/quality.py --set concept_induction.class_search=false   # explainer parameters
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
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

LICENSES = Path("/usr/share/common-licenses")


def _score(e: Explanation, record: NeuronRecord, sim_tag: str) -> Explanation | None:
    from neurolabel.scoring.validate import simulate_and_score
    from neurolabel.pipeline.plugins import build
    from neurolabel.pipeline.simulators import applies, fallback

    e = replace(e, model=record.model, neuron=record.neuron, score=None)
    sim = build("simulator", sim_tag)
    if not applies(sim, e):
        sim = fallback(e)[1]
    try:
        return simulate_and_score(e, record, simulator=sim)
    except ScoringError as exc:
        log.warning("%s: %s", record.neuron, exc)
        return None


def _score_all(explanations: list[Explanation], record: NeuronRecord, sim_tag: str) -> list[Explanation]:
    return [s for s in (_score(e, record, sim_tag) for e in explanations) if s is not None]


def _value(e: Explanation | None) -> float | None:
    return None if e is None or e.score is None else e.score.score


def _best(scored: list[Explanation]) -> Explanation | None:
    return max(scored, key=lambda e: _value(e) if _value(e) is not None else -2.0) if scored else None


def _label(candidates: list[Explanation]) -> Explanation | None:
    """The neuron's label as the pipeline chooses it (:func:`scoring.validate.choose_label`, the
    one-standard-error rule) among every explainer's best candidate; here over every scored
    candidate, accepted or not (a run labels only accepted ones)."""
    from neurolabel.scoring.validate import choose_label, label_candidate

    scored = [e for e in candidates if _value(e) is not None]
    if not scored:
        return _best(candidates)
    return scored[choose_label([label_candidate(e, k) for k, e in enumerate(scored)])]


PARAMS: dict[str, dict] = {}
"""Explainer parameters by tag (``--set``)."""


def _explain(tag: str, record: NeuronRecord) -> list[Explanation]:
    from neurolabel.pipeline.plugins import build

    try:
        return build("explainer", {"kind": tag, **PARAMS[tag]} if tag in PARAMS else tag).explain(record)
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


def _row(name: str, sim: str, values: list[float | None], extra: str = "") -> str:
    v = np.array([0.0 if x is None else x for x in values], dtype=float)
    undefined = np.mean([x is None for x in values]) if values else 0.0
    return (f"{name:<22} {sim:<10} {len(values):>5} {v.mean() if len(v) else 0:>7.3f} "
            f"{np.median(v) if len(v) else 0:>7.3f} {np.mean(v >= 0.5) if len(v) else 0:>6.2f} {undefined:>6.2f}{extra}")


HEADER = f"{'predictor':<22} {'simulator':<10} {'n':>5} {'mean':>7} {'median':>7} {'>=0.5':>6} {'undef':>6}"


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
        if tag == "llm_summary":
            continue
        hits, scores, labels = 0, [], []
        for cls_name, rec in zip(classes, records):
            best = _best(_score_all(_explain(tag, rec), rec, sims[tag]))
            hits += _recovered(best, onto.find(cls_name), onto)
            scores.append(_value(best) or 0.0)
            labels.append(f"{cls_name.split('.')[0]}->{best.text[:40] if best else '-'}")
        print(f"{tag:<18} {sims[tag]:<10} {hits:>4}/{len(classes):<5} {np.mean(scores):>11.3f}  {'; '.join(labels[:3])}")


def _license_corpus(tmp: Path) -> str | None:
    """Debian's license texts as a corpus folder (``.txt`` copies), or None when not installed."""
    if not LICENSES.is_dir():
        return None
    files = sorted(p for p in LICENSES.iterdir() if p.is_file())
    if not files:
        return None
    for p in files:
        shutil.copyfile(p, tmp / f"{p.name}.txt")
    return str(tmp)


def _record(target, corpus: str, layers: list[int], units: list[int], max_tokens: int, window_tokens: int,
            with_capture: bool, cache: Path | None = None):
    """``(records with held-out top windows, capture or None, corpus tokens)``; with ``cache``, a
    recording of the same arguments saved there by an earlier run is loaded instead of re-recorded
    (the key holds every argument, the recorder's defaults and the record's fields)."""
    import hashlib
    import inspect
    import pickle

    from neurolabel.activations.corpus import BUILTIN_CORPORA
    from neurolabel.activations.record import record_activations

    # every argument, the recorder's defaults and the record's fields: a changed default re-records;
    # a built-in corpus by its stored name too (it names its sources: a changed default corpus re-records)
    ident = f"{corpus}:{BUILTIN_CORPORA[corpus][0]}" if corpus in BUILTIN_CORPORA else corpus
    key = hashlib.sha256(repr((ident, layers, units, max_tokens, window_tokens, with_capture,
                               str(inspect.signature(record_activations)),
                               list(NeuronRecord.__dataclass_fields__))).encode()).hexdigest()[:16]
    path = cache / f"quality-{key}.pkl" if cache is not None else None
    if path is not None and path.exists():
        with path.open("rb") as f:
            return pickle.load(f)
    got = _record_now(target, corpus, layers, units, max_tokens, window_tokens, with_capture)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(got, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    return got


def _record_now(target, corpus: str, layers: list[int], units: list[int], max_tokens: int, window_tokens: int,
                with_capture: bool):
    from bench.ceiling import capturing
    from neurolabel.activations.record import record_activations

    kw = dict(layers=layers, units=units, max_tokens=max_tokens, window_tokens=window_tokens, progress=False)
    if with_capture:
        with capturing(target, layers, units, corpus, max_tokens=max_tokens, window_tokens=window_tokens) as cap:
            recording = record_activations(target, corpus, **kw)
    else:
        cap, recording = None, record_activations(target, corpus, **kw)
    return [r for r in recording.records() if r.windows("top", "score")], cap, recording.n_tokens


def real(explainers: list[str], sims: dict[str, str], layers: list[int], units: list[int], corpus: str,
         max_tokens: int, window_tokens: int, llm_neurons: int, cross: str | None,
         cache: Path | None = None, facets: bool = True, cross_max_tokens: int | None = None) -> None:
    from bench.ceiling import reference_scores
    from neurolabel.activations.models import load_target

    t0 = time.perf_counter()
    target = load_target("default")
    records, cap, n_tokens = _record(target, corpus, layers, units, max_tokens, window_tokens, True, cache)
    n = len(records)
    print(f"\n## 2. real neurons: {n} SmolLM2-135M neurons (layers {layers}, units {units[0]}-{units[-1]}), "
          f"{n_tokens} tokens of corpus {corpus!r}, {window_tokens}-token windows, "
          f"{len(records[0].windows('top', 'score'))} top / {len(records[0].windows('random', 'score'))} random "
          f"held-out windows per neuron (recorded in {time.perf_counter() - t0:.0f} s)")
    print(HEADER + f" {'oai mean':>8} {'s/neuron':>8}")
    best_of: dict[str, list[Explanation | None]] = {}
    for tag in explainers:
        limit = min(n, llm_neurons) if tag == "llm_summary" else n
        t1 = time.perf_counter()
        best_of[tag] = [_best(_score_all(_explain(tag, records[i]), records[i], sims[tag])) for i in range(limit)]
        per = (time.perf_counter() - t1) / max(1, limit)
        oai = [0.0 if b is None or b.score is None else (b.score.parts.get("openai_comparable") or 0.0)
               for b in best_of[tag]]
        print(_row(tag, sims[tag], [_value(b) for b in best_of[tag]], f" {np.mean(oai):>8.3f} {per:>8.2f}"))
    if "tokens" in explainers:  # the gain of the whole-split token statistics over the kept windows
        kept = [_best(_score_all(_explain("tokens", replace(r, token_stats=None)), r, sims["tokens"]))
                for r in records]
        print(_row("tokens (kept windows)", sims["tokens"], [_value(b) for b in kept]))
    tops = [_best([b for tag in explainers for b in best_of[tag][i:i + 1] if b is not None]) for i in range(n)]
    best = [_label([b for tag in explainers for b in best_of[tag][i:i + 1] if b is not None]) for i in range(n)]
    oai = [0.0 if b is None or b.score is None else (b.score.parts.get("openai_comparable") or 0.0) for b in best]
    print(_row("best label", "-", [_value(b) for b in best], f" {np.mean(oai):>8.3f}"))
    print(_row("highest-scoring label", "-", [_value(b) for b in tops]) + "   (the label before the one-SE rule)")
    wins = {tag: sum(1 for b in best if b is not None and b.explainer == tag) for tag in explainers}
    print("best label comes from: " + ", ".join(f"{t} {k}" for t, k in wins.items()))
    rnd = [b.score.parts.get("random_only") for b in best if b is not None and b.score is not None]
    print(f"random-only part defined for {sum(x is not None for x in rnd)} of {n} best labels")
    refs = [reference_scores(cap, r) for r in records]
    names = {"token_table_kept": "token table (kept)", "token_table": "token table (split)",
             "prev_token_table": "prev+token table"}
    print("-- reference tables on the same held-out windows (the ceiling)")
    for key, label in names.items():
        print(_row(label, "-", [x[key] for x in refs]))
    _coverage(records)
    if facets:
        _facets(records, best)
    best_mean = float(np.mean([_value(b) or 0.0 for b in best]))
    ci = [_value(b) or 0.0 for b in best_of.get("concept_induction", [])]
    undefined = sum(_value(b) is None for b in best)
    ceiling = float(np.mean([x["token_table"] or 0.0 for x in refs]))
    print(f"targets: best label mean {best_mean:.3f} (>= 0.40: {'MET' if best_mean >= 0.40 else 'NOT MET'}; "
          f"{best_mean / ceiling:.2f}x the token table's {ceiling:.3f}), "
          f">= 0.5 {np.mean([(_value(b) or 0) >= 0.5 for b in best]):.2f} (>= 0.25), undefined best labels {undefined} (0)"
          + (f", concept_induction {np.mean(ci):.3f} (>= 0.30: {'MET' if np.mean(ci) >= 0.30 else 'NOT MET'})"
             if ci else ""))
    if cross:
        _cross(target, cross, layers, units, cross_max_tokens or max_tokens, window_tokens, best, best_of, sims,
               cache, cap, records, tops)


def _transfer_table(target, cap, record: NeuronRecord, other: NeuronRecord) -> float | None:
    """Held-out correlation on ``other`` (the same neuron recorded on other text) of the token table
    of the whole main-corpus explain split (every type's mean, no label): how far token identity
    learnt on one corpus holds on another."""
    from neurolabel.core.types import split_of_window
    from neurolabel.scoring.metrics import correlation
    from neurolabel.scoring.validate import scored_windows

    a = cap.acts[(record.neuron.layer, record.neuron.index)]
    explain = np.asarray([split_of_window(i) == "explain" for i in range(cap.ids.shape[0])])
    ids, y = cap.ids[explain].ravel(), a[explain].ravel()
    uniq, inv = np.unique(ids, return_inverse=True)
    means = np.bincount(inv, weights=y) / np.bincount(inv)
    tok = target.tokenizer
    table = {tok.convert_tokens_to_string([tok.convert_ids_to_tokens(int(i))]): m for i, m in zip(uniq, means)}
    held = scored_windows(other)
    mean = float(y.mean())
    return correlation([table.get(t, mean) for w in held for t in w.tokens], [v for w in held for v in w.activations])


def _cross(target, cross: str, layers, units, max_tokens, window_tokens, best, best_of, sims,
           cache: Path | None = None, cap=None, records=(), tops=None) -> None:
    t0 = time.perf_counter()
    other, _, n_tokens = _record(target, cross, layers, units, max_tokens, window_tokens, False, cache)
    by_id = {r.neuron: r for r in other}
    print(f"\n## 3. cross-corpus: the labels above scored on {n_tokens} tokens of {cross!r} "
          f"(recorded in {time.perf_counter() - t0:.0f} s)")
    print(HEADER)
    rows = {"best label": best, **({"highest-scoring label": tops} if tops is not None else {}), **best_of}
    for name, labels in rows.items():
        vals = []
        for b in labels:
            r = by_id.get(b.neuron) if b is not None else None
            s = _score(b, r, sims.get(b.explainer, "tokens")) if r is not None else None
            vals.append(_value(s))
        print(_row(name, "-", vals))
        if name == "best label":
            m = float(np.mean([v or 0.0 for v in vals]))
            print(f"target: cross-corpus mean of the best labels {m:.4f} (>= 0.25: {'MET' if m >= 0.25 else 'NOT MET'})")
    if cap is not None:  # the reference: every token type's mean over the main corpus's explain split
        refs = [_transfer_table(target, cap, r, by_id[r.neuron]) if r.neuron in by_id else None for r in records]
        print(_row("token table (split)", "-", refs) + "   (reference: no label, every type of the main corpus)")


def _coverage(records: list[NeuronRecord]) -> None:
    from neurolabel.ontology.coverage import coverage

    c = coverage(records)
    print(f"ontology coverage: {c.tokens:.2f} of {c.n_tokens} tokens, {c.strong_tokens:.2f} of {c.n_strong} "
          f"strongly active ones (beyond orthographic kinds: {c.tokens_beyond_orthography:.2f} / "
          f"{c.strong_beyond_orthography:.2f})")


def _facets(records: list[NeuronRecord], best: list[Explanation | None]) -> None:
    from bench.facets import facet_gain

    g = facet_gain(records, singles=best)
    print("facets vs the single best label: " + ", ".join(
        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in g.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run (few classes, 12 neurons, small corpus)")
    ap.add_argument("--explainers", default="", help="comma-separated tags (default: every installed one)")
    ap.add_argument("--set", dest="params", action="append", default=None, metavar="PLUGIN.PARAMETER=VALUE",
                    help="an explainer parameter, as `neurolabel label --set` (repeatable), e.g. "
                         "concept_induction.class_search=false")
    ap.add_argument("--layers", default="2,6,12,18,24,29", help="real neurons' layers")
    ap.add_argument("--units", type=int, default=25, help="units 0..N-1 of each layer (from --unit-offset)")
    ap.add_argument("--unit-offset", type=int, default=0,
                    help="first unit of each layer: e.g. 25 for units 25-49, to choose settings on other neurons "
                         "than the issue's 0-24 they are reported on")
    ap.add_argument("--llm-neurons", type=int, default=6, help="real neurons explained by llm_summary (slow on CPU)")
    ap.add_argument("--max-tokens", type=int, default=100_000,
                    help="corpus tokens recorded (default: as many as `neurolabel label` records; >= 32,768 for the issue)")
    ap.add_argument("--window-tokens", type=int, default=64, help="tokens per window")
    ap.add_argument("--corpus", default="default", help="corpus the labels are learnt on")
    ap.add_argument("--cross-corpus", default="licenses",
                    help="'licenses' (Debian's license texts), 'none', or any corpus spec")
    ap.add_argument("--cross-max-tokens", type=int, default=32_768,
                    help="tokens of the cross corpus recorded (fixed apart from --max-tokens, so the labels "
                         "learnt on more or less text are scored on the same windows)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="folder where recordings are saved and reused by later runs with the same arguments")
    ap.add_argument("--skip-planted", action="store_true")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--skip-facets", action="store_true",
                    help="leave out the facets-vs-best-label line (it re-explains every neuron's facets: slow on CPU)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from neurolabel.pipeline.simulators import resolve_simulators

    explainers = [t for t in args.explainers.split(",") if t] or [
        t for t in ("tokens", "token_tiers", "concept_induction", "pmi", "llm_summary") if t in EXPLAINERS]
    sims = resolve_simulators(explainers)
    from neurolabel.service.cli_label import parse_params

    PARAMS.update(parse_params(args.params, explainers))
    layers = [int(x) for x in args.layers.split(",")]
    units = list(range(args.unit_offset, args.unit_offset + args.units))
    if args.quick:
        layers, units, args.llm_neurons, args.max_tokens, args.cross_max_tokens = [6, 18], list(range(6)), 2, 8192, 8192
    print(f"# bench/quality.py {'--quick ' if args.quick else ''}explainers={explainers} simulators={sims}"
          + (f" parameters={PARAMS}" if PARAMS else ""))
    t0 = time.perf_counter()
    if not args.skip_planted:
        planted(explainers, sims, n_classes=4 if args.quick else 10, noise=0.0 if args.quick else 0.05,
                n_windows=400 if args.quick else 1500)
    if not args.skip_real:
        with tempfile.TemporaryDirectory() as tmp:
            lic = Path(tmp) if args.cache is None else args.cache / "licenses"  # a stable path: a cache key
            lic.mkdir(parents=True, exist_ok=True)
            cross = None if args.cross_corpus == "none" else (
                _license_corpus(lic) if args.cross_corpus == "licenses" else args.cross_corpus)
            real(explainers, sims, layers, units, args.corpus, args.max_tokens, args.window_tokens,
                 args.llm_neurons, cross, args.cache, facets=not args.skip_facets,
                 cross_max_tokens=args.cross_max_tokens)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
