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
    t0 = time.perf_counter()
    rec = record_activations(target, "default", layers=layers, units=None, max_tokens=args.tokens, progress=False)
    dt = time.perf_counter() - t0
    out = {"seconds": dt, "tokens": rec.n_tokens, "threads": torch.get_num_threads(),
           "neurolabel": str(Path(sys.modules["neurolabel"].__file__).parents[1])}
    if args.digest:
        t0 = time.perf_counter()
        out["digest"] = records_digest(rec)
        out["digest_seconds"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(out), flush=True)


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
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    here = Path(__file__).resolve().parents[1]
    trees = {"this": here}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    times: dict[str, list[float]] = {name: [] for name in trees}
    digests: dict[str, set[str]] = {name: set() for name in trees}
    for p in range(args.pairs):
        order = list(trees) if p % 2 == 0 else list(trees)[::-1]
        for name in order:
            r = run_tree(trees[name], args)
            times[name].append(r["seconds"])
            if "digest" in r:
                digests[name].add(r["digest"])
            print(f"pair {p} {name:>8}: {r['tokens']} tokens in {r['seconds']:.1f} s = "
                  f"{r['tokens'] / r['seconds']:.0f} tok/s ({r['threads']} torch threads)"
                  + (f", digest {r['digest'][:16]} ({r['digest_seconds']:.0f} s)" if "digest" in r else ""),
                  flush=True)
    n_tok = r["tokens"]
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:>8}: median {med:.1f} s = {n_tok / med:.0f} tok/s -> whole model "
              f"{med * PIPELINE_TOKENS / n_tok / 60:.2f} min for {PIPELINE_TOKENS} tokens "
              f"(runs: {', '.join(f'{t:.1f}' for t in ts)})")
    if "baseline" in times:
        print(f"speed-up (median baseline / median this): "
              f"{statistics.median(times['baseline']) / statistics.median(times['this']):.2f}x")
    if args.digest:
        same = len(set().union(*digests.values())) == 1
        print("records identical across runs and trees" if same else f"records DIFFER: {digests}")


if __name__ == "__main__":
    main()
