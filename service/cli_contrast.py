"""CLI commands ``neurolabel contrast`` (which neurons separate two sets of texts; a stored
study, a ranked table, optionally labelled) and ``neurolabel intervene`` (ablate, clamp or
scale one neuron and compare the model's predictions; causal scores of its stored labels)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import typer

from neurolabel.core.errors import ConfigError

EXAMPLES = ("harmful_vs_harmless", "languages", "clinical")
"""The bundled example sets (``pipeline/examples/<name>/{a,b}.txt``)."""


def example_paths(name: str) -> tuple[str, str]:
    """The files of bundled example set ``name`` (ConfigError naming the known ones)."""
    if name not in EXAMPLES:
        raise ConfigError(f"--example {name!r} is not a bundled example set; known: {', '.join(EXAMPLES)}")
    root = resources.files("neurolabel.pipeline").joinpath("examples", name)
    return str(root.joinpath("a.txt")), str(root.joinpath("b.txt"))


def parse_neuron(text: str) -> Any:
    """``"12:345"`` → ``NeuronId(12, 345)`` (ConfigError otherwise)."""
    from neurolabel.core.types import NeuronId

    try:
        layer, index = text.split(":")
        return NeuronId(int(layer), int(index))
    except ValueError:
        raise ConfigError(f"--neuron {text!r}: write LAYER:INDEX, e.g. 12:345") from None


def _fmt(x: float | None, spec: str = "+.2f") -> str:
    return "–" if x is None else format(x, spec)


def _label_cell(label: dict[str, Any] | None, *, width: int) -> str:
    """A neuron's best label as a table cell: its explainer and held-out score, then its text
    cut to ``width`` characters (``…`` marks the cut; the API and the study page have it whole)."""
    if not label:
        return ""
    score = "–" if label.get("score") is None else f"{label['score']:.2f}"
    text = " ".join(label["text"].split())
    if width > 0 and len(text) > width:
        text = text[: max(width - 1, 1)].rstrip() + "…"
    return f"[{label['explainer']} {score}] {text}"


def print_study(study: dict[str, Any], *, top: int, label_width: int = 100) -> None:
    """The ranked table of a stored study (``storage.studies.get_study``); labels are cut to
    ``label_width`` characters (0 = whole)."""
    a, b = study["set_a"], study["set_b"]
    typer.echo(f"study {study['id']} {study['name']!r} on {study['model']}: A = {a['name']} ({a['n_examples']} examples), "
               f"B = {b['name']} ({b['n_examples']} examples); {study['n_tested']} neurons tested, "
               f"{study['n_kept']} kept (score {study['score']}, {study['test']}, BH-corrected)")
    typer.echo(f"{'rank':>4} {'neuron':>9} {'AUROC':>6} {'d':>6} {'q':>9} {'mean A':>8} {'mean B':>8} {'causal':>7}  label")
    for n in study["neurons"][:top]:
        label = _label_cell(n["label"], width=label_width)
        typer.echo(f"{n['rank']:>4} {str(n['layer']) + ':' + str(n['index']):>9} {n['auroc']:>6.3f} {_fmt(n['smd']):>6} "
                   f"{n['q_value']:>9.2e} {n['mean_a']:>8.3f} {n['mean_b']:>8.3f} {_fmt(n['causal_score'], '+.3f'):>7}  "
                   f"{label}")


def contrast(
    a: str = typer.Option(None, "--a", help="Set A: a .txt (one example a line), .jsonl file or a folder."),
    b: str = typer.Option(None, "--b", help="Set B: same forms as --a."),
    example: str = typer.Option(None, "--example", help=f"A bundled pair of sets instead: {', '.join(EXAMPLES)}."),
    model: str = typer.Option("default", "--model", help="'default' (SmolLM2-135M) or a local HF model folder."),
    layers: str = typer.Option("all", "--layers", help="Layers tested: all, 0-29, 3,7…"),
    name: str = typer.Option("contrast", "--name", help="Name of the stored study."),
    score: str = typer.Option("max", "--score", help="Per-example score: max or mean over its tokens."),
    test: str = typer.Option("mannwhitney", "--test", help="mannwhitney or permutation."),
    alpha: float = typer.Option(0.05, "--alpha", help="Largest Benjamini–Hochberg q-value kept."),
    min_effect: float = typer.Option(0.1, "--min-effect", help="Smallest |AUROC - 0.5| kept."),
    keep: int = typer.Option(500, "--keep", help="Most neurons stored."),
    reservoir: int = typer.Option(256, "--reservoir", help="Examples per side the rank statistics use."),
    max_example_tokens: int = typer.Option(64, "--max-example-tokens", help="Tokens of an example kept."),
    batch_size: int = typer.Option(16, "--batch-size", help="Examples per forward pass."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text in JSONL files."),
    label: int = typer.Option(0, "--label", help="Label the top N neurons right away."),
    explainers: str = typer.Option("pmi", "--explainers", help="Explainers used by --label, comma separated."),
    causal: bool = typer.Option(False, "--causal", help="Also score the new labels by intervention (needs --label)."),
    order: str = typer.Option("rank", "--order", help="Table order: rank, auroc, smd, q or causal."),
    top: int = typer.Option(20, "--top", help="Rows printed."),
    label_width: int = typer.Option(100, "--label-width", help="Characters of each label printed (0 = whole)."),
    db: str = typer.Option(None, "--db", help="Database URL (default: NEUROLABEL_DATABASE_URL)."),
) -> None:
    """Find the neurons whose activations separate set A from set B; store the study and print the ranking."""
    from neurolabel.activations.corpus import load_corpus
    from neurolabel.pipeline.contrast import ContrastSpec
    from neurolabel.pipeline.studies import run_contrast_study
    from neurolabel.service.cli_record import parse_int_list
    from neurolabel.storage.db import normalize_url, session_scope
    from neurolabel.storage.studies import get_study

    if example:
        if a or b:
            raise ConfigError("give either --example or --a and --b, not both")
        a, b = example_paths(example)
    if not a or not b:
        raise ConfigError("both sets are needed: --a A.txt --b B.txt (or --example NAME)")
    tags = tuple(t.strip() for t in explainers.split(",") if t.strip())
    layer_list = parse_int_list(layers, what="layers")
    spec = ContrastSpec(model=model, layers=tuple(layer_list) if layer_list is not None else None, name=name,
                        score=score, test=test, alpha=alpha, min_effect=min_effect, keep=keep, reservoir=reservoir,
                        max_example_tokens=max_example_tokens, batch_size=batch_size, label=label,
                        explainers=tags)  # type: ignore[arg-type]
    spec.check()
    set_a, set_b = load_corpus(a, text_field=text_field), load_corpus(b, text_field=text_field)
    url = normalize_url(db)
    run = run_contrast_study(spec, set_a, set_b, database_url=url, names=(set_a.name, set_b.name), causal=causal)
    with session_scope(url) as session:
        study = get_study(session=session, study_id=run.study_id, order=order, limit=top)  # type: ignore[arg-type]
    print_study(study, top=top, label_width=label_width)
    typer.echo(f"stored as study {run.study_id} in {url}; "
               + ", ".join(f"{k} {v:.1f} s" for k, v in run.seconds.items()))


def intervene(
    neuron: str = typer.Option(..., "--neuron", help="The unit, LAYER:INDEX."),
    ablate: bool = typer.Option(False, "--ablate", help="Set the unit to 0."),
    clamp: float = typer.Option(None, "--clamp", help="Set the unit to VALUE."),
    scale: float = typer.Option(None, "--scale", help="Multiply the unit by K."),
    prompts: str = typer.Option(None, "--prompts", help="Prompts, one a line (default: the bundled neutral prompts)."),
    model: str = typer.Option("default", "--model", help="'default' (SmolLM2-135M) or a local HF model folder."),
    where: str = typer.Option("all", "--where", help="all positions, or only 'active' ones (unit > --threshold)."),
    threshold: float = typer.Option(0.0, "--threshold", help="Activation above which the unit fires (--where active)."),
    tokens: int = typer.Option(12, "--tokens", help="Tokens generated greedily per prompt."),
    top: int = typer.Option(5, "--top", help="Moved tokens shown per prompt."),
    score_labels: bool = typer.Option(False, "--score-labels",
                                      help="Also score the neuron's stored labels causally and store the scores."),
    db: str = typer.Option(None, "--db", help="Database URL for --score-labels."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Run prompts with and without an intervention on one neuron and compare the predictions."""
    from dataclasses import asdict

    from neurolabel.activations.corpus import load_corpus
    from neurolabel.pipeline.causal import default_prompts
    from neurolabel.pipeline.intervene import Intervention, compare, load_lm

    chosen = [m for m, on in (("ablate", ablate), ("clamp", clamp is not None), ("scale", scale is not None)) if on]
    if len(chosen) != 1:
        raise ConfigError("choose exactly one of --ablate, --clamp VALUE, --scale K")
    mode = chosen[0]
    value = {"ablate": 0.0, "clamp": clamp, "scale": scale}[mode]
    n = parse_neuron(neuron)
    texts = list(load_corpus(prompts)) if prompts else default_prompts()
    iv = Intervention(neuron=n, mode=mode, value=float(value), where=where, threshold=threshold)  # type: ignore[arg-type]
    lm = load_lm(model)
    effects = compare(lm, texts, iv, top=top, generate_tokens=tokens)
    stored = None
    if score_labels:
        from neurolabel.pipeline.studies import causal_scores_for
        from neurolabel.storage.db import normalize_url

        stored = causal_scores_for(lm, database_url=normalize_url(db), model=lm.target.name, neurons=[n])
    if as_json:
        typer.echo(json.dumps({"intervention": iv.describe(), "effects": [asdict(e) for e in effects],
                               "causal_scores_stored": stored}, indent=1))
        return
    typer.echo(f"{lm.target.name}: {iv.describe()} on {len(texts)} prompt(s)")
    for e in effects:
        moved = ", ".join(f"{t!r} {p0:.3f}->{p1:.3f}" for t, p0, p1 in e.moved)
        typer.echo(f"\n{e.prompt!r}  KL {e.kl:.4f} nats, unit max {e.unit_max:.3f}\n  moved: {moved}\n"
                   f"  before: {e.before!r}\n  after:  {e.after!r}")
    if stored is not None:
        typer.echo(f"\n{stored} causal score(s) stored for the labels of {n}")


def register(app: typer.Typer) -> None:
    """Add ``contrast`` and ``intervene`` to the ``neurolabel`` CLI."""
    app.command("contrast")(contrast)
    app.command("intervene")(intervene)
