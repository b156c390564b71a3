"""CLI command ``neurolabel record``: record the MLP units of a model over a corpus and store
the records in the label database (and, with ``--out``, as OpenAI-format JSONL)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

import typer

from neurolabel.core.errors import ConfigError

log = logging.getLogger(__name__)


def parse_int_list(text: str, *, what: str, upper: int | None = None) -> list[int] | None:
    """``"0,10,29"``, ``"0-49"``, ``"0-4,8"`` → sorted ints; ``"all"`` → None (or ``range(upper)``)."""
    text = text.strip()
    if text.lower() == "all":
        return list(range(upper)) if upper is not None else None
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, part)
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                out.update(range(a, b + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise ConfigError(f"--{what}: cannot read {part!r} (use e.g. 0,10,29 or 0-49 or all)") from None
    if not out:
        raise ConfigError(f"--{what}: no value given")
    return sorted(out)


def record(
    model: str = typer.Option("default", "--model", help="'default' (SmolLM2-135M) or a local HF model folder."),
    layers: str = typer.Option("0,10,29", "--layers", help="Layers: 0,10,29 or 0-29 or all."),
    corpus: str = typer.Option("default", "--corpus", help="'default' (Shakespeare + WordNet glosses + the Python docs' prose), 'wordnet', 'shakespeare', 'python-docs', a .txt/.jsonl file or a folder."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text in JSONL corpora."),
    max_tokens: int = typer.Option(100_000, "--max-tokens", help="Tokens of the corpus to stream."),
    top_k: int = typer.Option(20, "--top-k", help="Top windows kept per unit and split."),
    n_random: int = typer.Option(40, "--n-random", help="Random windows kept per unit (both splits)."),
    units: str = typer.Option("all", "--units", help="Units of each layer: all, 0-49, 3,7…"),
    window_tokens: int = typer.Option(64, "--window-tokens", help="Tokens per window."),
    batch_size: int = typer.Option(32, "--batch-size", help="Windows per forward pass."),
    db: str = typer.Option(None, "--db", help="Database URL (default: NEUROLABEL_DATABASE_URL)."),
    no_db: bool = typer.Option(False, "--no-db", help="Do not write to the database (use with --out)."),
    out: Path = typer.Option(None, "--out", help="Also write the records as OpenAI-format JSONL here."),
    device: str = typer.Option("auto", "--device", help="Torch device: auto, cpu, cuda…"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Record what every MLP neuron of the chosen layers responds to and store it."""
    from neurolabel.activations.corpus import load_corpus
    from neurolabel.activations.models import check_layers, check_units, load_target
    from neurolabel.activations.openai_format import to_openai_json
    from neurolabel.activations.record import record_activations

    if no_db and out is None:
        raise ConfigError("--no-db without --out would write nothing")
    layer_list = parse_int_list(layers, what="layers")
    unit_list = parse_int_list(units, what="units")
    corp = load_corpus(corpus, text_field=text_field)  # corpus errors before the slow model load
    target = load_target(model, device=device)
    layer_list = check_layers(target, layer_list if layer_list is not None else range(target.n_layers))
    check_units(target, unit_list)
    url = None
    if not no_db:
        from neurolabel.storage.db import normalize_url

        url = normalize_url(db)
    t0 = time.perf_counter()
    recording = record_activations(
        target, corp, layers=layer_list, units=unit_list, max_tokens=max_tokens, top_k=top_k, n_random=n_random,
        window_tokens=window_tokens, batch_size=batch_size, progress=progress,
    )
    t_rec = time.perf_counter() - t0
    tmp = None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
        fh = os.fdopen(fd, "w", encoding="utf-8")
    n = 0
    try:
        if url is not None:
            from neurolabel.storage.db import session_scope, upgrade
            from neurolabel.storage.queries import save_neuron_records, upsert_model

            upgrade(url)
            with session_scope(url) as session:
                upsert_model(session=session, name=target.name, architecture=target.architecture,
                             source=target.source, unit_map=target.unit_map, n_layers=target.n_layers,
                             n_units=target.n_units)
        for layer in layer_list:
            recs = list(recording.records([layer]))
            if url is not None:
                with session_scope(url) as session:
                    save_neuron_records(session=session, records=recs)
            if tmp is not None:
                for r in recs:
                    fh.write(json.dumps(to_openai_json(r)) + "\n")
            n += len(recs)
        if tmp is not None:
            fh.close()
            os.replace(tmp, out)
            tmp = None
    finally:
        if tmp is not None:
            fh.close()
            os.unlink(tmp)
    where = [w for w in (url and f"database {url}", out and str(out)) if w]
    typer.echo(
        f"recorded {n} neurons of {target.name} (layers {','.join(map(str, layer_list))}) over "
        f"{recording.n_tokens} tokens of {corp.name} in {t_rec:.1f} s -> {' and '.join(where)}"
    )


def register(app: typer.Typer) -> None:
    """Add the ``record`` command to the ``neurolabel`` app."""
    app.command("record")(record)
