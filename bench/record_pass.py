"""The whole-model record pass: ``record_activations`` with all 30 layers x 1536 units of the
default model hooked over the default corpus (the recorder's defaults, as ``bench/pipeline.py``'s
record line and ``neurolabel label`` run it), timed in this tree and, with ``--baseline``, in
another tree (its own ``.venv``), alternating runs back-to-back (this machine's speed drifts by
several per cent within a minute: never compare against a figure from another time).

Each run is a fresh process (model loaded, then one timed ``record_activations`` call, which
includes reading and tokenising the corpus, as in the pipeline). Prints tokens/s per run, the
medians, the whole-model extrapolation (x 100,000 / tokens) and, with ``--digest``, a hash of
every record the run produced (windows, token strings, activations, ids, splits, quantiles,
statistics, token statistics) so that two trees can be shown to record the same thing.

    .venv/bin/python bench/record_pass.py --baseline /work/wt-recbase --pairs 3
    .venv/bin/python bench/record_pass.py --tokens 16384 --digest
    .venv/bin/python bench/record_pass.py --interleaved /work/wt-recbase/activations/record.py --tokens 8192

``--interleaved FILE`` runs, in one process over the same windows, batch by batch and in rotating
order: the bare forward pass (no hooks), this tree's recorder step and the recorder step of
``FILE`` (another version of ``activations/record.py``, loaded as a module beside this one; the
rest of the package is this tree's). Each recorder's overhead is its summed step time minus the
summed bare time: the comparison least disturbed by the machine's drift (whole runs minutes
apart disagreed by 4x on this shared machine).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PIPELINE_TOKENS = 100_000
"""Corpus tokens of the whole-model pass (``neurolabel label --max-tokens`` default)."""


def records_digest(recording) -> str:
    """A hash of every record's content, floats by their exact bits (repr of Python floats)."""
    h = hashlib.sha256()
    for r in recording.records():
        h.update(repr((r.neuron, r.prefix, r.stats)).encode())
        for part in (r.top, r.random, r.quantile):
            for w in part:
                h.update(repr((w.window_id, w.split, w.kind, w.quantile, w.tokens, w.activations)).encode())
        h.update(repr(r.token_stats).encode())
    return h.hexdigest()


def child(args) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from neurolabel.activations.models import load_target
    from neurolabel.activations.record import record_activations

    target = load_target("default", device="cpu")
    layers = list(range(target.n_layers))
    t0, c0 = time.perf_counter(), time.process_time()
    rec = record_activations(target, "default", layers=layers, units=None, max_tokens=args.tokens, progress=False)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {"seconds": dt, "cpu": cpu, "tokens": rec.n_tokens, "threads": torch.get_num_threads(),
           "neurolabel": str(Path(sys.modules["neurolabel"].__file__).parents[1])}
    if args.digest:
        t0 = time.perf_counter()
        out["digest"] = records_digest(rec)
        out["digest_seconds"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(out), flush=True)


