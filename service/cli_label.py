"""CLI commands ``neurolabel label`` (the whole pipeline on chosen neurons) and
``neurolabel demo`` (the pipeline on a small slice of the default model, printed)."""

from __future__ import annotations

import time
from typing import Any

import typer

from neurolabel.core.errors import ConfigError

DEMO_LAYER = 10
DEMO_CANDIDATES = 64
"""The demo picks its neurons among units ``0..DEMO_CANDIDATES-1`` of :data:`DEMO_LAYER`."""
DEMO_PICK = 3
DEMO_PICK_TOKENS = 8192
"""Corpus tokens of the statistics pass that picks the demo's neurons."""


def pick_demo_units(*, layer: int = DEMO_LAYER, candidates: int = DEMO_CANDIDATES, n: int = DEMO_PICK,
                    max_tokens: int = DEMO_PICK_TOKENS) -> list[tuple[int, float]]:
    """The ``n`` units of ``layer`` (among the first ``candidates``) whose peak stands furthest above
    their usual activation, ``(max - mean) / std`` over ``max_tokens`` tokens of the default corpus,
    as ``(unit, peak z)``, highest first. Such selective units are the ones a reader wants explained; the
    choice reads the activations only, never a label or a score (arbitrary units score lower: see
    ``bench/quality.py``)."""
    from neurolabel.activations.models import load_target
    from neurolabel.activations.record import record_activations

    recording = record_activations(load_target("default"), "default", layers=[layer], units=list(range(candidates)),
                                   max_tokens=max_tokens, top_k=1, n_random=0, window_tokens=64, progress=False)
    peaks = [(r.neuron.index, (r.stats.max - r.stats.mean) / r.stats.std)
             for r in recording.records() if r.stats is not None and r.stats.std > 0]
    peaks.sort(key=lambda p: (-p[1], p[0]))
    return peaks[:n]


def _parse_simulators(text: str | None) -> dict[str, str] | str | None:
    """``"embedding"`` (all explainers) or ``"concept_induction=symbolic,pmi=embedding"``."""
    if not text:
        return None
    if "=" not in text:
        return text.strip()
    out = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ConfigError(f"--simulators: {part!r} is not explainer=simulator")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _tags(text: str) -> list[str]:
    tags = [t.strip() for t in text.split(",") if t.strip()]
    if not tags:
        raise ConfigError("--explainers: no explainer given")
    return tags


def _fmt(score: Any) -> str:
    return "undefined" if score is None else f"{score:+.3f}"


def print_labels(url: str, model: str, neurons) -> None:
    """Per neuron, each explainer's best label with its score (and the accepted label)."""
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.queries import get_neuron

    with session_scope(url) as session:
        for n in neurons:
            info = get_neuron(session=session, model=model, layer=n.layer, index=n.index)
            typer.echo(f"\nneuron {model} {n.layer}:{n.index}")
            if info is None or not info["explanations"]:
                typer.echo("  (no explanations)")
                continue
            seen = set()
            for e in info["explanations"]:
                if e["explainer"] in seen:
                    continue
                seen.add(e["explainer"])
                sim = e["scores"][0]["simulator"] if e["scores"] else "-"
                mark = "accepted" if e["accepted"] else "rejected"
                typer.echo(f"  {e['explainer']:<18} {_fmt(e['score']):>9}  ({sim}, {mark})  {e['text']}")
            best = info["best_label"]
            typer.echo(f"  => label: {best['text']!r} ({best['explainer']})" if best else "  => no accepted label")


def parse_params(items: list[str] | None, tags: list[str]) -> dict[str, dict[str, Any]]:
    """``["pmi.lam=0.8", "llm_summary.n=1"]`` -> ``{"pmi": {"lam": 0.8}, "llm_summary": {"n": 1}}``
    (values read as JSON where they parse, else as text); the tag must be one of ``tags``."""
    import json

    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        tag, dot, name = key.strip().partition(".")
        if not sep or not dot or not tag or not name:
            raise ConfigError(f"--set {item!r}: write PLUGIN.PARAMETER=VALUE, e.g. pmi.lam=0.8")
        if tag not in tags:
            raise ConfigError(f"--set {item!r}: {tag!r} is not one of the chosen plugins ({', '.join(tags)})")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        out.setdefault(tag, {})[name] = parsed
    return out


