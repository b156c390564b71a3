"""Benchmark: concept induction per neuron on recorded SmolLM2 neurons, on the full WordNet noun
ontology, side by side with Ontolearn's CELOE on the same positive/negative examples.

    .venv/bin/python bench/concept_induction.py            # 100 neurons, CELOE on 20
    .venv/bin/python bench/concept_induction.py --quick    # 20 neurons, CELOE on 5

Ours: ``ConceptInductionExplainer.explain`` per neuron (examples, annotation through the window
cache, bitset beam search, renderings), median and p95 wall time, first pass (cold annotation
cache) and second pass (warm). CELOE (PyPI ``ontolearn``, run in its own environment
``.venv-ontolearn`` through ``bench/celoe_runner.py``) gets, per neuron, a knowledge base with the
same examples as individuals typed with their annotated classes and the TBox they need, and the
same positives/negatives; its default quality is F1, so ours is also run with ``quality="f1"``
for the F1 comparison. Runtime ratio = CELOE fit time / our time per neuron (same neurons).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
ONTOLEARN_PY = ROOT / ".venv-ontolearn" / "bin" / "python"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))
    return xs[k]


def recorded_neurons(layers: list[int], n_units: int, max_tokens: int) -> list:
    """SmolLM2 records of ``n_units`` units in each of ``layers`` (cached under the cache dir)."""
    from neurolabel.core.assets import cache_dir

    path = cache_dir() / "bench" / f"ci_records_L{'-'.join(map(str, layers))}_U{n_units}_T{max_tokens}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    from neurolabel.activations.corpus import load_corpus
    from neurolabel.activations.models import load_target
    from neurolabel.activations.record import record_neurons

    t = time.perf_counter()
    target = load_target("default", device="cpu")
    recs = record_neurons(target, load_corpus("default"), layers=layers, units=list(range(n_units)),
                          max_tokens=max_tokens, top_k=20, n_random=20, progress=True)
    print(f"recorded {len(recs)} neurons over {max_tokens} tokens in {time.perf_counter() - t:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(recs))
    return recs


def run_ours(explainer, records) -> tuple[list[float], list[object]]:
    from neurolabel.core.errors import ExplanationError

    times, results = [], []
    for r in records:
        t = time.perf_counter()
        try:
            res = explainer.explain(r)[0]
        except ExplanationError:
            res = None
        times.append(time.perf_counter() - t)
        results.append(res)
    return times, results


def run_celoe(explainer, records, runtime: float) -> tuple[list[dict], list[tuple[int, int]]]:
    """CELOE on each record's examples; returns its results and (n_pos, n_neg) per record."""
    from neurolabel.ontology.abox import write_abox

    onto = explainer.annotator.ontology
    tmp = Path(tempfile.mkdtemp(prefix="celoe-"))
    problems, sizes = [], []
    for k, r in enumerate(records):
        pos, neg, _ = explainer.examples(r)
        iris = write_abox(tmp / f"kb{k}.owl", onto, pos + neg)
        problems.append({"owl": str(tmp / f"kb{k}.owl"), "pos": iris[: len(pos)], "neg": iris[len(pos):],
                         "max_runtime": runtime})
        sizes.append((len(pos), len(neg)))
    (tmp / "in.json").write_text(json.dumps(problems))
    proc = subprocess.run([str(ONTOLEARN_PY), str(ROOT / "bench" / "celoe_runner.py"), str(tmp / "in.json"),
                           str(tmp / "out.json")], capture_output=True, text=True, cwd=str(ROOT))
    if proc.returncode != 0:
        raise RuntimeError(f"CELOE runner failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads((tmp / "out.json").read_text())
    for o, p in zip(out, problems):
        pos = set(p["pos"])
        cov = set(o["covered"])
        tp, fp = len(cov & pos), len(cov - pos)
        o["f1"] = 2 * tp / (len(pos) + tp + fp) if pos else 0.0
    return out, sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 neurons, CELOE on 5")
    ap.add_argument("--layers", default="6,20")
    ap.add_argument("--units", type=int, default=None, help="units per layer (default 50; quick 10)")
    ap.add_argument("--max-tokens", type=int, default=None, help="tokens recorded (default 20000; quick 8000)")
    ap.add_argument("--celoe-neurons", type=int, default=None, help="default 20; quick 5")
    ap.add_argument("--celoe-runtime", type=float, default=5.0, help="CELOE max_runtime per neuron (s)")
    ap.add_argument("--no-celoe", action="store_true")
    args = ap.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    units = args.units or (10 if args.quick else 50)
    max_tokens = args.max_tokens or (8000 if args.quick else 20000)
    n_celoe = args.celoe_neurons if args.celoe_neurons is not None else (5 if args.quick else 20)

    from neurolabel.explainers.concept_induction import ConceptInductionExplainer
    from neurolabel.ontology.induction import InductionConfig

    records = recorded_neurons(layers, units, max_tokens)
    t = time.perf_counter()
    ours = ConceptInductionExplainer.from_defaults()
    onto = ours.annotator.ontology
    print(f"ontology {onto.name}: {onto.n_classes} classes; explainer loaded in {time.perf_counter() - t:.2f} s")
    print(f"neurons: {len(records)} (layers {layers}, {units} units each, {max_tokens} tokens recorded)")

    cold, res = run_ours(ours, records)
    warm, res = run_ours(ours, records)
    ours_f1 = ConceptInductionExplainer(ours.annotator, config=InductionConfig(quality="f1"))
    f1_times, res_f1 = run_ours(ours_f1, records)
    n_ok = sum(r is not None for r in res)
    print(f"\nours (quality=mcc)   cold cache: median {statistics.median(cold) * 1000:.0f} ms, "
          f"p95 {_pct(cold, 0.95) * 1000:.0f} ms per neuron")
    print(f"ours (quality=mcc)   warm cache: median {statistics.median(warm) * 1000:.0f} ms, "
          f"p95 {_pct(warm, 0.95) * 1000:.0f} ms per neuron   (target: median <= 500 ms)")
    print(f"ours (quality=f1)    warm cache: median {statistics.median(f1_times) * 1000:.0f} ms, "
          f"p95 {_pct(f1_times, 0.95) * 1000:.0f} ms per neuron")
    print(f"explained {n_ok}/{len(records)} neurons (others: no activating token names a noun class)")
    f1s = [r.structured["f1"] for r in res if r is not None]
    if f1s:
        print(f"F1 of best expression on its examples: median {statistics.median(f1s):.3f} (mcc mode), "
              f"{statistics.median([r.structured['f1'] for r in res_f1 if r is not None]):.3f} (f1 mode)")
    print("\nexamples:")
    for r, e in list(zip(records, res))[:: max(1, len(records) // 8)][:8]:
        if e is not None:
            print(f"  {r.neuron}: {e.text[:90]}  [f1={e.structured['f1']:.2f}, p={e.structured['precision']:.2f}, "
                  f"r={e.structured['recall']:.2f}]")

    if args.no_celoe:
        return
    if not ONTOLEARN_PY.exists():
        print(f"\nCELOE: skipped — {ONTOLEARN_PY} missing (python3 -m venv .venv-ontolearn && "
              ".venv-ontolearn/bin/pip install ontolearn==0.11.0)")
        return
    idx = [i for i, r in enumerate(res) if r is not None][:n_celoe]
    sub = [records[i] for i in idx]
    print(f"\nCELOE (ontolearn 0.11, max_runtime {args.celoe_runtime:g} s) on {len(sub)} neurons, same examples ...")
    t = time.perf_counter()
    celoe, sizes = run_celoe(ours, sub, args.celoe_runtime)
    print(f"(CELOE subprocess total {time.perf_counter() - t:.0f} s incl. Ontolearn import and KB loads)")
    print(f"\n{'neuron':>8} {'pos':>4} {'neg':>5} | {'ours ms':>7} {'ours F1':>7} {'ours(f1) F1':>11} | "
          f"{'CELOE s':>7} {'CELOE F1':>8} | CELOE expression / ours")
    c_fit, o_t, o_f1, of_f1, c_f1 = [], [], [], [], []
    for i, c, (npos, nneg) in zip(idx, celoe, sizes):
        o, of = res[i], res_f1[i]
        c_fit.append(c["fit_s"])
        o_t.append(warm[i])
        o_f1.append(o.structured["f1"])
        of_f1.append(of.structured["f1"] if of is not None else 0.0)
        c_f1.append(c["f1"])
        print(f"{str(records[i].neuron):>8} {npos:>4} {nneg:>5} | {warm[i] * 1000:>7.0f} {o_f1[-1]:>7.3f} "
              f"{of_f1[-1]:>11.3f} | {c['fit_s']:>7.2f} {c['f1']:>8.3f} | {c['expression'][:40]} / "
              f"{o.structured['manchester_labels'][:40]}")
    ratio = statistics.median(c_fit) / statistics.median(o_t)
    print(f"\nmedian time per neuron: ours {statistics.median(o_t) * 1000:.0f} ms vs CELOE fit "
          f"{statistics.median(c_fit) * 1000:.0f} ms (+ KB load median "
          f"{statistics.median([c['load_s'] for c in celoe]) * 1000:.0f} ms)  ->  ours {ratio:.1f}x faster "
          f"(target >= 10x)")
    print(f"mean F1 on the same examples: ours(f1) {statistics.mean(of_f1):.3f}, ours(mcc) {statistics.mean(o_f1):.3f}, "
          f"CELOE {statistics.mean(c_f1):.3f};  ours(f1) >= CELOE on {sum(a >= b - 1e-4 for a, b in zip(of_f1, c_f1))}"
          f"/{len(c_f1)} neurons (F1 compared to 4 decimals)")


if __name__ == "__main__":
    main()
