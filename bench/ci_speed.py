"""Concept induction's cost per call beside a baseline revision's, in the same process.

The explainer and search modules of ``--baseline`` (a git revision; default 563846a, the last one
before the graded search was compiled) are loaded from git under their own names beside the
current ones; both explain the same real SmolLM2 neurons (``bench/quality.py``'s recording, reused
from ``--cache``), calls interleaved neuron by neuron, CPU time per call (``time.process_time``:
less sensitive than wall time to other processes on the machine, not insensitive), after a pass
that annotates every window (a neuron never seen before costs ~10 ms more for its annotations,
whichever the code). Rows:

- the baseline revision's explainer;
- the current explainer restricted to the baseline's candidates (``alternatives=()``) — the
  line also says on how many neurons its explanations equal the baseline's (text and structured
  fields), when the baseline has the same candidates;
- the current default explainer.

    .venv/bin/python bench/ci_speed.py --cache /work/qcache            # every 5th of the 150 neurons
    .venv/bin/python bench/ci_speed.py --cache /work/qcache --every 1 --baseline HEAD~3
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"neurolabel.ontology.induction": "ontology/induction.py",
           "neurolabel.explainers.concept_induction": "explainers/concept_induction.py"}


def _baseline(rev: str, tmp: Path):
    """The baseline revision's explainer module, its search module loaded under the same name for
    the time of its import (the current modules stay what ``neurolabel`` imports)."""
    import neurolabel.explainers.concept_induction  # noqa: F401 - the current modules first
    import neurolabel.ontology.induction  # noqa: F401

    saved = {name: sys.modules[name] for name in MODULES}
    try:
        for name, path in MODULES.items():
            src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True,
                                 capture_output=True, text=True).stdout
            file = tmp / path.replace("/", "_")
            file.write_text(src)
            spec = importlib.util.spec_from_file_location(name, file)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)  # type: ignore[union-attr]
        return mod
    finally:
        sys.modules.update(saved)
        from neurolabel.core.registry import EXPLAINERS

        EXPLAINERS.register("concept_induction")(saved["neurolabel.explainers.concept_induction"].ConceptInductionExplainer)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="563846a", help="git revision whose concept induction is the baseline")
    ap.add_argument("--cache", type=Path, default=None, help="bench/quality.py's recording cache folder")
    ap.add_argument("--records", type=Path, default=None,
                    help="a bench/quality.py cache file (or a pickled list of NeuronRecords) to read the neurons from")
    ap.add_argument("--every", type=int, default=5, help="every n-th of the 150 neurons")
    ap.add_argument("--repeat", type=int, default=2, help="passes over the neurons (after one warm-up pass)")
    args = ap.parse_args()
    from bench.quality import _record
    from neurolabel.core.errors import ExplanationError
    from neurolabel.explainers.concept_induction import ConceptInductionExplainer
    from neurolabel.ontology.annotate import Annotator

    target = None
    if args.records is not None:
        import pickle

        with args.records.open("rb") as f:
            got = pickle.load(f)
        records = list(got[0] if isinstance(got, tuple) else got)
    else:
        if args.cache is None:
            from neurolabel.activations.models import load_target

            target = load_target("default")
        records, _, _ = _record(target, "default", [2, 6, 12, 18, 24, 29], list(range(25)), 32_768, 64, True,
                                args.cache)
    records = records[:: args.every]
    ann = Annotator.from_defaults()
    with tempfile.TemporaryDirectory() as tmp:
        old = _baseline(args.baseline, Path(tmp))
    explainers = {f"baseline {args.baseline}": old.ConceptInductionExplainer(ann),
                  "now, baseline's candidates": ConceptInductionExplainer(ann, alternatives=()),
                  "now, default": ConceptInductionExplainer(ann)}

    def call(e, r):
        try:
            return [(x.text, x.structured) for x in e.explain(r)]
        except ExplanationError as exc:
            return str(exc)

    for r in records[:3]:  # warm-up: ontology closures, compiled loops
        for e in explainers.values():
            call(e, r)
    for r in records:  # every window annotated once (the annotator's cache), so that no row pays for it
        call(explainers["now, default"], r)
    times: dict[str, list[float]] = {k: [] for k in explainers}
    same = 0
    for _ in range(args.repeat):
        for r in records:
            got = {}
            for name, e in explainers.items():
                t = time.process_time()
                got[name] = call(e, r)
                times[name].append(time.process_time() - t)
            same += got[f"baseline {args.baseline}"] == got["now, baseline's candidates"]
    base = float(np.mean(times[f"baseline {args.baseline}"]))
    print(f"# bench/ci_speed.py: {len(records)} real neurons x {args.repeat} passes, CPU ms per explain call")
    for name, ts in times.items():
        print(f"{name:<30} {np.mean(ts) * 1000:8.1f} ms  median {np.median(ts) * 1000:7.1f}  "
              f"baseline/this {base / np.mean(ts):5.2f}x")
    print(f"explanations equal to the baseline's (its candidates): {same} of {len(records) * args.repeat} calls")


if __name__ == "__main__":
    main()
