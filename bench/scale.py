"""Scale benchmarks of the labelling run (:func:`pipeline.run.run`), printed as ratios against a
baseline measured in the same run.

    .venv/bin/python bench/scale.py [--quick] [--section endpoint] [--section …]

Sections (each a function registered with :func:`section`; ``--section`` picks some, default all):

- ``endpoint``: labelling throughput when the simulator is an OpenAI-compatible endpoint — the
  project's test server (:mod:`lm.testserver`, real HTTP through the ``openai`` client) over a
  rule-based backend whose every answer takes ``--latency`` seconds (awaited, so concurrent requests
  overlap as on a GPU server that batches them; this 2-core machine cannot serve a real model to 8
  clients at once). Planted-concept neurons are labelled by the ``tokens`` explainer and scored by
  the ``llm`` simulator at run concurrency 1 and 8 (baseline: 1), with its causal ``prompt-logprobs``
  method (one ``/v1/completions`` request with ``echo`` + ``logprobs`` per scored window). Requests
  per neuron are counted at the server (completions and chat apart); "before" is what the per-token
  simulator this replaced sent (one request per scored token); the chat listing (the fallback when a
  server serves chat only, not causal) is measured at concurrency 8 for comparison. Targets:
  concurrency 8 ≥ 4× concurrency 1; requests per scored window = 1.

- ``ray``: recording throughput (tokens/s; layer 10, units 0-255 of the default model) in this
  process and sharded over 1 and 2 Ray workers (a private Ray instance on this machine, one CPU per
  worker; actors started and the model loaded before the timed pass), and labelling throughput
  (neurons/min, explainers concept_induction + pmi with their symbolic simulators, records stored
  beforehand) in this process and on 1 and 2 Ray workers (actor start and plugin loading timed: they
  are part of a run). Baseline: 1 worker. Target: recording on 2 workers ≥ 1.6× 1 worker.

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
    tmp.mkdir(parents=True, exist_ok=True)
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
    with tempfile.TemporaryDirectory() as d:
        for label, chat_only, levels in (("prompt-logprobs", False, (1, 8)), ("chat listing", True, (8,))):
            with serve_backend(KeywordBackend(latency_s=args.latency), chat_only=chat_only) as server:
                for c in levels:
                    f = server.faults
                    before = (f.completion_requests, f.chat_requests)
                    secs, done = _endpoint_run(records, base_url=server.base_url, model_name=server.model_name,
                                               concurrency=c, tmp=Path(d) / f"{label.replace(' ', '-')}-{c}")
                    completions, chats = f.completion_requests - before[0], f.chat_requests - before[1]
                    requests = completions + chats
                    rows[label, c], sent[label, c] = done / secs * 60, requests / max(1, done)
                    print(f"{label}, concurrency {c}: {done} neurons in {secs:.2f} s = {rows[label, c]:.1f} "
                          f"neurons/min; {requests} requests ({completions} completions, {chats} chat) "
                          f"= {requests / max(1, done):.2f} per neuron, {requests / windows:.2f} per scored window")
    ratio = rows["prompt-logprobs", 8] / rows["prompt-logprobs", 1]
    per_window = sent["prompt-logprobs", 1] * len(records) / windows
    print(f"prompt-logprobs: concurrency 8 / concurrency 1: {ratio:.2f}x (target >= 4x) "
          f"{'MET' if ratio >= 4 else 'NOT MET'}; requests per scored window {per_window:.2f} (target = 1) "
          f"{'MET' if abs(per_window - 1) < 1e-9 else 'NOT MET'}")
    print(f"requests per neuron: before (per-token simulator: one per scored token) {tokens / len(records):.1f}, "
          f"after (all at once, counted at the server) {sent['prompt-logprobs', 1]:.1f} causal "
          f"(chat listing {sent['chat listing', 8]:.1f}, with the refused completions requests sent before the "
          f"first refusal came back); "
          f"scored windows per neuron {windows / len(records):.1f}")


# ---- ray ---------------------------------------------------------------------------------------
def _ray_started(n_cpus: int):
    """A private Ray instance with ``n_cpus`` CPUs (so ``n_cpus`` workers), auth disabled."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    ray.init(num_cpus=n_cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    return ray


def _record_rows(args: argparse.Namespace, layer: int, units: list[int]) -> dict[str, float]:
    """Tokens per second of one corpus pass: in this process, then sharded over 1 and 2 Ray workers."""
    import time

    from neurolabel.activations.models import load_target
    from neurolabel.activations.record import record_activations
    from neurolabel.pipeline.distributed import RecordingPool

    kw = dict(layers=[layer], units=units, max_tokens=args.ray_tokens, top_k=20, n_random=40, window_tokens=64,
              progress=False)
    target = load_target("default")
    record_activations(target, "default", **{**kw, "max_tokens": 64})  # warm-up (corpus, kernels)
    t0 = time.perf_counter()
    rec = record_activations(target, "default", **kw)
    secs = time.perf_counter() - t0
    rows = {"local": rec.n_tokens / secs}
    print(f"record local (this process, {__import__('torch').get_num_threads()} torch threads): {rec.n_tokens} tokens "
          f"in {secs:.1f} s = {rows['local']:.0f} tok/s")
    del rec
    for n in (1, 2):
        ray = _ray_started(n)
        try:
            t0 = time.perf_counter()
            with RecordingPool(ray, "default") as pool:
                pool.record("default", **{**kw, "max_tokens": 64 * n})  # actors up, model loaded, corpus opened
                t_up = time.perf_counter() - t0
                t0 = time.perf_counter()
                rec = pool.record("default", **kw)
                secs = time.perf_counter() - t0
                cpu, wall = pool.cpu_s, pool.wall_s
        finally:
            ray.shutdown()
        rows[f"ray{n}"] = rec.n_tokens / secs
        rows[f"cpu{n}"] = max(cpu)
        print(f"record on Ray, {n} worker{'s' if n > 1 else ''} (1 thread each): {rec.n_tokens} tokens in {secs:.1f} s "
              f"= {rows[f'ray{n}']:.0f} tok/s, merge included (actors up and model loaded before: {t_up:.1f} s); "
              f"per shard CPU s {', '.join(f'{c:.1f}' for c in cpu)} in {', '.join(f'{w:.1f}' for w in wall)} s; "
              f"load average {os.getloadavg()[0]:.1f}")
        del rec
    return rows


