"""Benchmark of activation recording on the default model and corpus.

For two corpus sizes, in one process and over the same windows: the bare forward passes of the
base model (no hooks) and the recording run (hooks on every requested layer, top-k / reservoir
/ statistics bookkeeping). Prints the ratio recording/bare and the peak memory (RSS growth over
the phase, sampled every 20 ms) plus the size of the kept state. Target: ratio <= 1.10 with all
30 layers x 1536 units recorded, memory flat in corpus size.

    .venv/bin/python bench/capture.py            # 4k and 16k tokens, all 30 layers
    .venv/bin/python bench/capture.py --quick    # 1k and 4k tokens
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from activations.corpus import iter_windows, load_corpus  # noqa: E402
from activations.models import load_target  # noqa: E402
from activations.record import _batched, record_activations  # noqa: E402
from activations.units import model_inputs  # noqa: E402

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class _PeakRSS:
    """Samples the RSS in a thread; ``peak - start`` is the growth during the block."""

    def __enter__(self):
        gc.collect()
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def bare(target, corpus, *, max_tokens: int, window_tokens: int, batch_size: int) -> float:
    """Seconds for tokenizing + the plain base-model forward over the same windows."""
    t0 = time.perf_counter()
    windows = iter_windows(target.tokenizer, corpus, window_tokens=window_tokens,
                           max_windows=max_tokens // window_tokens)
    with torch.inference_mode():
        for batch in _batched(windows, batch_size):
            target.model(input_ids=model_inputs(target, [w.token_ids for w in batch]), use_cache=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small corpus sizes (1k, 4k tokens)")
    ap.add_argument("--sizes", type=int, nargs=2, default=None, help="two corpus sizes in tokens")
    ap.add_argument("--layers", default="all", help="'all' or comma-separated layers")
    ap.add_argument("--top-k", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--bookkeeping-threads", type=int, default=1,
                    help="torch threads for the top-k bookkeeping (0 = same as the forward pass)")
    args = ap.parse_args()
    sizes = args.sizes or ([1024, 4096] if args.quick else [4096, 16384])
    window_tokens = 64

    t0 = time.perf_counter()
    target = load_target("default", device="cpu")
    corpus = load_corpus("default")
    layers = list(range(target.n_layers)) if args.layers == "all" else [int(x) for x in args.layers.split(",")]
    print(f"model {target.name}: {target.n_layers} layers x {target.n_units} units, loaded in "
          f"{time.perf_counter() - t0:.1f} s; recording {len(layers)} layers x {target.n_units} units, "
          f"top_k={args.top_k} per split, batch {args.batch_size} x {window_tokens} tokens, "
          f"torch threads {torch.get_num_threads()}")
    # warm-up (allocator, kernels, tokenizer caches)
    bare(target, corpus, max_tokens=2 * args.batch_size * window_tokens, window_tokens=window_tokens,
         batch_size=args.batch_size)

    print(f"{'tokens':>7} {'bare s':>8} {'record s':>9} {'ratio':>6} {'tok/s rec':>9} "
          f"{'peak MB bare':>12} {'peak MB rec':>11} {'state MB':>9} {'kept windows':>12}")
    rows = []
    for n in sizes:
        with _PeakRSS() as mb:
            t_bare = bare(target, corpus, max_tokens=n, window_tokens=window_tokens, batch_size=args.batch_size)
        with _PeakRSS() as mr:
            t0 = time.perf_counter()
            rec = record_activations(target, corpus, layers=layers, max_tokens=n, top_k=args.top_k,
                                     window_tokens=window_tokens, batch_size=args.batch_size, progress=False,
                                     bookkeeping_threads=args.bookkeeping_threads or None)
            t_rec = time.perf_counter() - t0
        ratio = t_rec / t_bare
        rows.append((n, ratio, mr.growth_mb))
        print(f"{rec.n_tokens:>7} {t_bare:>8.1f} {t_rec:>9.1f} {ratio:>6.3f} {rec.n_tokens / t_rec:>9.0f} "
              f"{mb.growth_mb:>12.0f} {mr.growth_mb:>11.0f} {rec.state_bytes() / 2**20:>9.0f} {len(rec.tokens):>12}")
        last = rec
        del rec
    # turning the compact state into NeuronRecord objects (not part of the streaming pass)
    t0 = time.perf_counter()
    n_recs = sum(1 for _ in last.records([layers[0]]))
    t_build = time.perf_counter() - t0
    print(f"building NeuronRecord objects: {n_recs} units of one layer in {t_build:.1f} s "
          f"({t_build / n_recs * 1000:.2f} ms/unit)")
    (n1, r1, m1), (n2, r2, m2) = rows
    print(f"ratio recording/bare: {r1:.3f} at {n1} tokens, {r2:.3f} at {n2} tokens (target <= 1.10)")
    print(f"peak memory growth of recording: {m1:.0f} MB at {n1} tokens, {m2:.0f} MB at {n2} tokens "
          f"({n2 / n1:.1f}x corpus -> {m2 / max(m1, 1e-9):.2f}x memory)")


if __name__ == "__main__":
    main()
