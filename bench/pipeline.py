"""Cost of the labelling pipeline per neuron and stage, extrapolated to all 46,080 MLP neurons
of SmolLM2-135M with the symbolic explainers (the critical path: storing runs in a background
thread, and only the time the run waited for it counts); and forward passes of the all-at-once LLM
simulator against a one-token-at-a-time loop.

Stages, measured in this run on the default model:
- record: one pass over the corpus with every layer and unit hooked (``record_activations``),
  measured on ``--tokens`` tokens and scaled linearly to the pipeline's 100,000 tokens;
- load / explain / score / store: ``pipeline.run.run`` on ``--neurons`` neurons of
  layer 10, recorded first as ``neurolabel label`` records them (the recorder's defaults: 20 top
  and 40 random windows of 64 tokens per split, over ``--slice-tokens``, default the pipeline's
  100,000 tokens: explaining and scoring cost grows with the windows kept), per neuron, from the
  run's stage timings; run twice, in
  threads of one process (the baseline) and in ``--processes`` worker processes (default: the
  machine's cores), whose wall time gives the whole-model figure. Both write every 32 neurons,
  as a whole-model run does (``RunSpec.store_every``).

    .venv/bin/python bench/pipeline.py           # 96 neurons, 4096 tokens measured
    .venv/bin/python bench/pipeline.py --quick   # 8 neurons, 1024 tokens
    .venv/bin/python bench/pipeline.py --no-llm  # without the LLM simulator comparison
    .venv/bin/python bench/pipeline.py --no-llm --compare-embed  # + runs with --embed accepted and all
    .venv/bin/python bench/pipeline.py --no-llm --cache /work/pcache  # reuse the slice's recording

``--embed`` is the runs' label vector policy (default ``best``: each explainer's best-scored
candidate); ``--compare-embed`` adds runs in worker processes with the other policies that embed
at write time (``accepted``: also the top-ranked and the accepted candidates, the default before;
``all``: every candidate) on the same neurons, each with its distinct texts and embedding CPU.

The whole-model figure: a whole-model run writes ~1,440 batches of 32 neurons, each in the
background while the next batch is explained, and waits for the last one alone. So the run's
labelling loop (``LabelSummary.loop_s``: first neuron handed out to last result taken, the writes
it waited for included), plus the embedding CPU of the neurons written after it spread over the
cores (inside a whole-model run's loop a worker embeds them beside the other's explaining), per
neuron, times 46,080, plus what the run pays once (building, starting the worker processes),
plus the recording. The bounds are printed too: the loop alone (the last write's work left out)
and the loop plus the whole last write (which after the loop runs alone, not beside explaining).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neurolabel.core.registry import EXPLAINERS  # noqa: E402

PIPELINE_TOKENS = 100_000
"""Corpus tokens the pipeline records by default (``label --max-tokens``)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--neurons", type=int, default=96)
    ap.add_argument("--tokens", type=int, default=4096, help="corpus tokens of the measured full-model recording")
    ap.add_argument("--slice-tokens", type=int, default=PIPELINE_TOKENS,
                    help="corpus tokens the labelled slice of layer 10 is recorded over (default: the pipeline's)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="folder keeping the labelled slice's records between runs (keyed by neurons, tokens and "
                         "the recorder's signature)")
    ap.add_argument("--no-record", action="store_true",
                    help="skip the full-model recording pass (iterating on the labelling stages)")
    ap.add_argument("--no-llm", action="store_true", help="skip the LLM simulator comparison at the end")
    ap.add_argument("--processes", type=int, default=0,
                    help="worker processes of the measured run (default: the cores this process may use), beside a "
                         "baseline run in threads of one process")
    ap.add_argument("--embed", choices=("best", "accepted", "all", "none"), default="best",
                    help="label vector policy of the runs (RunSpec.embed)")
    ap.add_argument("--compare-embed", action="store_true",
                    help="also run the worker processes with the other policies (accepted, all) and compare "
                         "the label embedding cost")
    args = ap.parse_args()
    if args.quick:
        args.neurons, args.tokens, args.slice_tokens = 8, 1024, 4096
    logging.basicConfig(level=logging.WARNING)
    from neurolabel.activations.models import load_target
    from neurolabel.activations.record import record_activations
    from neurolabel.pipeline.run import run
    from neurolabel.pipeline.simulators import resolve_simulators
    from neurolabel.pipeline.spec import RunSpec
    from neurolabel.storage.db import session_scope, upgrade
    from neurolabel.storage.queries import save_neuron_records

    explainers = [t for t in ("concept_induction", "pmi") if t in EXPLAINERS]
    sims = resolve_simulators(explainers)
    print(f"# bench/pipeline.py {'--quick ' if args.quick else ''}symbolic explainers={explainers} simulators={sims}")
    target = load_target("default")
    n_total = target.n_layers * target.n_units

    # -- record: all layers, all units, one corpus pass (the recorder's defaults, as `neurolabel label`)
    if args.no_record:
        t_rec_full = 0.0
        print("record   skipped (--no-record): the whole-model figure below leaves the recording out")
    else:
        t0 = time.perf_counter()
        rec_all = record_activations(target, "default", layers=list(range(target.n_layers)), units=None,
                                     max_tokens=args.tokens, progress=False)
        t_rec = time.perf_counter() - t0
        rec_tokens = rec_all.n_tokens
        del rec_all
        t_rec_full = t_rec * PIPELINE_TOKENS / rec_tokens
        print(f"record   all {n_total} units over {rec_tokens} tokens: {t_rec:.1f} s "
              f"({rec_tokens / t_rec:.0f} tok/s) -> {t_rec_full:.0f} s for {PIPELINE_TOKENS} tokens "
              f"= {1000 * t_rec_full / n_total:.2f} ms/neuron")

    # -- explain, score, store on a slice of layer 10
    units = list(range(args.neurons))
    # as `neurolabel label` records them: the recorder's defaults (top / random windows per split, window length)
    t0 = time.perf_counter()
    records, n_slice_tokens = _slice_records(target, units, args.slice_tokens, args.cache)
    rec0 = records[0]
    print(f"labelled slice: units 0-{args.neurons - 1} of layer 10 recorded over {n_slice_tokens} tokens with the "
          f"recorder's defaults ({len(rec0.windows('top', 'explain'))} top + {len(rec0.windows('random', 'explain'))} "
          f"random explain windows, {len(rec0.windows('top', 'score'))} + {len(rec0.windows('random', 'score'))} held "
          f"out, per neuron): {time.perf_counter() - t0:.0f} s{' (cached)' if args.cache else ''}")
    # one-time loads (ontology, annotator, MiniLM for label embeddings) are not per-neuron costs
    from neurolabel.lm.embeddings import embed
    from neurolabel.pipeline.plugins import build

    t0 = time.perf_counter()
    for tag in explainers:
        build("explainer", tag)
    for tag in {*sims.values(), "lexical"}:
        build("simulator", tag)
    embed(["warm-up"])
    print(f"one-time loads (explainers, simulators, MiniLM): {time.perf_counter() - t0:.1f} s")
    from neurolabel.lm.embeddings import label_precision
    from neurolabel.pipeline.run import cores
    from neurolabel.storage.writes import label_embedder

    processes = args.processes or cores()  # as `neurolabel label --processes auto` counts them
    runs = {}
    embedded = {}  # run -> (distinct texts computed, embedding CPU s, vectors stored, labels stored)
    plan = [("threads", 1, args.embed), ("processes", processes, args.embed)]
    if args.compare_embed:
        plan += [(f"processes embed={p}", processes, p) for p in ("best", "accepted", "all") if p != args.embed]
    with tempfile.TemporaryDirectory() as tmp:
        # the same neurons labelled twice: in threads of this process (the baseline) and in
        # `processes` worker processes, each run on its own copy of the recorded database
        for name, procs, policy in plan:
            url = f"sqlite:///{tmp}/bench-{name.replace(' ', '-')}.db"
            upgrade(url)
            with session_scope(url) as session:
                save_neuron_records(session=session, records=records)
            # written every 32 neurons as in a whole-model run (~1,440 batches there, 3 of 96 here);
            # the last write is counted apart (LabelSummary.final_write_s)
            spec = RunSpec(model="default", layers=(10,), units=tuple(units), explainers=tuple(explainers),
                           processes=procs, embed=policy)
            spec_concurrency = spec.concurrency
            label_embedder().clear()  # each run embeds its labels itself
            runs[name] = run(spec, database_url=url, progress=False)
            emb_run = label_embedder()
            with session_scope(url) as session:
                from sqlalchemy import func, select

                from neurolabel.storage.models import ExplanationRow
                stored = session.execute(select(func.count(ExplanationRow.id),
                                                func.count(ExplanationRow.embedding))).one()
            embedded[name] = (emb_run.computed, emb_run.cpu_seconds, stored[1], stored[0])
            if procs == 1 and processes == 1 and name == "threads":
                runs["processes"] = runs[name]
                embedded["processes"] = embedded[name]
                if not args.compare_embed:
                    break
    base = runs["threads"]
    s = runs["processes"]

    def loop_ms(r) -> float:  # the labelling loop and its last write, per neuron
        return 1000 * (r.loop_s + r.final_write_s) / max(1, r.processed)

    print(f"label wall (loop + last write): {spec_concurrency} threads of one process {loop_ms(base):.1f} ms/neuron, "
          f"{processes} worker processes {loop_ms(s):.1f} ms/neuron ({loop_ms(base) / loop_ms(s):.2f}x); "
          f"same explanations stored: {base.explanations == s.explanations}, accepted {base.accepted} / {s.accepted}")
    print(f"below: the run in {processes} worker processes (stage times are each neuron's own, in its process)")
    n = max(1, s.processed)
    per = {"load": s.times.load_s / n}
    for tag, v in s.times.explain_s.items():
        per[f"explain {tag}"] = v / n
    for tag, v in s.times.score_s.items():
        per[f"score {tag}"] = v / n
    waited_in_loop = max(0.0, s.times.store_wait_s - s.final_write_s)
    per["store: waited for in the loop"] = waited_in_loop / n
    print(f"label    {s.processed} neurons of layer 10: {s.explanations} explanations, {s.accepted} accepted, "
          f"{len(s.errors)} explainer/scoring errors, {s.elapsed_s:.1f} s: loop {s.loop_s:.1f} s, last write "
          f"{s.final_write_s:.2f} s, once {s.elapsed_s - s.loop_s - s.final_write_s:.2f} s (building, workers)")
    for k, v in per.items():
        print(f"  {k:<34} {1000 * v:9.1f} ms/neuron")
    print(f"  {'store in background (not summed)':<34} {1000 * s.times.store_s / n:9.1f} ms/neuron, of which label "
          f"embeddings {1000 * s.times.embed_s / n:.1f} ms/neuron (wall: queued behind the neurons in flight, "
          f"then computed by a worker process); the last write, waited for after the loop: "
          f"{1000 * s.final_write_s:.0f} ms once")
    computed, emb_cpu, n_vec, n_lab = embedded["processes"]
    print(f"  label embeddings (embed={args.embed}): {computed} distinct texts computed, {n_vec} of {n_lab} stored "
          f"labels with a vector, {1000 * emb_cpu / n:.1f} ms CPU/neuron ({label_precision()})")
    per_neuron = sum(per.values())
    print(f"  (stage times are each neuron's own, summed over the run's concurrent workers: where the time goes, "
          f"not how long the run took; stages sum to {1000 * per_neuron:.1f} ms/neuron)")
    n_cores = cores()
    # a whole-model run embeds its last batches inside the loop, on one core beside explaining: the
    # loop plus their embedding CPU over the cores (the neurons after the last flush in the loop)
    every = RunSpec().store_every
    n_last = n - every * ((n - 1) // every)
    wall = (s.loop_s + emb_cpu / n * n_last / n_cores) / n
    upper = (s.loop_s + s.final_write_s) / n
    once = s.elapsed_s - s.loop_s - s.final_write_s
    total = t_rec_full + once + wall * n_total
    print(f"extrapolated by the run's wall time: {n_total} neurons = record {t_rec_full / 60:.1f} min + label "
          f"{1000 * wall:.1f} ms/neuron x {n_total} = {wall * n_total / 60:.1f} min + once {once:.1f} s -> "
          f"{total / 60:.1f} min on this machine (target <= 15 min: {'MET' if total <= 900 else 'NOT MET'}; "
          f"{total / 900:.2f}x the target); label = the loop plus the embedding CPU of its last {n_last} neurons "
          f"over {n_cores} cores (the loop alone {1000 * s.loop_s / n:.1f} ms/neuron -> "
          f"{(t_rec_full + once + s.loop_s / n * n_total) / 60:.1f} min; with the whole last write "
          f"{1000 * upper:.1f} ms/neuron -> {(t_rec_full + once + upper * n_total) / 60:.1f} min); stages one "
          f"after another: {(t_rec_full + per_neuron * n_total) / 60:.1f} min")
    emb_floor = emb_cpu / n * n_total / n_cores
    print(f"label embeddings alone: {1000 * emb_cpu / n:.1f} ms CPU/neuron x {n_total} / {n_cores} cores = "
          f"{emb_floor / 60:.1f} min, the floor they set on a whole-model run with embed={args.embed} "
          f"({computed / n:.1f} distinct texts per neuron)")
    for name in runs:
        if not name.startswith("processes embed="):
            continue
        a = runs[name]
        policy = name.split("=", 1)[1]
        a_computed, a_cpu, a_vec, a_lab = embedded[name]
        na = max(1, a.processed)
        print(f"embed={policy} in the same run: {a_computed} distinct texts computed, {a_vec} of {a_lab} labels with a "
              f"vector, {1000 * a_cpu / na:.1f} ms CPU/neuron (floor {a_cpu / na * n_total / n_cores / 60:.1f} min); "
              f"label wall {loop_ms(a):.1f} ms/neuron; embed={args.embed} / {policy}: texts "
              f"{computed / max(1, a_computed):.2f}x, embedding CPU {emb_cpu / max(1e-9, a_cpu):.2f}x, "
              f"label wall {loop_ms(s) / loop_ms(a):.2f}x; same explanations stored: "
              f"{a.explanations == s.explanations}")
    if args.no_llm:
        return

    # -- all-at-once vs one token at a time
    from neurolabel.core.types import Explanation, NeuronId
    from neurolabel.lm.factory import local_backend
    from neurolabel.scoring.llm_simulator import LLMSimulator

    rec = records[0]
    n_win, n_tok = (1, 8) if args.quick else (2, 16)
    windows = [w.tokens[:n_tok] for w in rec.windows("top", "score")[:n_win]]
    expl = Explanation(model=rec.model, neuron=rec.neuron, explainer="bench", explainer_version="0", text="animals")
    sim = LLMSimulator(local_backend())
    sim.simulate_many(expl, windows[:1])  # warm-up
    sim.forward_passes = 0
    t0 = time.perf_counter()
    sim.simulate_many(expl, windows)
    t_all, f_all = time.perf_counter() - t0, sim.forward_passes
    sim.forward_passes = 0
    t0 = time.perf_counter()
    for w in windows:
        sim.simulate_token_by_token(expl, w)
    t_one, f_one = time.perf_counter() - t0, sim.forward_passes
    print(f"LLM simulator on {len(windows)} windows x {len(windows[0])} tokens: all-at-once {f_all - 1} window passes "
          f"+ 1 shared header pass, {t_all:.2f} s; one-at-a-time {f_one} full-prompt passes, {t_one:.2f} s; "
          f"ratio {f_one / (f_all - 1):.0f}x passes per window ({f_one / f_all:.1f}x counting the header pass), "
          f"{t_one / t_all:.1f}x time (a 64-token window: 64x)")


def _slice_records(target, units: list[int], max_tokens: int, cache: Path | None):
    """The slice's records (layer 10, ``units``) recorded with the recorder's defaults over
    ``max_tokens`` tokens of the default corpus, and the tokens read; with ``cache``, loaded from
    there when an earlier run saved the same key."""
    import hashlib
    import inspect
    import pickle

    from neurolabel.activations.corpus import BUILTIN_CORPORA
    from neurolabel.activations.record import record_activations
    from neurolabel.core.types import NeuronRecord

    key = hashlib.sha256(repr((BUILTIN_CORPORA["default"][0], units, max_tokens,
                               str(inspect.signature(record_activations)),
                               list(NeuronRecord.__dataclass_fields__))).encode()).hexdigest()[:16]
    path = cache / f"pipeline-slice-{key}.pkl" if cache is not None else None
    if path is not None and path.exists():
        with path.open("rb") as f:
            return pickle.load(f)
    recording = record_activations(target, "default", layers=[10], units=units, max_tokens=max_tokens, progress=False)
    got = (list(recording.records()), recording.n_tokens)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(got, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    return got


if __name__ == "__main__":
    main()
