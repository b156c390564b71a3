"""CLI command ``neurolabel decode``: label every MLP neuron of chosen layers from the model's
weights alone (``explainers/output_tokens.py``) — nothing is recorded, no LLM is called — and
store the labels. Neurons that already have an accepted input-side label get the agreement of
the two stored as a score (scorer ``agreement``) of their output-side explanation."""

from __future__ import annotations

import logging
import time
from typing import Any

import typer

log = logging.getLogger(__name__)


def _agreements(session: Any, model: str, explanations: list, simulators: dict[str, Any]) -> list:
    """``explanations`` with an agreement ScoreResult where the neuron has an accepted input-side label."""
    from dataclasses import replace

    from neurolabel.core.errors import NeurolabelError
    from neurolabel.core.registry import SIMULATORS
    from neurolabel.core.types import Explanation
    from neurolabel.explainers.output_tokens import OutputTokensExplainer, agreement
    from neurolabel.storage.queries import best_label, list_neurons

    if not explanations:
        return explanations
    layer = explanations[0].neuron.layer
    labelled = {r["index"] for r in list_neurons(session=session, model=model, layer=layer, labelled=True,
                                                 limit=1_000_000)}
    out = []
    for e in explanations:
        label = best_label(session=session, model=model, layer=layer, index=e.neuron.index) \
            if e.neuron.index in labelled else None
        if label is None or label["explainer"] == OutputTokensExplainer.kind or not label["scores"]:
            out.append(e)
            continue
        tag = label["scores"][0]["simulator"]
        try:
            if tag not in simulators:
                factory = SIMULATORS[tag]
                make = getattr(factory, "from_defaults", None)
                simulators[tag] = make() if make is not None else factory()
            lab = Explanation(model=model, neuron=e.neuron, explainer=label["explainer"],
                              explainer_version=label["explainer_version"], text=label["text"],
                              structured=label["structured"])
            out.append(replace(e, score=agreement(e, lab, simulators[tag])))
        except NeurolabelError as exc:
            log.warning("%s: no agreement with %r: %s", e.neuron, label["text"], exc)
            out.append(e)
    return out


def decode(
    model: str = typer.Option("default", "--model", help="'default' (SmolLM2-135M) or a local HF model folder."),
    layers: str = typer.Option("all", "--layers", help="Layers: 0,10,29 or 0-29 or all."),
    units: str = typer.Option("all", "--units", help="Units of each layer: all, 0-49, 3,7…"),
    top_k: int = typer.Option(10, "--top-k", help="Promoted and suppressed tokens kept per neuron."),
    db: str = typer.Option(None, "--db", help="Database URL (default: NEUROLABEL_DATABASE_URL)."),
    no_db: bool = typer.Option(False, "--no-db", help="Print only; store nothing."),
    show: int = typer.Option(5, "--show", help="Print the labels of this many neurons per layer."),
    device: str = typer.Option("cpu", "--device", help="Torch device: cpu, cuda, auto…"),
) -> None:
    """Label every neuron of the chosen layers by the tokens its output promotes and suppresses."""
    from neurolabel.activations.models import check_layers, check_units, load_target
    from neurolabel.core.errors import ConfigError
    from neurolabel.explainers.output_tokens import OutputTokensExplainer
    from neurolabel.service.cli_record import parse_int_list

    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    layer_list = parse_int_list(layers, what="layers")
    unit_list = parse_int_list(units, what="units")
    target = load_target(model, device=device)
    layer_list = check_layers(target, layer_list if layer_list is not None else range(target.n_layers))
    check_units(target, unit_list)
    explainer = OutputTokensExplainer(target, top_k=top_k)
    url = None
    if not no_db:
        from neurolabel.storage.db import normalize_url, session_scope, upgrade
        from neurolabel.storage.queries import save_explanations, upsert_model

        url = normalize_url(db)
        upgrade(url)
        with session_scope(url) as session:
            upsert_model(session=session, name=target.name, architecture=target.architecture,
                         source=target.source, unit_map=target.unit_map, n_layers=target.n_layers,
                         n_units=target.n_units)
    t0 = time.perf_counter()
    n = n_agree = top_inside = 0
    decode_s = 0.0
    simulators: dict[str, Any] = {}
    for layer in layer_list:
        t1 = time.perf_counter()
        expls = explainer.explain_layer(layer, unit_list)
        decode_s += time.perf_counter() - t1
        if url is not None:
            with session_scope(url) as session:
                expls = _agreements(session, target.name, expls, simulators)
                save_explanations(session=session, explanations=expls)
        agreed = [e for e in expls if e.score is not None]
        n_agree += len(agreed)
        top_inside += sum(int(e.score.parts["top_token_inside"]) for e in agreed)
        n += len(expls)
        for e in expls[:max(0, show)]:
            typer.echo(f"{target.name} {e.neuron}  {e.text}")
    msg = (f"decoded {n} neurons of {target.name} (layers {','.join(map(str, layer_list))}) in {decode_s:.1f} s "
           f"of decoding, {time.perf_counter() - t0:.1f} s in all")
    if url is not None:
        msg += f" -> database {url}"
        if n_agree:
            msg += (f"; {n_agree} have an accepted input-side label, whose class/words hold the top promoted "
                    f"token in {top_inside} ({100 * top_inside / n_agree:.0f}%)")
    typer.echo(msg)


def register(app: typer.Typer) -> None:
    """Add the ``decode`` command to the ``neurolabel`` app."""
    app.command("decode")(decode)
