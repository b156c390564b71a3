"""CPU time per neuron of the pipeline's load, explain and score stages with the symbolic
explainers (concept_induction + pmi), for this checkout beside a baseline revision, and whether
both give the same outputs.

Each side runs in a process of its own, importing ``neurolabel`` from its own tree (the
baseline's is extracted from git with ``git archive``): it stores the records in a fresh SQLite
database with its own code, then, per neuron, loads the record (``pipeline.run.load``) and
explains and scores it (``pipeline.run.explain_and_score_one``: every candidate, its default
simulator and the explainer's extra simulators, as a run does). Stage times are the pipeline's
own stage timings read on the thread's CPU clock (``time.thread_time`` in place of
``perf_counter``: less sensitive than wall time to other processes on the machine, not
insensitive), with one BLAS thread as a labelling run's processes have (``pipeline.run._limit_blas``;
with OpenBLAS's thread per core the small products of the back-off fit cost several times more
thread time) and the garbage collector as the side's run sets it (``pipeline.run._settle_gc``,
where the side has it). One warm-up pass annotates every window and fills the process's memos (a
whole-model run sees each window many times); then ``--repeat`` timed passes, each after the
memos of single neurons are cleared (held-out window sets, parsed labels: a run meets each neuron
once). The two sides run
one after another, ``--rounds`` times alternately, and the figures are means over the rounds.

Same outputs: every explanation (text, structured fields, params, rank, stamps) and every score
part equal, floats to 1e-9; and each loaded record equal to the one stored.

    .venv/bin/python bench/stage_cpu.py --cache /work/qcache                  # the 150 quality neurons
    .venv/bin/python bench/stage_cpu.py --records recs.pkl --baseline main~3  # a pickled list of NeuronRecords
    .venv/bin/python bench/stage_cpu.py --records /work/qcache/quality-9ed2bc9ecc0de3b3.pkl --baseline fddaff3
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "activations", "ontology", "explainers", "scoring", "lm", "storage", "service", "pipeline",
            "client")
EXPLAINERS = ("concept_induction", "pmi")


def _tree(rev: str, tmp: Path) -> Path:
    """A folder whose ``neurolabel`` package is revision ``rev`` of this repository."""
    src = tmp / "src"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    pkg = tmp / "path" / "neurolabel"
    pkg.mkdir(parents=True)
    for f in (src / "namespace").iterdir():
        (pkg / f.name).symlink_to(f)
    for name in PACKAGES:
        if (src / name).exists():
            (pkg / name).symlink_to(src / name)
    return tmp / "path"


def _records(args) -> list:
    if args.records is not None:
        with args.records.open("rb") as f:
            got = pickle.load(f)
        return list(got[0] if isinstance(got, tuple) else got)  # a list, or a bench/quality.py cache file
    from bench.quality import _record

    target = None
    if args.cache is None:
        from neurolabel.activations.models import load_target

        target = load_target("default")
    records, _, _ = _record(target, "default", [2, 6, 12, 18, 24, 29], list(range(25)), 32_768, 64, True, args.cache)
    return records


def _side(args) -> None:
    """One side: store, load, explain and score every record; pickle outputs and CPU times."""
    import logging

    logging.basicConfig(level=logging.ERROR)
    import neurolabel
    from neurolabel.pipeline import run as R
    from neurolabel.pipeline.spec import RunSpec
    from neurolabel.storage.db import session_scope, upgrade
    from neurolabel.storage.queries import save_neuron_records

    with args.side_in.open("rb") as f:
        records = pickle.load(f)
    R.time = types.SimpleNamespace(perf_counter=time.thread_time)  # the stages' clock: this thread's CPU
    limit_blas = getattr(R, "_limit_blas", None)
    if limit_blas is not None:  # one BLAS thread, as a labelling run's processes have (both sides alike)
        limit_blas()
    explainers = EXPLAINERS
    if args.fast:  # as `neurolabel label --fast` sets them (the dict of this side's own code)
        from neurolabel.explainers.concept_induction import FAST

        explainers = ({"kind": "concept_induction", **FAST}, "pmi")
    plugins = R.build_plugins(RunSpec(model="default", explainers=explainers))
    settle_gc = getattr(R, "_settle_gc", None)
    if settle_gc is not None:  # the garbage collector as the side's run sets it once its plugins are built
        settle_gc()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/stage-cpu.db"
        upgrade(url)
        with session_scope(url) as session:
            save_neuron_records(session=session, records=records)
        model = records[0].model
        loaded_same = 0
        outputs = []
        passes = []
        for p in range(1 + args.repeat):  # pass 0 warms the memos and annotation cache
            tot = R.StageTimes()
            outs = []
            for rec in records:
                t0 = time.thread_time()
                got = R.load(rec.neuron, model=model, database_url=url)
                tot.load_s += time.thread_time() - t0
                if p == 0:
                    loaded_same += got == rec
                res = R.explain_and_score_one(got, list(EXPLAINERS), plugins)
                tot.add(res.times)
                outs.append((res.explanations, res.errors))
            if p == 0:
                outputs = outs
            else:
                passes.append({"load": tot.load_s, **{f"explain {k}": v for k, v in tot.explain_s.items()},
                               **{f"score {k}": v for k, v in tot.score_s.items()}})
            _forget_neurons(R)
    with args.side_out.open("wb") as f:
        pickle.dump({"where": neurolabel.__file__, "outputs": outputs, "passes": passes, "n": len(records),
                     "loaded_same": loaded_same}, f)


def _forget_neurons(R) -> None:
    """Clear the memos whose entries belong to one neuron (its held-out window set and its tokens'
    lexical kinds, its labels' parsed expressions, its true activations): a whole-model run meets each neuron once. Memos of
    windows, tokens and classes stay: there, each window recurs across many neurons."""
    import importlib

    for mod in ("neurolabel.scoring.symbolic_simulator", "neurolabel.scoring.scorers"):
        m = importlib.import_module(mod)
        for name in ("_closed", "_by_identity", "_parsed", "_parsed_by_identity", "_truths", "_kinds",
                     "_kinds_by_identity", "_covered"):
            memo = getattr(m, name, None)
            if isinstance(memo, dict):
                memo.clear()
    from neurolabel.pipeline import plugins

    for obj in list(plugins._built.values()):
        if isinstance(getattr(obj, "_parsed", None), dict):
            obj._parsed.clear()


def _diff(a, b, path: str = "") -> str | None:
    """Where ``a`` and ``b`` differ (floats to 1e-9), or ``None``."""
    if isinstance(a, float) and isinstance(b, float):
        return None if (a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9) else f"{path}: {a!r} != {b!r}"
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return f"{path}: keys {sorted(set(a) ^ set(b))}"
        for k in a:
            d = _diff(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{path}: {len(a)} != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            d = _diff(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    if hasattr(a, "__dataclass_fields__"):
        return _diff({f: getattr(a, f) for f in a.__dataclass_fields__},
                     {f: getattr(b, f) for f in b.__dataclass_fields__}, path)
    return None if a == b else f"{path}: {a!r} != {b!r}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="main", help="git revision compared against (default: main)")
    ap.add_argument("--cache", type=Path, default=None, help="bench/quality.py's recording cache folder")
    ap.add_argument("--records", type=Path, default=None,
                    help="a pickled list of NeuronRecords (or a bench/quality.py cache file) instead")
    ap.add_argument("--every", type=int, default=1, help="every n-th neuron")
    ap.add_argument("--repeat", type=int, default=1, help="timed passes per side and round (after a warm-up pass)")
    ap.add_argument("--rounds", type=int, default=1, help="baseline/current alternations")
    ap.add_argument("--fast", action="store_true",
                    help="concept_induction with `neurolabel label --fast`'s parameters (no alternatives, no class search)")
    ap.add_argument("--side-in", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--side-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side_in is not None:
        _side(args)
        return
    if __package__ in (None, ""):
        sys.path.insert(0, str(ROOT))
    records = _records(args)[:: args.every]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with (tmp / "records.pkl").open("wb") as f:
            pickle.dump(records, f)
        trees = {f"baseline {args.baseline}": _tree(args.baseline, tmp / "base"), "this checkout": ROOT}
        got: dict[str, list[dict]] = {k: [] for k in trees}
        for r in range(args.rounds):
            for name, tree in trees.items():
                env = dict(os.environ, PYTHONPATH=str(tree) if tree != ROOT else os.environ.get("PYTHONPATH", ""))
                out = tmp / f"side-{len(got[name])}-{name.split()[0]}.pkl"
                subprocess.run([sys.executable, __file__, "--side-in", str(tmp / "records.pkl"), "--side-out", str(out),
                                "--repeat", str(args.repeat), *(["--fast"] if args.fast else [])], check=True, env=env,
                               cwd=str(ROOT))
                with out.open("rb") as f:
                    got[name].append(pickle.load(f))
    base, now = (got[k] for k in trees)
    n = len(records)
    print(f"# bench/stage_cpu.py{' --fast' if args.fast else ''}: {n} real neurons, {args.rounds} round(s) x {args.repeat} timed pass(es) per side, "
          f"CPU ms per neuron (thread time)")
    for name, sides in got.items():
        print(f"#   {name}: neurolabel from {sides[0]['where']}")
    stages = list(dict.fromkeys(k for s in base + now for p in s["passes"] for k in p))
    print(f"{'stage':<28} {'baseline':>9} {'this':>9} {'base/this':>9}")
    tot_b = tot_n = 0.0
    for st in stages:
        b = sum(p.get(st, 0.0) for s in base for p in s["passes"]) / (n * sum(len(s["passes"]) for s in base))
        c = sum(p.get(st, 0.0) for s in now for p in s["passes"]) / (n * sum(len(s["passes"]) for s in now))
        tot_b, tot_n = tot_b + b, tot_n + c
        print(f"{st:<28} {1000 * b:9.2f} {1000 * c:9.2f} {b / c if c else float('inf'):8.2f}x")
    print(f"{'load + explain + score':<28} {1000 * tot_b:9.2f} {1000 * tot_n:9.2f} {tot_b / tot_n:8.2f}x")
    diffs = []
    for i in range(n):
        d = _diff(base[0]["outputs"][i], now[0]["outputs"][i], f"neuron {records[i].neuron}")
        if d:
            diffs.append(d)
    n_expl = sum(len(o[0]) for o in now[0]["outputs"])
    print(f"same outputs: {n - len(diffs)} of {n} neurons ({n_expl} scored explanations; floats to 1e-9); "
          f"loaded records equal to the stored: baseline {base[0]['loaded_same']}, this {now[0]['loaded_same']} of {n}")
    for d in diffs[:10]:
        print("  differs:", d)


if __name__ == "__main__":
    main()
