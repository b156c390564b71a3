"""Output-side decoding of every SmolLM2-135M MLP neuron, and its agreement with input-side labels.

1. Time to decode all 30 × 1536 = 46,080 neurons (top 10 promoted and suppressed tokens each,
   ``explainers/output_tokens.decode_layer``: batched products and row-wise ``topk``), against a
   baseline measured in the same run: a Python loop of one matrix-vector product and two
   ``topk`` per neuron, timed on a sample and extrapolated. Target: ≤ 120 s for the whole model.
2. Agreement: real neurons (``bench/facets.real_records``: layers 2, 6, 12, 18, 24, 29 × units
   0–24, 32k tokens) labelled with the symbolic explainers (concept induction, PMI; the best
   held-out-scored candidate is the neuron's input-side label), then the share of neurons whose
   output-side top promoted token falls inside that label (``output_tokens.agreement``), against a
   shuffled baseline (each neuron's output side against another neuron's label).

    .venv/bin/python bench/decode.py            # full run
    .venv/bin/python bench/decode.py --quick    # 3 layers, 12 neurons
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neurolabel.core.errors import NeurolabelError  # noqa: E402

log = logging.getLogger("bench.decode")


def timing(layers: list[int], loop_sample: int) -> None:
    import torch

    from neurolabel.activations.models import load_target
    from neurolabel.explainers.output_tokens import decode_layer, neuron_directions, output_weights

    t0 = time.perf_counter()
    target = load_target("default", device="cpu")
    weights = output_weights(target)
    load_s = time.perf_counter() - t0
    n = len(layers) * target.n_units
    print(f"\n## 1. decode {n:,} neurons ({len(layers)} layers x {target.n_units}) of {target.name}, "
          f"vocabulary {weights.unembedding.shape[0]:,}, torch threads {torch.get_num_threads()} "
          f"(model load {load_s:.1f} s)")
    t0 = time.perf_counter()
    per_layer = []
    for layer in layers:
        t1 = time.perf_counter()
        decode_layer(target, layer, top_k=10, weights=weights)
        per_layer.append(time.perf_counter() - t1)
    batched = time.perf_counter() - t0
    # baseline: one neuron at a time
    dirs = neuron_directions(target, layers[0])
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(loop_sample):
            logits = weights.unembedding @ dirs[i]
            torch.topk(logits, 10)
            torch.topk(logits, 10, largest=False)
    loop_per = (time.perf_counter() - t0) / loop_sample
    loop_total = loop_per * n
    print(f"batched decode_layer : {batched:8.1f} s  ({batched / len(layers):.2f} s/layer, "
          f"min {min(per_layer):.2f}, max {max(per_layer):.2f}; {n / batched:,.0f} neurons/s)")
    print(f"per-neuron loop      : {loop_total:8.1f} s  (extrapolated from {loop_sample} neurons, "
          f"{1000 * loop_per:.2f} ms/neuron)")
    print(f"speed-up batched / loop: {loop_total / batched:.1f}x")
    if len(layers) < target.n_layers:
        est = batched / len(layers) * target.n_layers
        print(f"extrapolated to all {target.n_layers * target.n_units:,} neurons: {est:.1f} s")
        batched = est
    print(f"target: all 46,080 neurons in <= 120 s -> {'MET' if batched <= 120 else 'NOT MET'} ({batched:.1f} s)")


def agreement_share(layers: list[int], units: list[int], max_tokens: int, seed: int) -> None:
    from bench.facets import real_records, single_best
    from neurolabel.activations.models import load_target
    from neurolabel.explainers.output_tokens import OutputTokensExplainer, agreement
    from neurolabel.pipeline.plugins import build

    t0 = time.perf_counter()
    records, n_tokens = real_records(layers, units, max_tokens)
    print(f"\n## 2. agreement: {len(records)} real neurons (layers {layers}, units {units[0]}-{units[-1]}, "
          f"{n_tokens} corpus tokens; {time.perf_counter() - t0:.1f} s to record or read)")
    t0 = time.perf_counter()
    labels = [single_best(r) for r in records]
    print(f"input-side labels (concept_induction + pmi, best held-out score): {time.perf_counter() - t0:.1f} s")
    out = OutputTokensExplainer(load_target("default", device="cpu"))
    outputs = {}
    for layer in layers:
        for e in out.explain_layer(layer, units):
            outputs[e.neuron] = e
    pairs = [(outputs[r.neuron], lab) for r, lab in zip(records, labels) if lab is not None]
    n = len(pairs)
    rng = np.random.default_rng(seed)
    perm = (np.arange(n) + rng.integers(1, max(2, n))) % max(1, n)  # a derangement

    def measure(idx) -> tuple[np.ndarray, np.ndarray]:
        top, share = [], []
        for i, j in enumerate(idx):
            o, lab = pairs[i][0], pairs[int(j)][1]
            try:
                r = agreement(o, lab, build("simulator", lab.score.simulator))
            except NeurolabelError as exc:
                log.warning("%s: %s", o.neuron, exc)
                top.append(0.0)
                share.append(0.0)
                continue
            top.append(r.parts["top_token_inside"])
            share.append(r.parts["agreement"])
        return np.array(top), np.array(share)

    own_top, own_share = measure(range(n))
    sh_top, sh_share = measure(perm)
    print(f"{'':<28} {'neurons':>7} {'top token inside label':>23} {'promoted weight inside':>23}")
    print(f"{'own input-side label':<28} {n:>7} {own_top.mean():>23.3f} {own_share.mean():>23.3f}")
    print(f"{'shuffled labels (baseline)':<28} {n:>7} {sh_top.mean():>23.3f} {sh_share.mean():>23.3f}")
    ratio = own_top.mean() / sh_top.mean() if sh_top.mean() > 0 else float("nan")
    print(f"ratio own / shuffled (top token inside): {ratio:.2f}")
    agree = [(pairs[i][0], pairs[i][1]) for i in range(n) if own_top[i] > 0]
    for o, lab in agree[:8]:
        print(f"  agree {o.neuron}: {lab.text[:60]!r} <-> {o.text[:70]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 layers timed, 12 neurons for agreement")
    ap.add_argument("--loop-sample", type=int, default=200, help="neurons timed one at a time for the baseline")
    ap.add_argument("--max-tokens", type=int, default=32_768)
    ap.add_argument("--skip-agreement", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    print(f"# bench/decode.py {'--quick' if args.quick else ''}")
    t0 = time.perf_counter()
    timing([0, 15, 29] if args.quick else list(range(30)), args.loop_sample)
    if not args.skip_agreement:
        layers = [6, 18] if args.quick else [2, 6, 12, 18, 24, 29]
        units = list(range(6 if args.quick else 25))
        agreement_share(layers, units, 8192 if args.quick else args.max_tokens, args.seed)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
