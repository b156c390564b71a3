"""Scale benchmarks of the labelling run (:func:`pipeline.run.run`), printed as ratios against a
baseline measured in the same run.

    .venv/bin/python bench/scale.py [--quick] [--section endpoint] [--section …]

Sections (each a function registered with :func:`section`; ``--section`` picks some, default all):

- ``endpoint``: labelling throughput when the simulator is an OpenAI-compatible endpoint — the
  project's test server (:mod:`lm.testserver`, real HTTP through the ``openai`` client) over a
  rule-based backend whose every answer takes ``--latency`` seconds (awaited, so concurrent requests
  overlap as on a GPU server that batches them; this 2-core machine cannot serve a real model to 8
  clients at once). Planted-concept neurons are labelled by the ``tokens`` explainer and scored by
  the ``llm`` simulator at run concurrency 1 and 8 (baseline: 1). Requests per neuron are counted
  at the server; "before" is what the per-token simulator this replaced sent (one request per
  scored token). Targets: concurrency 8 ≥ 4× concurrency 1; requests per scored window = 1.

A new section is one decorated function ``def name(args) -> None`` printing its rows.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SECTIONS: dict[str, Callable[[argparse.Namespace], None]] = {}
"""Section name -> the function that measures and prints it (in registration order)."""


def section(name: str) -> Callable[[Callable[[argparse.Namespace], None]], Callable[[argparse.Namespace], None]]:
    """Register a benchmark section under ``name``."""

    def deco(fn: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], None]:
        SECTIONS[name] = fn
        return fn

    return deco


# ---- endpoint ----------------------------------------------------------------------------------
def _endpoint_run(records, *, base_url: str, model_name: str, concurrency: int, tmp: Path) -> tuple[float, int]:
    """(seconds, neurons processed) of one run over ``records`` in a fresh database, its LLM
    simulator talking to ``base_url`` with no response cache."""
    from neurolabel.core.settings import get_settings
    from neurolabel.lm.cache import ResponseCache
    from neurolabel.pipeline.plugins import clear
    from neurolabel.pipeline.run import run
    from neurolabel.pipeline.spec import RunSpec
    from neurolabel.storage.db import session_scope, upgrade
    from neurolabel.storage.queries import save_neuron_records

    os.environ.update(OPENAI_BASE_URL=base_url, OPENAI_API_KEY="sk-bench", NEUROLABEL_OPENAI_MODEL=model_name,
                      NEUROLABEL_LLM_CONCURRENCY=str(concurrency))
    cache = tmp / f"responses-{concurrency}.sqlite"
    ResponseCache.default = classmethod(lambda cls: cls(cache))  # type: ignore[method-assign]
    get_settings.cache_clear()
    clear()  # the LLM simulator is built again over this endpoint
    url = f"sqlite:///{tmp}/endpoint-{concurrency}.db"
    upgrade(url)
    with session_scope(url) as session:
        save_neuron_records(session=session, records=records)
    layers = sorted({r.neuron.layer for r in records})
    units = sorted({r.neuron.index for r in records})
    spec = RunSpec.parse({"model": records[0].model, "layers": layers, "units": units, "explainers": ["tokens"],
                          "simulators": "llm", "concurrency": concurrency})
    summary = run(spec, database_url=url, progress=False)
    if summary.errors:
        print(f"  ! {len(summary.errors)} errors, e.g. {summary.errors[0]}")
    return summary.elapsed_s, summary.processed


@section("endpoint")
def endpoint(args: argparse.Namespace) -> None:
    """Throughput at concurrency 1 vs 8 and requests per neuron against the project's test server."""
    from bench.planted import DEFAULT_CLASSES, planted_records
    from neurolabel.lm.embeddings import embed
    from neurolabel.lm.testserver import KeywordBackend, serve_backend

    n_layers = 1 if args.quick else 2
    # a little noise, seeded per layer: every neuron's label and prompts differ (no response-cache hits)
    records = [r for layer in range(n_layers) for r in planted_records(
        DEFAULT_CLASSES, n_top=4, n_random=3, n_windows=600, window_tokens=32, layer=layer, noise=0.005, seed=layer)]
    windows = sum(len(r.windows("top", "score")) + len(r.windows("random", "score")) for r in records)
    tokens = sum(len(w.tokens) for r in records for w in r.windows("top", "score") + r.windows("random", "score"))
    embed(["warm-up"])  # the store stage's label embedder loads once, outside the timed runs
    print(f"## endpoint: {len(records)} planted neurons, {windows} scored windows ({tokens} tokens), explainer "
          f"tokens, simulator llm via the test server (rule backend, {args.latency:.2f} s per answer)")
    rows, sent = {}, {}
    with serve_backend(KeywordBackend(latency_s=args.latency)) as server, tempfile.TemporaryDirectory() as d:
        for c in (1, 8):
            before = server.faults.chat_requests
            secs, done = _endpoint_run(records, base_url=server.base_url, model_name=server.model_name,
                                       concurrency=c, tmp=Path(d))
            requests = server.faults.chat_requests - before
            rows[c], sent[c] = done / secs * 60, requests / max(1, done)
            print(f"concurrency {c}: {done} neurons in {secs:.2f} s = {rows[c]:.1f} neurons/min; {requests} requests "
                  f"= {requests / max(1, done):.2f} per neuron, {requests / windows:.2f} per scored window")
    ratio = rows[8] / rows[1]
    print(f"concurrency 8 / concurrency 1: {ratio:.2f}x (target >= 4x) {'MET' if ratio >= 4 else 'NOT MET'}")
    print(f"requests per neuron: before (per-token simulator: one per scored token) {tokens / len(records):.1f}, "
          f"after (all at once, counted at the server) {sent[1]:.1f}; scored windows per neuron "
          f"{windows / len(records):.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer neurons (a smoke run)")
    ap.add_argument("--section", action="append", choices=list(SECTIONS),
                    help="section(s) to run (repeatable; default: all)")
    ap.add_argument("--latency", type=float, default=0.5,
                    help="endpoint section: seconds each answer of the test server takes (a served model writes a "
                         "32-token listing, ~150 tokens, in ~1-3 s)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"# bench/scale.py {'--quick ' if args.quick else ''}(machine: {os.cpu_count()} cores, shared)")
    for name in args.section or list(SECTIONS):
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