def interleaved(args) -> None:
    import importlib.util

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from neurolabel.activations import record as this
    from neurolabel.activations.corpus import iter_windows, load_corpus
    from neurolabel.activations.models import load_target
    from neurolabel.activations.units import model_inputs, unit_hooks

    spec = importlib.util.spec_from_file_location("record_baseline", args.interleaved)
    base = importlib.util.module_from_spec(spec)
    sys.modules["record_baseline"] = base
    spec.loader.exec_module(base)
    target = load_target("default", device="cpu")
    layers = list(range(target.n_layers))
    windows = list(iter_windows(target.tokenizer, load_corpus("default"), window_tokens=64,
                                max_windows=args.tokens // 64))
    n_tokens = 64 * len(windows)
    V = this.token_types_tracked(len(target.tokenizer), len(layers) * target.n_units, 256.0)

    def recorder(mod):  # as record_activations builds it with its defaults
        return mod._Recorder(target, layers, None, top_k=20, n_reservoir=40, batch_size=32, seed=0,
                             threads=args.bookkeeping_threads, token_types=V)

    recs = {"this": recorder(this), "baseline": recorder(base)}
    mods = {"this": this, "baseline": base}
    t = {"bare": 0.0, "this": 0.0, "baseline": 0.0}
    steps = list(t)
    with torch.inference_mode():
        for b, batch in enumerate(this._batched(windows, 32)):
            for name in steps[b % 3:] + steps[:b % 3]:
                t0 = time.perf_counter()
                if name == "bare":
                    target.model(input_ids=model_inputs(target, [w.token_ids for w in batch]), use_cache=False)
                else:
                    with unit_hooks(target, layers, recs[name].on_layer):
                        recs[name].feed(batch)
                t[name] += time.perf_counter() - t0
            print(f"batch {b}: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()), flush=True)
    for name in ("this", "baseline"):  # the end of the pass: the reservoir sorted, tokens collected
        t0 = time.perf_counter()
        recs[name].recording(n_windows=len(windows), n_tokens=n_tokens, window_tokens=64, n_random=40,
                             n_quantile_bins=5, per_bin=2, token_stats_top=128)
        t[name] += time.perf_counter() - t0
    same = all(torch.equal(getattr(recs["this"].state, f), getattr(recs["baseline"].state, f))
               for f in ("top_vals", "top_ids", "res_max", "mean", "m2", "vmax", "vmin", "active", "tok_sum"))
    print(f"{n_tokens} tokens, all {len(layers)} layers: bare forward {t['bare']:.1f} s; recording: this "
          f"{t['this']:.1f} s (overhead {t['this'] - t['bare']:.1f} s), baseline {t['baseline']:.1f} s (overhead "
          f"{t['baseline'] - t['bare']:.1f} s); overhead ratio baseline/this "
          f"{(t['baseline'] - t['bare']) / max(t['this'] - t['bare'], 1e-9):.2f}x; state identical: {same}")
    for name in ("this", "baseline"):
        print(f"{name:>8}: {n_tokens / t[name]:.0f} tok/s -> whole model "
              f"{t[name] * PIPELINE_TOKENS / n_tokens / 60:.2f} min for {PIPELINE_TOKENS} tokens")


def run_tree(tree: Path, args) -> dict:
    cmd = [str(tree / ".venv" / "bin" / "python"), str(Path(__file__).resolve()), "--child",
           "--tokens", str(args.tokens)] + (["--digest"] if args.digest else [])
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{tree}: no result\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=4096, help="corpus tokens of each timed pass")
    ap.add_argument("--baseline", type=Path, default=None, help="another tree with its own .venv")
    ap.add_argument("--pairs", type=int, default=3, help="runs per tree (alternating, the order flipping)")
    ap.add_argument("--digest", action="store_true", help="hash every record (builds all 46,080 records)")
    ap.add_argument("--interleaved", type=Path, default=None,
                    help="another version of activations/record.py: interleave it, this tree's and the bare forward")
    ap.add_argument("--bookkeeping-threads", type=int, default=None,
                    help="with --interleaved: both recorders' bookkeeping_threads (default: the recorder's, None)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.interleaved is not None:
        interleaved(args)
        return
    if args.child:
        child(args)
        return
    here = Path(__file__).resolve().parents[1]
    trees = {"this": here}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    times: dict[str, list[float]] = {name: [] for name in trees}
    cpus: dict[str, list[float]] = {name: [] for name in trees}
    digests: dict[str, set[str]] = {name: set() for name in trees}
    for p in range(args.pairs):
        order = list(trees) if p % 2 == 0 else list(trees)[::-1]
        for name in order:
            r = run_tree(trees[name], args)
            times[name].append(r["seconds"])
            cpus[name].append(r["cpu"])
            if "digest" in r:
                digests[name].add(r["digest"])
            print(f"pair {p} {name:>8}: {r['tokens']} tokens in {r['seconds']:.1f} s = "
                  f"{r['tokens'] / r['seconds']:.0f} tok/s, CPU {r['cpu']:.1f} s ({r['threads']} torch threads, "
                  f"load average {os.getloadavg()[0]:.1f})"
                  + (f", digest {r['digest'][:16]} ({r['digest_seconds']:.0f} s)" if "digest" in r else ""),
                  flush=True)
    n_tok = r["tokens"]
    for name, ts in times.items():
        med, best = statistics.median(ts), min(ts)
        print(f"{name:>8}: median {med:.1f} s = {n_tok / med:.0f} tok/s -> whole model "
              f"{med * PIPELINE_TOKENS / n_tok / 60:.2f} min for {PIPELINE_TOKENS} tokens; best {best:.1f} s = "
              f"{n_tok / best:.0f} tok/s -> {best * PIPELINE_TOKENS / n_tok / 60:.2f} min; median CPU "
              f"{statistics.median(cpus[name]):.1f} s (runs: {', '.join(f'{t:.1f}' for t in ts)})")
    if "baseline" in times:
        print("speed-up (baseline / this): median wall "
              f"{statistics.median(times['baseline']) / statistics.median(times['this']):.2f}x, best wall "
              f"{min(times['baseline']) / min(times['this']):.2f}x, median CPU "
              f"{statistics.median(cpus['baseline']) / statistics.median(cpus['this']):.2f}x")
    if args.digest:
        same = len(set().union(*digests.values())) == 1
        print("records identical across runs and trees" if same else f"records DIFFER: {digests}")


if __name__ == "__main__":
    main()
