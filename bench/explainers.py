"""Time per neuron of the PMI search and the LLM summariser (local SmolLM2), and the response
cache's effect on a re-run of the summariser.

    .venv/bin/python bench/explainers.py            # 50 recorded neurons (layer 5)
    .venv/bin/python bench/explainers.py --quick    # 8 neurons
    .venv/bin/python bench/explainers.py --records recs.jsonl

Neurons are recorded once with ``activations.record.record_neurons`` (default corpus) and kept
under the cache folder. The baseline of every ratio is measured in the same run: the PMI search
per neuron, and the summariser's first (uncached) run.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neurolabel.core.errors import ExplanationError  # noqa: E402


def _records(n: int, layer: int, max_tokens: int, path: str | None):
    from neurolabel.activations.openai_format import read_records, write_records

    if path:
        return read_records(path)[:n]
    from neurolabel.core.assets import cache_dir

    f = cache_dir() / "bench" / f"explainers-l{layer}-n{n}-t{max_tokens}.jsonl"
    if f.exists():
        return read_records(f)
    from neurolabel.activations.corpus import load_corpus
    from neurolabel.activations.models import load_target
    from neurolabel.activations.record import record_neurons

    t = time.perf_counter()
    recs = record_neurons(
        load_target(), load_corpus(), layers=[layer], units=list(range(n)), max_tokens=max_tokens,
        top_k=10, n_random=10, progress=True,
    )
    f.parent.mkdir(parents=True, exist_ok=True)
    write_records(f, recs)
    print(f"recorded {len(recs)} neurons of layer {layer} over {max_tokens} tokens in {time.perf_counter() - t:.1f} s")
    return recs


def _run(explainer, records) -> tuple[list[float], int, list]:
    times, failures, first = [], 0, []
    for r in records:
        t = time.perf_counter()
        try:
            got = explainer.explain(r)
            first.append(got[0].text)
        except ExplanationError:
            failures += 1
            first.append(None)
        times.append(time.perf_counter() - t)
    return times, failures, first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 neurons, fewer tokens")
    ap.add_argument("--neurons", type=int, default=None)
    ap.add_argument("--layer", type=int, default=5)
    ap.add_argument("--records", default=None, help="read records from this file instead of recording")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    n = args.neurons or (8 if args.quick else 50)
    max_tokens = 10_000 if args.quick else 20_000
    records = _records(n, args.layer, max_tokens, args.records)
    print(f"{len(records)} neurons, model {records[0].model}")

    from neurolabel.explainers.llm_summary import LLMSummaryExplainer
    from neurolabel.explainers.pmi import PMIExplainer
    from neurolabel.lm.cache import CachedBackend, ResponseCache
    from neurolabel.lm.factory import local_backend

    t = time.perf_counter()
    pmi = PMIExplainer.from_defaults()
    print(f"PMI setup (ontology + annotator): {time.perf_counter() - t:.2f} s")
    pmi_cold, pmi_fail, pmi_top = _run(pmi, records)
    pmi_warm, _, _ = _run(pmi, records)  # window incidences cached

    backend = local_backend()
    with tempfile.TemporaryDirectory() as tmp:
        cache = ResponseCache(Path(tmp) / "responses.sqlite")
        llm = LLMSummaryExplainer(CachedBackend(backend, cache))
        llm_first, llm_fail, llm_top = _run(llm, records)
        llm_rerun, _, llm_top2 = _run(llm, records)
        hits = cache.hits

    def row(name: str, times: list[float], base: float) -> str:
        mean = statistics.fmean(times)
        return (f"{name:<34} {1000 * mean:>10.1f} {1000 * statistics.median(times):>10.1f} "
                f"{1000 * sum(times):>11.0f} {mean / base:>9.2f}x")

    base = statistics.fmean(pmi_warm)
    print()
    print(f"{'explainer (per neuron)':<34} {'mean ms':>10} {'median ms':>10} {'total ms':>11} {'vs PMI':>10}")
    print(row("pmi (cold: windows annotated)", pmi_cold, base))
    print(row("pmi (warm)", pmi_warm, base))
    print(row("llm_summary local, first run", llm_first, base))
    print(row("llm_summary local, re-run (cache)", llm_rerun, base))
    speed = statistics.fmean(llm_first) / statistics.fmean(llm_rerun)
    print()
    print(f"cache: {hits} hits of {len(records) - llm_fail} cached prompts on the re-run; re-run is "
          f"{speed:.0f}x faster than the first run; identical answers: {llm_top == llm_top2}")
    print(f"failures (ExplanationError): pmi {pmi_fail}/{len(records)}, llm_summary {llm_fail}/{len(records)}")
    print("examples:")
    for r, a, b in list(zip(records, pmi_top, llm_top))[:5]:
        print(f"  {r.neuron}: pmi={a!r}  llm_summary={b!r}")


if __name__ == "__main__":
    main()
