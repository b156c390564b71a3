"""Benchmark of activation recording on the default model and corpus.

For two corpus sizes, in one process and over the same (pre-tokenised) windows: the bare
forward passes of the base model (no hooks) and the recording run (hooks on every requested
layer, top-k / reservoir / statistics bookkeeping: the recorder that ``record_activations``
runs). The two are interleaved batch by batch (bare then record, record then bare, ...): this
machine's speed drifts by several per cent within a minute, which made back-to-back whole runs
disagree by more than the overhead being measured. Prints the summed times and their ratio,
the peak memory (RSS growth over the phase, sampled every 20 ms) and the size of the kept state.
Target: ratio <= 1.10 with all 30 layers x 1536 units recorded, memory flat in corpus size.

    .venv/bin/python bench/capture.py            # 32k and 128k tokens, all 30 layers (~8 min)
    .venv/bin/python bench/capture.py --quick    # 4k and 16k tokens
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

from neurolabel.activations.corpus import iter_windows, load_corpus  # noqa: E402
from neurolabel.activations.models import load_target  # noqa: E402
from neurolabel.activations.record import _batched, _Recorder  # noqa: E402
from neurolabel.activations.units import model_inputs, unit_hooks  # noqa: E402

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


def bare(target, windows, *, batch_size: int) -> float:
    """Seconds for the plain base-model forward over ``windows``."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        for batch in _batched(windows, batch_size):
            target.model(input_ids=model_inputs(target, [w.token_ids for w in batch]), use_cache=False)
    return time.perf_counter() - t0


def interleaved(target, windows, layers, *, batch_size: int, top_k: int, threads):
    """Per batch, the bare forward and the recording step, in alternating order.
    Returns (bare seconds, recording seconds, the recorder, windows, tokens)."""
    rec = _Recorder(target, layers, None, top_k=top_k, n_reservoir=20, batch_size=batch_size, seed=0,
                    threads=threads)
    t_bare = t_rec = 0.0
    n_windows = n_tokens = 0
    for i, batch in enumerate(_batched(windows, batch_size)):
        ids = model_inputs(target, [w.token_ids for w in batch])
        for step in ((0, 1) if i % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            with torch.inference_mode():
                if step == 0:
                    target.model(input_ids=ids, use_cache=False)
                else:
                    with unit_hooks(target, layers, rec.on_layer):
                        rec.feed(batch)
            dt = time.perf_counter() - t0
            if step == 0:
                t_bare += dt
            else:
                t_rec += dt
        n_windows += len(batch)
        n_tokens += sum(len(w.token_ids) for w in batch)
    return t_bare, t_rec, rec, n_windows, n_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small corpus sizes (4k, 16k tokens)")
    ap.add_argument("--sizes", type=int, nargs=2, default=None, help="two corpus sizes in tokens")
    ap.add_argument("--layers", default="all", help="'all' or comma-separated layers")
    ap.add_argument("--top-k", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--bookkeeping-threads", type=int, default=0,
                    help="torch threads for the top-k bookkeeping (0 = same as the forward pass)")
    args = ap.parse_args()
    sizes = args.sizes or ([4096, 16384] if args.quick else [32768, 131072])
    window_tokens = 64

    t0 = time.perf_counter()
    target = load_target("default", device="cpu")
    corpus = load_corpus("default")
    layers = list(range(target.n_layers)) if args.layers == "all" else [int(x) for x in args.layers.split(",")]
    print(f"model {target.name}: {target.n_layers} layers x {target.n_units} units, loaded in "
          f"{time.perf_counter() - t0:.1f} s; recording {len(layers)} layers x {target.n_units} units, "
          f"top_k={args.top_k} per split, batch {args.batch_size} x {window_tokens} tokens, "
          f"torch threads {torch.get_num_threads()}")
    # warm-up (allocator, kernels)
    warm = list(iter_windows(target.tokenizer, corpus, window_tokens=window_tokens, max_windows=2 * args.batch_size))
    bare(target, warm, batch_size=args.batch_size)

    print(f"{'tokens':>7} {'bare s':>8} {'record s':>9} {'ratio':>6} {'tok/s rec':>9} "
          f"{'peak MB bare':>12} {'peak MB rec':>11} {'state MB':>9} {'kept windows':>12}")
    rows = []
    for n in sizes:
        windows = list(iter_windows(target.tokenizer, corpus, window_tokens=window_tokens,
                                    max_windows=n // window_tokens))
        with _PeakRSS() as mb:
            bare(target, windows[: 4 * args.batch_size], batch_size=args.batch_size)
        with _PeakRSS() as mr:
            t_bare, t_rec, recorder, n_windows, n_tokens = interleaved(
                target, windows, layers, batch_size=args.batch_size, top_k=args.top_k,
                threads=args.bookkeeping_threads or None)
        rec = recorder.recording(n_windows=n_windows, n_tokens=n_tokens, window_tokens=window_tokens,
                                 n_random=20, n_quantile_bins=5, per_bin=2)
        ratio = t_rec / t_bare
        rows.append((n, ratio, mr.growth_mb))
        print(f"{n_tokens:>7} {t_bare:>8.1f} {t_rec:>9.1f} {ratio:>6.3f} {n_tokens / t_rec:>9.0f} "
              f"{mb.growth_mb:>12.0f} {mr.growth_mb:>11.0f} {rec.state_bytes() / 2**20:>9.0f} "
              f"{len(rec.tokens):>12}", flush=True)
        last = rec
        del rec, recorder
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