def _label_rows(args: argparse.Namespace, layer: int, tmp: Path) -> dict[str, float]:
    """Neurons per minute of explain + score + store with the symbolic explainers: in this process,
    then on 1 and 2 Ray workers (the records stored beforehand, so nothing is recorded)."""
    import time

    from neurolabel.activations.models import load_target
    from neurolabel.activations.record import record_activations
    from neurolabel.lm.embeddings import embed
    from neurolabel.pipeline.run import build_plugins, run
    from neurolabel.pipeline.spec import RunSpec
    from neurolabel.storage.db import session_scope, upgrade
    from neurolabel.storage.queries import save_neuron_records, upsert_model

    units = list(range(args.ray_neurons))
    target = load_target("default")
    records = list(record_activations(target, "default", layers=[layer], units=units, max_tokens=8192, top_k=10,
                                      n_random=20, window_tokens=64, progress=False).records())
    spec = RunSpec.parse({"model": "default", "layers": [layer], "units": units,
                          "explainers": ["concept_induction", "pmi"], "concurrency": 1})
    t0 = time.perf_counter()
    build_plugins(spec)
    embed(["warm-up"])
    print(f"## labelling {len(units)} neurons of layer {layer}, explainers concept_induction + pmi (symbolic "
          f"simulators); one-time loads in this process {time.perf_counter() - t0:.1f} s (not timed below)")
    rows = {}
    for name, n in (("local", 0), ("ray1", 1), ("ray2", 2)):
        url = f"sqlite:///{tmp}/label-{name}.db"
        upgrade(url)
        with session_scope(url) as session:
            upsert_model(session=session, name=target.name, architecture=target.architecture, source=target.source,
                         unit_map=target.unit_map, n_layers=target.n_layers, n_units=target.n_units)
            save_neuron_records(session=session, records=records)
        ray = _ray_started(n) if n else None
        try:
            s = run(spec.model_copy(update={"ray_address": "local" if n else None}), database_url=url, progress=False)
        finally:
            if ray is not None:
                ray.shutdown()
        rows[name] = s.processed / s.elapsed_s * 60
        where = f"this process ({__import__('torch').get_num_threads()} torch threads)" if not n else f"Ray, {n} worker{'s' if n > 1 else ''} (plugins loaded in each, timed)"
        print(f"label {where}: {s.processed} neurons, {s.explanations} explanations in {s.elapsed_s:.1f} s = "
              f"{rows[name]:.1f} neurons/min" + (f"; {len(s.errors)} errors" if s.errors else ""))
    return rows


@section("ray")
def ray_section(args: argparse.Namespace) -> None:
    """Recording and labelling throughput in this process vs on 1 and 2 Ray workers (a private Ray
    instance on this machine; the baseline is 1 worker)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        print("## ray: skipped, Ray is not installed (pip install -e '.[ray]')")
        return
    layer = 10
    units = list(range(256))
    print(f"## ray: recording layer {layer}, units 0-255 of the default model over {args.ray_tokens} corpus tokens; "
          f"{os.cpu_count()} cores shared with other work")
    rec = _record_rows(args, layer, units)
    ratio = rec["ray2"] / rec["ray1"]
    print(f"recording: Ray 2 workers / 1 worker {ratio:.2f}x (target >= 1.6x) {'MET' if ratio >= 1.6 else 'NOT MET'}; "
          f"Ray 2 workers / this process {rec['ray2'] / rec['local']:.2f}x; CPU time of the longest shard, 1 worker / "
          f"2 workers: {rec['cpu1'] / rec['cpu2']:.2f}x (the speed-up two free cores would give)")
    with tempfile.TemporaryDirectory() as d:
        lab = _label_rows(args, layer, Path(d))
    print(f"labelling: Ray 2 workers / 1 worker {lab['ray2'] / lab['ray1']:.2f}x; Ray 2 workers / this process "
          f"{lab['ray2'] / lab['local']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer neurons (a smoke run)")
    ap.add_argument("--section", action="append", choices=list(SECTIONS),
                    help="section(s) to run (repeatable; default: all)")
    ap.add_argument("--latency", type=float, default=0.5,
                    help="endpoint section: seconds each answer of the test server takes (a served model writes a "
                         "32-token listing, ~150 tokens, in ~1-3 s)")
    ap.add_argument("--ray-tokens", type=int, default=None, help="ray section: corpus tokens recorded (16384; quick 4096)")
    ap.add_argument("--ray-neurons", type=int, default=None, help="ray section: neurons labelled (48; quick 8)")
    args = ap.parse_args()
    args.ray_tokens = args.ray_tokens or (4096 if args.quick else 16384)
    args.ray_neurons = args.ray_neurons or (8 if args.quick else 48)
    logging.basicConfig(level=logging.WARNING)
    print(f"# bench/scale.py {'--quick ' if args.quick else ''}(machine: {os.cpu_count()} cores, shared)")
    for name in args.section or list(SECTIONS):
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