def build_spec(*, model: str, layers: list[int], units: list[int] | None, explainers: list[str], simulators: Any,
               corpus: str, options: dict, params: list[str] | None = None, ontology: str = "default",
               concurrency: int | None = None, retry_failed: bool = False, db: str | None = None,
               ray_address: str | None = None, processes: int | str | None = None, embed: str | None = None,
               fast: bool = False) -> Any:
    """The run spec of ``neurolabel label``'s options (the CLI's one conversion into a run). The
    ontology may be ``default``, a name registered with ``neurolabel ontologies add`` or a file.
    ``processes="auto"``: worker processes where they pay (:func:`pipeline.run.auto_processes`).
    ``fast``: concept induction with :data:`explainers.concept_induction.FAST`'s parameters (its first
    graded search alone) where ``params`` does not set them."""
    from neurolabel.pipeline.spec import RunSpec

    if isinstance(simulators, str):
        simulators = {"*": simulators}
    sims = dict(simulators or {})
    by_tag = parse_params(params, list(dict.fromkeys(explainers + [v for v in sims.values()])))
    if fast:
        if "concept_induction" not in explainers:
            raise ConfigError("--fast: it sets concept_induction's searches, which is not among the explainers "
                              f"({', '.join(explainers)})")
        from neurolabel.explainers.concept_induction import FAST

        by_tag["concept_induction"] = {**FAST, **by_tag.get("concept_induction", {})}
    for e, sim in list(sims.items()):
        sims[e] = {"kind": sim, **by_tag.get(sim, {})}
    spec = {"model": model, "layers": layers, "units": units, "corpus": corpus, "record": options,
            "explainers": [{"kind": e, **by_tag.get(e, {})} for e in explainers], "simulators": sims,
            "ontology": _ontology_path(ontology, db), "retry_failed": retry_failed, "ray_address": ray_address}
    if concurrency is not None:
        spec["concurrency"] = concurrency
    auto = processes == "auto"
    if processes is not None and not auto:
        spec["processes"] = parse_processes(processes)
    if embed is not None:
        spec["embed"] = embed
    run_spec = RunSpec.parse(spec, where="neurolabel label")
    if auto:
        from neurolabel.pipeline.run import auto_processes

        n, _ = auto_processes(run_spec, neurons=len(layers) * len(units) if units is not None else None)
        run_spec = RunSpec.parse({**run_spec.as_json(), "processes": n}, where="neurolabel label")
    return run_spec


def parse_processes(value: int | str) -> int:
    """``--processes``: a number of worker processes, 1 to 64 (``auto`` is resolved by
    :func:`build_spec`); :class:`ConfigError` otherwise."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--processes {value!r}: write auto or a number from 1 to 64") from None
    if not 1 <= n <= 64:
        raise ConfigError(f"--processes {value!r}: write auto or a number from 1 to 64")
    return n


def _ontology_path(name: str, db: str | None) -> str:
    """A registered ontology's path, else ``name`` itself (``default`` or a file)."""
    if name == "default":
        return name
    from neurolabel.service.sources import is_plain_name

    if is_plain_name(name):
        from neurolabel.storage.db import session_scope, upgrade
        from neurolabel.storage.sources import source_path

        upgrade(db)
        with session_scope(db) as s:
            path = source_path(session=s, kind="ontology", name=name)
        if path is not None:
            return path
    from pathlib import Path

    if not Path(name).expanduser().is_file():
        raise ConfigError(f"--ontology {name!r}: neither a registered ontology (neurolabel ontologies list) "
                          "nor an ontology file")
    return str(Path(name).expanduser().resolve())


