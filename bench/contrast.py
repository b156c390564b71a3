"""Benchmark of a contrast study over all 30 layers x 1536 units of SmolLM2-135M.

Examples: the bundled harmful-vs-harmless sets, repeated to reach each set size. For two set
sizes, in one process and over the same tokenised, length-sorted, padded batches: the bare
forward passes of the base model (attention mask; a no-op hook only ends the pass after the
last tested layer, as the contrast's does — with all 30 layers that is the whole decoder) and the contrast's passes (hooks on
every layer reducing each example to its max and mean per unit, folded into streaming sums and
the reservoirs), interleaved batch by batch (the machine's speed drifts within a minute), then
the contrast's statistics step (AUROC, Mann–Whitney p, d, Benjamini–Hochberg for every unit).
Prints the times, their ratio (target <= 1.2), neurons per second, the peak RSS growth of each
phase and the size of the streaming state (flat in the set size once a side exceeds the
reservoir).

    .venv/bin/python bench/contrast.py             # 150 and 600 examples per side (~5 min)
    .venv/bin/python bench/contrast.py --quick     # 32 and 128 examples per side, layers 0-5
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from bench.capture import _PeakRSS  # noqa: E402
from neurolabel.activations.models import load_target  # noqa: E402
from neurolabel.activations.units import unit_hooks  # noqa: E402
from neurolabel.pipeline import contrast as C  # noqa: E402
from neurolabel.service.cli_contrast import example_paths  # noqa: E402


def _texts(path: str, n: int) -> list[str]:
    lines = [x.strip() for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]
    return [lines[i % len(lines)] for i in range(n)]


def _batches(target, texts: list[str], spec: C.ContrastSpec) -> list[list[list[int]]]:
    side = C._Side(name="x")
    out = []
    for chunk in C._tokenized(target, texts, spec.max_example_tokens, 64 * spec.batch_size, side):
        out.extend(C._batches(chunk, spec.batch_size))
    return out


def _nothing(layer: int, acts) -> None:
    return None


def _bare(target, batch: list[list[int]], pad_id: int) -> None:
    prefix = list(target.prefix_ids)
    T = max(len(x) for x in batch)
    ids = torch.tensor([prefix + x + [pad_id] * (T - len(x)) for x in batch])
    mask = torch.tensor([[1] * (len(prefix) + len(x)) + [0] * (T - len(x)) for x in batch])
    C._forward(target, ids, mask)


def run(target, n: int, layers: list[int], spec: C.ContrastSpec) -> dict:
    a_path, b_path = example_paths("harmful_vs_harmless")
    sides = [_batches(target, _texts(a_path, n), spec), _batches(target, _texts(b_path, n), spec)]
    tok = target.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    acc = C._Accumulator(target, layers, reservoir=spec.reservoir, score=spec.score, batch_size=spec.batch_size)
    t_bare = t_con = 0.0
    state = [C._Side(name="a"), C._Side(name="b")]
    with torch.inference_mode(), _PeakRSS() as mem:
        for k, batches in enumerate(sides):
            acc.allocate(state[k])
            for i, batch in enumerate(batches):
                order = (0, 1) if i % 2 == 0 else (1, 0)
                for which in order:
                    t0 = time.perf_counter()
                    if which == 0:
                        with unit_hooks(target, layers, _nothing):  # stops after the last layer, as the contrast
                            _bare(target, batch, pad_id)
                        t_bare += time.perf_counter() - t0
                    else:
                        with unit_hooks(target, layers, acc.on_layer):
                            C._feed(target, acc, batch, pad_id)
                            acc.fold(state[k], len(batch))
                        state[k].n_tokens += sum(len(x) for x in batch)
                        t_con += time.perf_counter() - t0
        t0 = time.perf_counter()
        st = C._stats(state[0], state[1], spec)
        neurons = C.rank_neurons(st, layers=layers, n_units=target.n_units, spec=spec)
        t_stats = time.perf_counter() - t0
    state_bytes = sum(s.sums.numel() * 8 + s.res.numel() * 4 for s in state)
    tokens = state[0].n_tokens + state[1].n_tokens
    return {"n": n, "tokens": tokens, "bare_s": t_bare, "contrast_s": t_con, "stats_s": t_stats,
            "units": len(layers) * target.n_units, "kept": len(neurons), "rss_mb": (mem.peak - mem.start) / 2**20,
            "state_mb": state_bytes / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", default=None, help="Examples per side, e.g. 150,600.")
    args = ap.parse_args()
    torch.manual_seed(0)
    target = load_target("default")
    layers = list(range(6)) if args.quick else list(range(target.n_layers))
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else ([32, 128] if args.quick else [150, 600])
    spec = C.ContrastSpec(reservoir=256, batch_size=16)
    print(f"contrast of {len(layers)} layers x {target.n_units} units of {target.name}; reservoir {spec.reservoir}, "
          f"batch {spec.batch_size}, torch threads {torch.get_num_threads()}")
    print(f"{'per side':>8} {'tokens':>7} {'bare s':>7} {'contrast s':>10} {'stats s':>7} {'ratio':>6} "
          f"{'neurons/s':>9} {'RSS+ MB':>8} {'state MB':>8} {'kept':>5}")
    for n in sizes:
        r = run(target, n, layers, spec)
        total = r["contrast_s"] + r["stats_s"]
        print(f"{r['n']:>8} {r['tokens']:>7} {r['bare_s']:>7.1f} {r['contrast_s']:>10.1f} {r['stats_s']:>7.1f} "
              f"{total / r['bare_s']:>6.2f} {r['units'] / total:>9.0f} {r['rss_mb']:>8.0f} {r['state_mb']:>8.0f} "
              f"{r['kept']:>5}")
    print("ratio = (contrast passes + statistics) / bare forward passes over the same batches; target <= 1.2")


if __name__ == "__main__":
    main()
