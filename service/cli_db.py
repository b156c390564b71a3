"""CLI commands of the label database: ``db upgrade|downgrade|current|reindex``, ``show``, ``search``,
``export`` and ``import``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

db_app = typer.Typer(help="Create and migrate the label database schema.", no_args_is_help=True)

_DB_OPTION = typer.Option(None, "--db", help="Database URL (default: NEUROLABEL_DATABASE_URL).")


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=_json_default))


def _fmt_score(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


@db_app.command("upgrade")
def db_upgrade(
    revision: str = typer.Argument("head", help="Target revision."),
    db: str = _DB_OPTION,
) -> None:
    """Bring an empty or older database to the newest schema (or REVISION)."""
    from neurolabel.storage.db import current_revision, normalize_url, upgrade

    url = normalize_url(db)
    upgrade(url, revision)
    typer.echo(f"database at revision {current_revision(url)}")


@db_app.command("downgrade")
def db_downgrade(
    revision: str = typer.Argument(..., help="Target revision ('base' drops every table)."),
    db: str = _DB_OPTION,
) -> None:
    """Take the schema back to REVISION."""
    from neurolabel.storage.db import current_revision, downgrade, normalize_url

    url = normalize_url(db)
    downgrade(url, revision)
    typer.echo(f"database at revision {current_revision(url) or 'base'}")


@db_app.command("current")
def db_current(db: str = _DB_OPTION) -> None:
    """Print the schema revision of the database and the newest one available."""
    from neurolabel.storage.db import current_revision, head_revision

    rev = current_revision(db)
    head = head_revision()
    state = "up to date" if rev == head else "needs `neurolabel db upgrade`"
    typer.echo(f"current: {rev or 'none (empty)'}   head: {head}   ({state})")


@db_app.command("reindex")
def db_reindex(
    full: bool = typer.Option(False, "--full", help="Rebuild the whole index from the database."),
    check: bool = typer.Option(False, "--check", help="Only compare the index with the database; "
                               "exit 1 when they differ."),
    embed: str = typer.Option("best", "--embed", help="Label vectors to compute first where missing (and, with "
                              "--check, the ones counted as missing): best (each explainer's best-scored label), "
                              "accepted (its top-ranked, best-scored and accepted ones), all, or none."),
    revector: bool = typer.Option(False, "--revector", help="First recompute every stored label vector from its "
                                  "label's search text (vectors stored before that rule came from the whole "
                                  "label), then rebuild the index."),
    db: str = _DB_OPTION,
) -> None:
    """Check or repair the label vector index of the database (semantic search); labels that
    should have a vector and lack one (e.g. written with `label --embed none`) get it first."""
    from neurolabel.storage.db import normalize_url, require_schema, session_scope
    from neurolabel.storage.label_index import check_index, reindex
    from neurolabel.storage.vector_index import index_location

    from neurolabel.storage.writes import check_embed_policy

    check_embed_policy(embed)
    if check and revector:
        raise typer.BadParameter("--check only compares; --revector rewrites vectors: give one of them")
    url = normalize_url(db)
    require_schema(url)
    folder = index_location(url)
    if folder is None:
        typer.echo("an in-memory database keeps no index on disk: nothing to do")
        return
    with session_scope(url) as session:
        if check:
            r = check_index(session=session, folder=folder, embed=embed)
        else:
            r = reindex(session=session, folder=folder, full=full, progress=True, embed=embed, revector=revector)
    if r.revectored:
        typer.echo(f"label vectors recomputed from their search texts: {r.revectored}")
    if r.embedded:
        typer.echo(f"label vectors computed: {r.embedded}")
    typer.echo(f"label index {r.folder}: {r.labels} label(s) with a vector in the database, {r.indexed} indexed, "
               f"{r.missing} missing, {r.stale} stale, {r.extra} deleted in the database, {r.dead} dead position(s), "
               f"{r.unembedded} label(s) the {'best' if embed == 'none' else embed} policy wants without a vector")
    if check:
        typer.echo("consistent" if r.consistent else "INCONSISTENT: run `neurolabel db reindex` to repair")
        raise typer.Exit(0 if r.consistent else 1)
    typer.echo(f"rebuilt: {r.labels} label(s)" if r.rebuilt else f"repaired: {r.repaired} record(s) appended")


def show(
    model: str = typer.Argument(..., help="Model name, e.g. smollm2-135m."),
    layer: int = typer.Argument(..., help="Layer."),
    unit: int = typer.Argument(..., help="Unit (neuron index) in the layer."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    examples: int = typer.Option(5, help="Top examples to print in the table view."),
    db: str = _DB_OPTION,
) -> None:
    """Show one neuron: statistics, top examples, explanations with scores, best label."""
    from neurolabel.core.errors import StorageError
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.db import require_schema
    from neurolabel.storage.queries import get_neuron

    require_schema(db)
    with session_scope(db) as session:
        data = get_neuron(session=session, model=model, layer=layer, index=unit)
    if data is None:
        raise StorageError(f"neuron {model} {layer}:{unit} is not in the database")
    if as_json:
        _print_json(data)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    best = data["best_label"]
    console.print(
        f"[bold]{model}[/bold] layer {layer} unit {unit} — best label: "
        + (f"[green]{best['text']}[/green] ({_fmt_score(best['score'])})" if best else "[dim]none accepted[/dim]")
    )
    if data["stats"]:
        s = data["stats"]
        console.print(
            f"stats: count {s['count']}  mean {s['mean']:.4g}  std {s['std']:.4g}  "
            f"max {s['max']:.4g}  min {s['min']:.4g}  active {s['frac_active']:.1%}"
        )
    t = Table(title="Explanations", show_lines=False)
    for col in ("explainer", "version", "rank", "score", "accepted", "text"):
        t.add_column(col)
    for e in data["explanations"]:
        t.add_row(e["explainer"], e["explainer_version"], str(e["rank"]), _fmt_score(e["score"]),
                  "yes" if e["accepted"] else "", e["text"])
    console.print(t)
    for f in data.get("failures", []):
        console.print(f"[yellow]failed[/yellow] {f['explainer']} v{f['explainer_version']} "
                      f"({f['attempts']} attempt(s)): {f['error']}", markup=True, highlight=False)
    tops = [e for e in data["examples"] if e["kind"] == "top"][:examples]
    if tops:
        t = Table(title="Top examples")
        t.add_column("max", justify="right")
        t.add_column("split")
        t.add_column("text (most active token highlighted)")
        for ex in tops:
            text = Text()
            peak = max(range(len(ex["activations"])), key=ex["activations"].__getitem__, default=-1)
            for i, tok in enumerate(ex["tokens"]):
                text.append(tok, style="bold red" if i == peak else None)
            t.add_row(f"{ex['max_activation']:.3g}", ex["split"], text)
        console.print(t)


def search(
    query: str = typer.Argument(..., help="Words to look for in labels."),
    model: str = typer.Option(None, help="Only labels of this model."),
    min_score: float = typer.Option(None, "--min-score", help="Only labels scoring at least this."),
    semantic: bool = typer.Option(False, "--semantic", help="Rank by meaning (MiniLM) instead of words."),
    limit: int = typer.Option(20, help="Results per page."),
    offset: int = typer.Option(0, help="Results to skip."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    db: str = _DB_OPTION,
) -> None:
    """Search neuron labels by full text (default) or by meaning (--semantic)."""
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.db import require_schema
    from neurolabel.storage.queries import search_labels

    require_schema(db)
    mode = "semantic" if semantic else "text"
    with session_scope(db) as session:
        rows = search_labels(session=session, query=query, mode=mode, model=model, min_score=min_score,
                             limit=limit, offset=offset)
    if as_json:
        _print_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{len(rows)} label(s) for {query!r} ({mode})")
    for col in ("model", "layer", "unit", "score", "ok", "explainer", "label", "relevance"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["model"], str(r["layer"]), str(r["index"]), _fmt_score(r["score"]),
                  "yes" if r["accepted"] else "", r["explainer"], r["text"], f"{r['relevance']:.3g}")
    Console().print(t)


def export(
    format: str = typer.Option("neurolabel", "--format", "-f",
                               help="neurolabel (full, re-importable) | openai | neuronpedia | csv."),
    out: Path = typer.Option(None, "--out", "-o", help="Output file (default: standard output)."),
    model: str = typer.Option(None, help="Only this model."),
    db: str = _DB_OPTION,
) -> None:
    """Export neurons and labels (openai: recorded activations; neuronpedia, csv: labels)."""
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.db import require_schema
    from neurolabel.storage.transfer import export_file, export_rows

    require_schema(db)
    with session_scope(db) as session:
        if out is None:
            export_rows(session=session, out=sys.stdout, format=format, model=model)  # type: ignore[arg-type]
        else:
            n = export_file(session=session, path=out, format=format, model=model)  # type: ignore[arg-type]
            typer.echo(f"wrote {n} item(s) to {out}", err=True)


def import_(
    file: Path = typer.Argument(..., help="A neurolabel export, or OpenAI NeuronRecord JSON / JSONL."),
    model: str = typer.Option(None, help="Model name of OpenAI records (default: the record's "
                              "neurolabel.model, else 'external', as the API names them)."),
    db: str = _DB_OPTION,
) -> None:
    """Import a file in one transaction: on any error nothing is written."""
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.db import require_schema
    from neurolabel.storage.transfer import import_file

    require_schema(db, migrate=True)
    with session_scope(db) as session:
        summary = import_file(session=session, path=file, model=model)
    typer.echo(
        f"imported {file} ({summary.format}): {summary.models} model(s), {summary.records} record(s), "
        f"{summary.explanations} explanation(s)"
    )
    for warning in summary.warnings:
        typer.echo(f"note: {warning}", err=True)


def register(app: typer.Typer) -> None:
    """Add the database commands to the ``neurolabel`` app."""
    app.add_typer(db_app, name="db")
    app.command("show")(show)
    app.command("search")(search)
    app.command("export")(export)
    app.command("import")(import_)
