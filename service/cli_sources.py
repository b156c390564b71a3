"""CLI commands ``neurolabel corpora|models|ontologies add|list|remove``: the corpora, models and
ontologies API clients may name (besides the defaults and paths under
``NEUROLABEL_DATA_DIRS``)."""

from __future__ import annotations

from pathlib import Path

import typer

from neurolabel.core.errors import ConfigError


def _group(kind: str, plural: str) -> typer.Typer:
    group = typer.Typer(help=f"Register the {plural} API clients, jobs and nightly configs may name.",
                        no_args_is_help=True)

    @group.command("add")
    def add(
        name: str = typer.Argument(..., help=f"Name clients use for the {kind}."),
        path: Path = typer.Argument(..., help=f"The {kind} on this machine (file or folder)."),
        db: str = typer.Option(None, "--db", help="Database URL."),
    ) -> None:
        """Register (or re-point) a name."""
        from neurolabel.service.sources import BUILTIN, is_plain_name
        from neurolabel.storage.db import session_scope
        from neurolabel.storage.sources import add_source

        if not is_plain_name(name) or name in BUILTIN[kind]:
            raise ConfigError(f"{plural} add: {name!r} is not a usable name: letters, digits, '_', '.', '-', "
                              f"not one of the built-in {', '.join(BUILTIN[kind])}")
        real = path.expanduser().resolve()
        if not real.exists():
            raise ConfigError(f"{plural} add: {str(path)!r} does not exist")
        if kind == "ontology":
            from neurolabel.ontology.load import load_ontology

            load_ontology(real)  # OntologyError naming the file and the problem
        if kind == "model" and not (real / "config.json").is_file():
            raise ConfigError(f"{plural} add: {str(path)!r} has no config.json: not a Hugging Face model folder")
        with session_scope(db) as s:
            add_source(session=s, kind=kind, name=name, path=str(real))
        typer.echo(f"{kind} {name} -> {real}")

    @group.command("list")
    def list_(db: str = typer.Option(None, "--db", help="Database URL.")) -> None:
        """Registered names and their paths (the built-in names are always allowed too)."""
        from neurolabel.storage.db import session_scope
        from neurolabel.storage.sources import list_sources

        with session_scope(db) as s:
            for row in list_sources(session=s, kind=kind):
                typer.echo(f"{row['name']}\t{row['path']}")

    @group.command("remove")
    def remove(
        name: str = typer.Argument(..., help="Registered name."),
        db: str = typer.Option(None, "--db", help="Database URL."),
    ) -> None:
        """Unregister a name (queued jobs naming it then fail in the worker's check)."""
        from neurolabel.storage.db import session_scope
        from neurolabel.storage.sources import remove_source

        with session_scope(db) as s:
            if not remove_source(session=s, kind=kind, name=name):
                raise ConfigError(f"{plural} remove: no registered {kind} named {name!r}")
        typer.echo(f"removed {kind} {name}")

    return group


def register(app: typer.Typer) -> None:
    """Add ``corpora`` and ``models`` to the ``neurolabel`` CLI."""
    app.add_typer(_group("corpus", "corpora"), name="corpora")
    app.add_typer(_group("model", "models"), name="models")
    app.add_typer(_group("ontology", "ontologies"), name="ontologies")
