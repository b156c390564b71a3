"""Cost of the labelling pipeline per neuron and stage, extrapolated to all 46,080 MLP neurons
of SmolLM2-135M with the symbolic explainers (the critical path: storing runs in a background
thread, and only the time the run waited for it counts); and forward passes of the all-at-once LLM
simulator against a one-token-at-a-time loop.

Stages, measured in this run on the default model:
- record: one pass over the corpus with every layer and unit hooked (``record_activations``): a
  first call on 512 tokens pays what a run pays once (the first forward passes, allocations; ~3 s),
  then ``--tokens`` tokens are measured and scaled linearly to the rest of the pipeline's 100,000
  tokens (the rate does not change with length: 844 / 863 / 864 tokens/s at 4,096 / 16,384 /
  100,000 tokens, each after a first call; 100,000 took 115.7 s). ``label`` makes as few passes
  as its memory budget allows (:func:`pipeline.run.record_passes`: one on a 24 GB machine since the
  per-type token sums take a row per type the corpus shows); plus storing the records
  (``save_neuron_records`` of the labelled slice's records into SQLite, scaled to every neuron),
  which ``label`` does in a process of its own beside the labelling (counted as its CPU over the
  cores). This is still an extrapolation from layer 10: ``neurolabel label --layers 0-29 --fast``
  measured end to end took 15.9 and 18.7 min in two runs on 2026-11-30 while this bench gave 14.9
  (31.9 min earlier that day, when it gave 12.7-14.2: storing the records came first then);
- load / explain / score / store: ``pipeline.run.run`` on ``--warm`` + ``--neurons`` neurons of
  layer 10 (default 352 + 128), recorded first as ``neurolabel label`` records them (the recorder's
  defaults over ``--slice-tokens``, default the pipeline's 100,000 tokens: explaining and scoring
  cost grows with the windows kept), written every ``RunSpec.store_every`` neurons as a whole-model
  run writes them (``--store-every`` to change it); run in threads of one process (the baseline) and in ``--processes``
  worker processes (default: the machine's cores), each run in a child forked from the bench
  after the one-time loads, so that every run starts from the same state, as a whole-model run
  starts.

**Steady state.** A whole-model run explains every neuron against the same ~1,560 corpus windows
per split, and its memos of windows, tokens and classes (annotation, closures, lexical kinds) fill
over its first few hundred neurons; the other 45,000 find them full. Explaining and scoring
cost ~2x as much per neuron in a process's first 96 neurons as after 200 (thread CPU, one process,
480 new neurons of layer 10 in a row, loaded: 102, 59, 48, 43, then 39-45 ms per block of 48). So
the whole-model figure is the time of the warm-up neurons as measured (from cold) plus every other
neuron at the rate of the last ``--neurons`` (results taken after the warm-up's, the writes and
label embeddings inside the loop included), plus the last write, what the run pays once and the
recording; the mean of the whole loop (every neuron at the cold start's cost, as this bench
extrapolated before) is printed beside it.

    .venv/bin/python bench/pipeline.py           # 352 + 128 neurons, 4096 tokens measured
    .venv/bin/python bench/pipeline.py --quick   # 8 + 8 neurons, 1024 tokens
    .venv/bin/python bench/pipeline.py --no-llm  # without the LLM simulator comparison
    .venv/bin/python bench/pipeline.py --no-llm --compare-embed  # + runs with --embed accepted and all
    .venv/bin/python bench/pipeline.py --no-llm --cache /work/pcache  # reuse the slice's recording
    .venv/bin/python bench/pipeline.py --no-llm --set concept_induction.alternatives=[] \
        --set concept_induction.class_search=false   # explainer parameters (here `label --fast`'s)

``--embed`` is the runs' label vector policy (default ``best``: each explainer's best-scored
candidate); ``--compare-embed`` adds runs in worker processes with the other policies that embed
at write time (``accepted``: also the top-ranked and the accepted candidates, the default before;
``all``: every candidate) on the same neurons, each with its distinct texts and embedding CPU.
The CPU of each run's process and of its worker processes is printed per neuron (the machine's
whole budget: on 2 cores a whole-model run cannot take less than half of it in wall time).
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
    ap.add_argument("--neurons", type=int, default=128,
                    help="neurons measured, labelled after the --warm ones in the same run (default 128: one "
                         "write of RunSpec.store_every's default falls in the measured neurons, as in a "
                         "whole-model run's stretch of 128)")
    ap.add_argument("--warm", type=int, default=352,
                    help="neurons labelled first in each run, as a whole-model run's first neurons: its memos of "
                         "windows, tokens and classes fill over them (default 352: 176 per worker process)")
    ap.add_argument("--layer", type=int, default=10,
                    help="the layer whose units are labelled (default 10; the whole-model figure extrapolates from it)")
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
    ap.add_argument("--store-every", type=int, default=None,
                    help="neurons per write (RunSpec.store_every; default the spec's)")
    ap.add_argument("--set", dest="params", action="append", default=None, metavar="PLUGIN.PARAMETER=VALUE",
                    help="an explainer parameter, as `neurolabel label --set` (repeatable), e.g. "
                         "concept_induction.class_search=false")
    ap.add_argument("--embed", choices=("best", "accepted", "all", "none"), default="best",
                    help="label vector policy of the runs (RunSpec.embed)")
    ap.add_argument("--compare-embed", action="store_true",
                    help="also run the worker processes with the other policies (accepted, all) and compare "
                         "the label embedding cost")
    args = ap.parse_args()
    if args.quick:
        args.neurons, args.warm, args.tokens, args.slice_tokens = 8, 8, 1024, 4096
    logging.basicConfig(level=logging.WARNING)
    from neurolabel.activations.models import load_target
    from neurolabel.activations.record import record_activations
    from neurolabel.pipeline.run import run
    from neurolabel.pipeline.simulators import resolve_simulators
    from neurolabel.pipeline.spec import RunSpec
    from neurolabel.storage.db import session_scope, upgrade
    from neurolabel.storage.queries import save_neuron_records

    from neurolabel.service.cli_label import parse_params

    explainers = [t for t in ("concept_induction", "pmi") if t in EXPLAINERS]
    sims = resolve_simulators(explainers)
    by_tag = parse_params(args.params, explainers)
    print(f"# bench/pipeline.py {'--quick ' if args.quick else ''}symbolic explainers={explainers} simulators={sims}"
          + (f" parameters={by_tag}" if by_tag else ""))
    print(f"# machine: {_machine()}")
    target = load_target("default")
    n_total = target.n_layers * target.n_units

    # -- record: all layers, all units, one corpus pass (the recorder's defaults, as `neurolabel label`)
    if args.no_record:
        t_rec_full = 0.0
        print("record   skipped (--no-record): the whole-model figure below leaves the recording out")
    else:
        every = list(range(target.n_layers))
        t0 = time.perf_counter()  # what a run pays once: the first call's forward passes and allocations
        cold = record_activations(target, "default", layers=every, units=None, max_tokens=512, progress=False)
        t_cold, cold_tokens = time.perf_counter() - t0, cold.n_tokens
        del cold
        t0 = time.perf_counter()
        rec_all = record_activations(target, "default", layers=every, units=None, max_tokens=args.tokens,
                                     progress=False)
        t_rec = time.perf_counter() - t0
        rec_tokens = rec_all.n_tokens
        del rec_all
        t_rec_full = t_cold + t_rec * (PIPELINE_TOKENS - cold_tokens) / rec_tokens
        print(f"record   all {n_total} units: first call ({cold_tokens} tokens) {t_cold:.1f} s, then {rec_tokens} "
              f"tokens {t_rec:.1f} s ({rec_tokens / t_rec:.0f} tok/s) -> {t_rec_full:.0f} s for {PIPELINE_TOKENS} "
              f"tokens = {1000 * t_rec_full / n_total:.2f} ms/neuron")

    # -- explain, score, store on a slice of layer 10
    units = list(range(args.warm + args.neurons))
    # as `neurolabel label` records them: the recorder's defaults (top / random windows per split, window length)
    t0 = time.perf_counter()
    records, n_slice_tokens = _slice_records(target, units, args.slice_tokens, args.cache, layer=args.layer)
    rec0 = records[0]
    print(f"labelled slice: units 0-{len(units) - 1} of layer {args.layer} recorded over {n_slice_tokens} tokens with the "
          f"recorder's defaults ({len(rec0.windows('top', 'explain'))} top + {len(rec0.windows('random', 'explain'))} "
          f"random explain windows, {len(rec0.windows('top', 'score'))} + {len(rec0.windows('random', 'score'))} held "
          f"out, per neuron): {time.perf_counter() - t0:.0f} s{' (cached)' if args.cache else ''}")
    # one-time loads (ontology, annotator, MiniLM for label embeddings) are not per-neuron costs
    from neurolabel.lm.embeddings import embed
    from neurolabel.pipeline.plugins import build

    t0 = time.perf_counter()
    configs = [{"kind": tag, **by_tag[tag]} if tag in by_tag else tag for tag in explainers]
    for config in configs:
        build("explainer", config)
    for tag in {*sims.values(), "lexical"}:
        build("simulator", tag)
    embed(["warm-up"])
    print(f"one-time loads (explainers, simulators, MiniLM): {time.perf_counter() - t0:.1f} s")
    from neurolabel.lm.embeddings import label_precision
    from neurolabel.pipeline.run import cores
    from neurolabel.storage.writes import label_embedder

    processes = args.processes or cores()  # as `neurolabel label --processes auto` counts them
    n_warm = args.warm
    n_meas = args.neurons
    plan = [("threads", 1, args.embed), ("processes", processes, args.embed)]
    if args.compare_embed:
        plan += [(f"processes embed={p}", processes, p) for p in ("best", "accepted", "all") if p != args.embed]
    if processes == 1:
        plan = [p for p in plan if p[0] != "threads"]
    runs: dict[str, dict] = {}
    save_s: list[float] = []  # storing the slice's records, as `label` stores what it recorded
    with tempfile.TemporaryDirectory() as tmp:
        # the same neurons labelled by each run, each run in a child forked from this process as it is now
        # (plugins built, no neuron seen): a run's memos start as a fresh whole-model run's do, whatever ran before
        for name, procs, policy in plan:
            url = f"sqlite:///{tmp}/bench-{name.replace(' ', '-').replace('=', '-')}.db"
            upgrade(url)
            t0 = time.perf_counter()
            with session_scope(url) as session:
                save_neuron_records(session=session, records=records)
            save_s.append(time.perf_counter() - t0)
            # written every store_every neurons as in a whole-model run; the last write is counted apart
            spec = RunSpec(model="default", layers=(args.layer,), units=tuple(units), explainers=tuple(configs),
                           processes=procs, embed=policy,
                           **({"store_every": args.store_every} if args.store_every else {}))
            runs[name] = _isolated(_measured_run, spec, url)
    spec_concurrency = RunSpec().concurrency
    s = runs["processes"]
    base = runs.get("threads", s)
    n_done = len(s["done"])
    if n_done < n_warm + n_meas:
        raise SystemExit(f"the run labelled {n_done} of {n_warm + n_meas} neurons: {s['summary'].errors[:3]}")

    def steady_ms(r) -> float:  # the measured neurons' wall per neuron: the last n_meas results, after the warm-up
        t = r["done"]
        return 1000 * (t[-1] - t[n_warm - 1]) / n_meas if n_warm else 1000 * (t[-1] - r["t_loop"]) / n_meas

    def loop_ms(r) -> float:  # the whole labelling loop and its last write, per neuron
        sm = r["summary"]
        return 1000 * (sm.loop_s + sm.final_write_s) / max(1, sm.processed)

    sm = s["summary"]
    print(f"label wall, the last {n_meas} neurons after {n_warm} warm-up ones: {spec_concurrency} threads of one "
          f"process {steady_ms(base):.1f} ms/neuron, {processes} worker processes {steady_ms(s):.1f} ms/neuron "
          f"({steady_ms(base) / steady_ms(s):.2f}x); the whole loop from cold (+ last write) {loop_ms(base):.1f} / "
          f"{loop_ms(s):.1f} ms/neuron; same explanations stored: "
          f"{base['summary'].explanations == sm.explanations}, accepted {base['summary'].accepted} / {sm.accepted}")
    print(f"below: the run in {processes} worker processes (stage times are each neuron's own, in its process)")
    cold, warm = s["times"][:n_warm], s["times"][n_warm:]
    rows: dict[str, list[float]] = {}
    for label, part in (("warm-up", cold), ("measured", warm)):
        k = max(1, len(part))
        rows.setdefault("load", []).append(sum(t.load_s for t in part) / k)
        for t in part:
            for tag in t.explain_s:
                rows.setdefault(f"explain {tag}", [0.0, 0.0])
            for tag in t.score_s:
                rows.setdefault(f"score {tag}", [0.0, 0.0])
    for i, part in enumerate((cold, warm)):
        k = max(1, len(part))
        for t in part:
            for tag, v in t.explain_s.items():
                rows[f"explain {tag}"][i] += v / k
            for tag, v in t.score_s.items():
                rows[f"score {tag}"][i] += v / k
    n = max(1, sm.processed)
    print(f"label    {sm.processed} neurons of layer {args.layer}: {sm.explanations} explanations, {sm.accepted} accepted, "
          f"{len(sm.errors)} explainer/scoring errors, {sm.elapsed_s:.1f} s: loop {sm.loop_s:.1f} s, last write "
          f"{sm.final_write_s:.2f} s, once {sm.elapsed_s - sm.loop_s - sm.final_write_s:.2f} s (building, workers)")
    print(f"  {'stage (wall in its worker)':<34} {'first ' + str(n_warm):>12} {'last ' + str(n_meas):>12}  ms/neuron")
    for k, (a, b) in rows.items():
        print(f"  {k:<34} {1000 * a:12.1f} {1000 * b:12.1f}")
    print(f"  {'store in background (whole run)':<34} {1000 * sm.times.store_s / n:12.1f} ms/neuron, of which label "
          f"embeddings {1000 * sm.times.embed_s / n:.1f} ms/neuron (wall: queued behind the neurons in flight, "
          f"then computed by a worker process); waited for in the loop "
          f"{1000 * max(0.0, sm.times.store_wait_s - sm.final_write_s) / n:.1f} ms/neuron; the last write, "
          f"after the loop: {1000 * sm.final_write_s:.0f} ms once")
    computed, emb_cpu, n_vec, n_lab = s["embedded"]
    print(f"  label embeddings (embed={args.embed}): {computed} distinct texts computed, {n_vec} of {n_lab} stored "
          f"labels with a vector, {1000 * emb_cpu / n:.1f} ms CPU/neuron ({label_precision()})")
    c_run, c_workers = s["cpu_s"]
    print(f"  CPU of the whole run (all {n} neurons): the run's process {1000 * c_run / n:.1f} ms/neuron (handing out, "
          f"storing; label embeddings too without worker processes), its worker processes {1000 * c_workers / n:.1f} "
          f"ms/neuron (load, explain, score, label embeddings): {1000 * (c_run + c_workers) / n:.1f} ms/neuron over "
          f"{cores()} cores")
    per_neuron = sum(v[1] for v in rows.values())
    print(f"  (stage times are each neuron's own, in its worker, wall: where the time goes, not how long the run "
          f"took; the measured neurons' stages sum to {1000 * per_neuron:.1f} ms/neuron)")
    # the whole model: the warm-up neurons as measured (from cold), then every other neuron at the measured
    # rate (the writes and label embeddings inside the loop included), the last write once, what the run pays
    # once (building, starting the worker processes) and the recording
    once = sm.elapsed_s - sm.loop_s - sm.final_write_s
    t_cold = (s["done"][n_warm - 1] - s["t_loop"]) if n_warm else 0.0
    rate = steady_ms(s) / 1000
    label_s = t_cold + rate * (n_total - n_warm) + sm.final_write_s
    n_cores = cores()
    save_full = min(save_s) / len(records) * n_total if not args.no_record else 0.0
    print(f"storing records  {1000 * min(save_s) / len(records):.2f} ms/neuron ({len(records)} records, SQLite) -> "
          f"{save_full / 60:.1f} min of one core for {n_total}: `label` stores what it records in a process of its "
          f"own beside the labelling (pipeline.run._RecordStorer), counted below as that CPU over {n_cores} cores")
    t_rec_full += save_full / n_cores
    total = t_rec_full + once + label_s
    print(f"extrapolated by the run's wall time: {n_total} neurons = record (one pass) and store records "
          f"{t_rec_full / 60:.1f} min + label "
          f"({n_warm} warm-up neurons {t_cold:.1f} s + {1000 * rate:.1f} ms/neuron x {n_total - n_warm} + last write "
          f"{sm.final_write_s:.1f} s) {label_s / 60:.1f} min + once {once:.1f} s -> {total / 60:.1f} min on this "
          f"machine (target <= 15 min: {'MET' if total <= 900 else 'NOT MET'}; {total / 900:.2f}x the target); the "
          f"same from the whole loop's mean (every neuron at the cold start's cost): "
          f"{(t_rec_full + once + loop_ms(s) / 1000 * n_total) / 60:.1f} min")
    emb_floor = emb_cpu / n * n_total / n_cores
    print(f"label embeddings alone: {1000 * emb_cpu / n:.1f} ms CPU/neuron x {n_total} / {n_cores} cores = "
          f"{emb_floor / 60:.1f} min, the floor they set on a whole-model run with embed={args.embed} "
          f"({computed / n:.1f} distinct texts per neuron)")
    for name, a in runs.items():
        if not name.startswith("processes embed="):
            continue
        policy = name.split("=", 1)[1]
        a_computed, a_cpu, a_vec, a_lab = a["embedded"]
        na = max(1, a["summary"].processed)
        print(f"embed={policy} in the same run: {a_computed} distinct texts computed, {a_vec} of {a_lab} labels with a "
              f"vector, {1000 * a_cpu / na:.1f} ms CPU/neuron (floor {a_cpu / na * n_total / n_cores / 60:.1f} min); "
              f"label wall (measured neurons) {steady_ms(a):.1f} ms/neuron; embed={args.embed} / {policy}: texts "
              f"{computed / max(1, a_computed):.2f}x, embedding CPU {emb_cpu / max(1e-9, a_cpu):.2f}x, "
              f"label wall {steady_ms(s) / steady_ms(a):.2f}x; same explanations stored: "
              f"{a['summary'].explanations == sm.explanations}")
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


def _measured_run(spec, url: str) -> dict:
    """One labelling run of ``spec`` on ``url``: its summary, when each neuron's result was taken (the run's
    clock), each neuron's stage times in result order and the label embeddings' figures."""
    from sqlalchemy import func, select

    from neurolabel.pipeline import run as R
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.models import ExplanationRow
    from neurolabel.storage.writes import label_embedder

    done: list[float] = []
    times: list = []
    add = R.StageTimes.add

    def add_and_keep(self, other):  # the run adds each neuron's own times to its summary's, in result order
        times.append(other)
        return add(self, other)

    R.StageTimes.add = add_and_keep
    label_embedder().clear()  # each run embeds its labels itself
    import resource

    def cpu(who) -> float:
        u = resource.getrusage(who)
        return u.ru_utime + u.ru_stime

    c_self, c_children = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    t_loop = time.perf_counter()  # replaced by the loop's start below (the run's building is before it)
    summary = R.run(spec, database_url=url, progress=False, on_progress=lambda *a: done.append(time.perf_counter()))
    R.StageTimes.add = add
    cpu_s = (cpu(resource.RUSAGE_SELF) - c_self, cpu(resource.RUSAGE_CHILDREN) - c_children)
    t_loop = (done[-1] - summary.loop_s) if done else t_loop
    emb = label_embedder()
    with session_scope(url) as session:
        stored = session.execute(select(func.count(ExplanationRow.id), func.count(ExplanationRow.embedding))).one()
    return {"summary": summary, "done": done, "t_loop": t_loop, "times": times,
            "embedded": (emb.computed, emb.cpu_seconds, stored[1], stored[0]), "cpu_s": cpu_s}


def _isolated(fn, *args):
    """``fn(*args)`` in a child forked from this process (its memos as this process's are now), the result
    pickled back."""
    import multiprocessing
    import pickle

    ctx = multiprocessing.get_context("fork")
    r, w = ctx.Pipe(duplex=False)

    def child():
        try:
            got = ("ok", fn(*args))
        except BaseException as exc:  # noqa: BLE001 - said by the parent
            got = ("error", repr(exc))
        w.send_bytes(pickle.dumps(got))

    proc = ctx.Process(target=child)
    proc.start()
    w.close()
    data = r.recv_bytes()
    proc.join()
    status, got = pickle.loads(data)
    if status != "ok":
        raise SystemExit(f"a measured run failed: {got}")
    return got


def _machine() -> str:
    """This machine as its figures depend on it: the CPU's model, the vector units torch uses, AMX
    tiles (label embeddings in bfloat16, :func:`lm.embeddings.label_precision`), the cores.
    The machines this project runs on differ by kind: a 2-core AMD EPYC without AVX-512 recorded
    at 372 tok/s and embedded labels at 34 ms CPU per neuron (2026-11-30) where a 2-core Xeon with
    AMX did 818 and 7.6; a 2-core Zen 5 EPYC (AVX-512 BF16 without AMX: bfloat16 labels at 2.7x
    float32's speed, :func:`lm.embeddings.bf16_gain`) labelled the whole model with ``--fast`` end to
    end in 12.9 min with bfloat16 labels, 16.9 with float32 (2026-12-01)."""
    import platform

    import torch

    from neurolabel.lm.embeddings import amx_tiles, avx512_bf16, bf16_gain, label_precision
    from neurolabel.pipeline.run import cores

    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"AMX {'yes' if amx_tiles() else 'no'}, AVX-512 BF16 "
            f"{f'yes (bfloat16 {bf16_gain():.2f}x float32)' if avx512_bf16() else 'no'}, "
            f"label embeddings in {label_precision()}, {cores()} cores")


def _slice_records(target, units: list[int], max_tokens: int, cache: Path | None, *, layer: int = 10):
    """The slice's records (``layer``, ``units``) recorded with the recorder's defaults over
    ``max_tokens`` tokens of the default corpus, and the tokens read; with ``cache``, loaded from
    there when an earlier run saved the same key."""
    import hashlib
    import inspect
    import pickle

    from neurolabel.activations.corpus import BUILTIN_CORPORA
    from neurolabel.activations.record import record_activations
    from neurolabel.core.types import NeuronRecord

    key = hashlib.sha256(repr((BUILTIN_CORPORA["default"][0], units, max_tokens, *([layer] if layer != 10 else []),
                               str(inspect.signature(record_activations)),
                               list(NeuronRecord.__dataclass_fields__))).encode()).hexdigest()[:16]
    path = cache / f"pipeline-slice-{key}.pkl" if cache is not None else None
    if path is not None and path.exists():
        with path.open("rb") as f:
            return pickle.load(f)
    recording = record_activations(target, "default", layers=[layer], units=units, max_tokens=max_tokens, progress=False)
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