def _run(spec: Any, db: str | None, progress: bool, show: bool) -> None:
    from neurolabel.pipeline.run import run
    from neurolabel.storage.db import normalize_url

    url = normalize_url(db)
    t0 = time.perf_counter()
    summary = run(spec, database_url=url, progress=progress)
    typer.echo(
        f"{summary.model}: {summary.neurons} neurons ({summary.recorded} recorded, {summary.processed} explained, "
        f"{summary.skipped} already done); {summary.explanations} explanations stored, {summary.accepted} accepted; "
        + (f"{summary.failed_before} earlier explainer failures not retried (--retry-failed); "
           if summary.failed_before else "")
        + f"simulators {', '.join(f'{k}->{v}' for k, v in summary.simulators.items())}; "
        + (f"{spec.processes} worker processes; " if spec.processes > 1 and not spec.ray_address else "")
        + f"{time.perf_counter() - t0:.1f} s -> {url}"
    )
    for err in summary.errors[:10]:
        typer.echo(f"  note: {err}", err=True)
    if show:
        from neurolabel.core.types import NeuronId

        neurons = [NeuronId(l, u) for l in spec.layers for u in (spec.units or [])]
        print_labels(url, summary.model, neurons)


def label(
    model: str = typer.Option("default", "--model", help="'default' (SmolLM2-135M) or a local HF model folder."),
    layers: str = typer.Option(..., "--layers", help="Layers: 10 or 0,10,29 or 0-29."),
    units: str = typer.Option("all", "--units", help="Units of each layer: all, 0-49, 3,7…"),
    explainers: str = typer.Option("tokens,token_tiers,concept_induction,pmi,llm_summary", "--explainers",
                                   help="Explainer tags, comma separated."),
    simulators: str = typer.Option(None, "--simulators",
                                   help="One simulator tag for all, or explainer=simulator,… (default per explainer)."),
    corpus: str = typer.Option("default", "--corpus", help="Corpus to record missing neurons on."),
    max_tokens: int = typer.Option(100_000, "--max-tokens", help="Tokens streamed when recording."),
    top_k: int = typer.Option(20, "--top-k", help="Top windows kept per unit and split when recording."),
    n_random: int = typer.Option(40, "--n-random", help="Random windows kept per unit when recording."),
    db: str = typer.Option(None, "--db", help="Database URL (default: NEUROLABEL_DATABASE_URL)."),
    show: bool = typer.Option(False, "--show", help="Print each neuron's labels afterwards."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    retry_failed: bool = typer.Option(False, "--retry-failed",
                                      help="Retry neurons an explainer version failed to explain before."),
    params: list[str] = typer.Option(None, "--set",
                                     help="A plugin parameter, PLUGIN.PARAMETER=VALUE (repeatable): pmi.lam=0.8."),
    ontology: str = typer.Option("default", "--ontology",
                                 help="Ontology of the explainers and the symbolic simulator: default (WordNet), "
                                      "a registered name (neurolabel ontologies add) or an OWL/RDF/Turtle file."),
    concurrency: int = typer.Option(None, "--concurrency", min=1, max=256,
                                    help="Neurons explained and scored at once (LLM requests in flight; default 8)."),
    processes: str = typer.Option("auto", "--processes",
                                  help="Worker processes that load, explain and score: auto (default: the "
                                       "cores this process may use, at most 8, when every explainer and simulator is "
                                       "symbolic Python and there are at least 4 neurons per process; else 1), "
                                       "or a number (1: threads of this process)."),
    embed: str = typer.Option("best", "--embed",
                              help="Labels given a vector for semantic search: best (per neuron and explainer its "
                                   "best-scored candidate), accepted (the top-ranked and best-scored candidate and "
                                   "every accepted one), all, or none "
                                   "(`neurolabel db reindex` embeds the best ones later). All are stored and "
                                   "found by full-text search."),
    fast: bool = typer.Option(False, "--fast",
                              help="Concept induction runs its first graded search alone (no further graded "
                                   "searches, no class search): one candidate per neuron, ~half the CPU of a "
                                   "symbolic run, fewer neurons labelled (README: whole-model runs)."),
    ray: str = typer.Option(None, "--ray", metavar="ADDRESS",
                            help="Run on a Ray cluster: auto, HOST:PORT of its head, ray://HOST:10001, or local "
                                 "(default: NEUROLABEL_RAY_ADDRESS; unset = this process). Needs the ray extra."),
) -> None:
    """Record (when missing), explain, score and store labels of the chosen neurons; resumable."""
    from neurolabel.core.settings import get_settings
    from neurolabel.service.cli_record import parse_int_list

    layer_list = parse_int_list(layers, what="layers")
    if layer_list is None:
        from neurolabel.activations.models import load_target

        layer_list = list(range(load_target(model).n_layers))
    spec = build_spec(model=model, layers=layer_list, units=parse_int_list(units, what="units"),
                      explainers=_tags(explainers), simulators=_parse_simulators(simulators), corpus=corpus,
                      options={"max_tokens": max_tokens, "top_k": top_k, "n_random": n_random}, params=params,
                      ontology=ontology, concurrency=concurrency, retry_failed=retry_failed, db=db,
                      ray_address=ray or get_settings().ray_address, processes=processes, embed=embed,
                      fast=fast)
    if spec.ray_address:
        from neurolabel.pipeline.distributed import require_ray

        require_ray()  # before any model loads: say how to install it
    _run(spec, db, progress, show)


def demo(
    db: str = typer.Option("sqlite:///neurolabel-demo.db", "--db", help="Database URL for the demo."),
    explainers: str = typer.Option("", "--explainers", help="Explainer tags (default: every installed one)."),
    units: str = typer.Option("", "--units", help=f"Units of layer {DEMO_LAYER} to label, e.g. 0-2 (default: the "
                              f"{DEMO_PICK} most selective of units 0-{DEMO_CANDIDATES - 1}, by peak z-score)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Label a few neurons of layer 10 of the default model and print each explainer's label and score."""
    from neurolabel.core.registry import EXPLAINERS
    from neurolabel.service.cli_record import parse_int_list
    from neurolabel.pipeline.run import DEMO_RECORD_OPTIONS

    tags = _tags(explainers) if explainers else [
        t for t in ("tokens", "token_tiers", "concept_induction", "pmi", "llm_summary") if t in EXPLAINERS]
    if units:
        unit_list = parse_int_list(units, what="units")
    else:
        picked = pick_demo_units()
        unit_list = sorted(u for u, _ in picked)
        typer.echo(f"neurolabel demo: picked units {', '.join(str(u) for u in unit_list)} of layer {DEMO_LAYER}, the "
                   f"{DEMO_PICK} most selective of units 0-{DEMO_CANDIDATES - 1} (peak z-score (max - mean) / std over "
                   f"{DEMO_PICK_TOKENS} tokens: {', '.join(f'{u}: {z:.1f}' for u, z in picked)}; chosen from "
                   f"activations only, `--units 0-2` labels others)")
    typer.echo(f"neurolabel demo: SmolLM2-135M layer {DEMO_LAYER} units {','.join(map(str, unit_list))}, explainers "
               f"{', '.join(tags)}, {DEMO_RECORD_OPTIONS['max_tokens']} corpus tokens -> {db}")
    spec = build_spec(model="default", layers=[DEMO_LAYER], units=unit_list,
                      explainers=tags, simulators=None, corpus="default", options=dict(DEMO_RECORD_OPTIONS), db=db)
    _run(spec, db, progress, True)


def register(app: typer.Typer) -> None:
    """Add ``label`` and ``demo`` to the ``neurolabel`` CLI."""
    app.command("label")(label)
    app.command("demo")(demo)
