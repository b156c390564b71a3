"""Benchmark of the causal score of a label on SmolLM2-135M (CPU).

For a handful of explanations of neurons of different layers (label words of the three kinds:
class labels, a token, free text), on the bundled neutral prompts: the shared unintervened pass
(once), then per explanation one intervened pass and the comparison with matched random tokens.
Prints seconds per explanation (target <= 2 s on CPU) and the cost relative to one bare forward
pass over the prompts, measured in the same run.

    .venv/bin/python bench/intervene.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from neurolabel.core.types import Explanation, NeuronId  # noqa: E402
from neurolabel.pipeline.causal import base_run, causal_score, default_prompts  # noqa: E402
from neurolabel.pipeline.intervene import load_lm, log_probs, prompt_ids  # noqa: E402

LABELS = [
    (NeuronId(3, 100), {"labels": ["dog", "animal"]}, "dogs and other animals"),
    (NeuronId(10, 7), {"kind": "token", "description": " the"}, " the"),
    (NeuronId(15, 1200), {}, "words about medicine, doctors and hospitals"),
    (NeuronId(20, 512), {"labels": ["money"]}, "money"),
    (NeuronId(25, 33), {"kind": "token", "description": " steal"}, " steal"),
    (NeuronId(29, 900), {}, "French words and sentences"),
]


def main() -> None:
    t0 = time.perf_counter()
    lm = load_lm("default")
    load_s = time.perf_counter() - t0
    prompts = default_prompts()
    ids = [prompt_ids(lm, p) for p in prompts]
    t0 = time.perf_counter()
    log_probs(lm, ids)
    bare_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = base_run(lm, prompts, [n for n, _, _ in LABELS])
    base_s = time.perf_counter() - t0
    print(f"{lm.target.name}: {len(prompts)} prompts, {sum(map(len, ids))} tokens; load {load_s:.1f} s, "
          f"bare forward pass {bare_s:.2f} s, shared base pass {base_s:.2f} s, torch threads {torch.get_num_threads()}")
    print(f"{'neuron':>8} {'s':>6} {'x bare':>7} {'score':>8} {'target':>8} {'random':>8} {'z':>6}  label")
    times = []
    for neuron, structured, text in LABELS:
        e = Explanation(model=lm.target.name, neuron=neuron, explainer="bench", explainer_version="1", text=text,
                        structured=structured)
        t0 = time.perf_counter()
        r = causal_score(lm, e, base=base)
        dt = time.perf_counter() - t0
        times.append(dt)
        z = r.parts["z"]
        print(f"{str(neuron):>8} {dt:>6.2f} {dt / bare_s:>7.2f} {r.score:>+8.4f} {r.parts['target_shift']:>+8.4f} "
              f"{r.parts['random_shift']:>+8.4f} {z if z is None else format(z, '+.2f'):>6}  {text!r}")
    times.sort()
    print(f"per explanation: median {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s (target <= 2 s); "
          f"plus the shared base pass once per prompt set ({base_s:.2f} s)")


if __name__ == "__main__":
    main()
