"""CLI commands of the ontology: ``ontology build`` and ``ontology info``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

ontology_app = typer.Typer(help="Build and inspect the ontology used by concept induction.", no_args_is_help=True)


def _describe(onto) -> list[str]:
    import numpy as np

    from neurolabel.ontology.lexical import describe_layers

    n_edges = int(onto.parent_ptr[-1])
    return [
        f"ontology      {onto.name}",
        f"source        {onto.source}",
        f"classes       {onto.n_classes}",
        f"subClassOf    {n_edges}",
        f"roots         {len(onto.roots)} ({', '.join(onto.label(int(r)) for r in onto.roots[:5])}"
        f"{', …' if len(onto.roots) > 5 else ''})",
        f"max depth     {int(np.max(onto.depth)) if onto.n_classes else 0}",
        f"lexicon       {len(onto.lexicon)} words and phrases",
        *describe_layers(onto),
    ]


@ontology_app.command("build")
def build(force: bool = typer.Option(False, "--force", help="Rebuild even when cached.")) -> None:
    """Build (or reuse) the default ontology (WordNet + lexical layer) and its caches, and show its size."""
    from neurolabel.ontology.build import _paths, build_default

    t = time.perf_counter()
    onto = build_default(force=force)
    for line in _describe(onto):
        typer.echo(line)
    pkl, owl = _paths()
    typer.echo(f"compact cache {pkl} ({pkl.stat().st_size / 1e6:.1f} MB)")
    typer.echo(f"OWL store     {owl} ({owl.stat().st_size / 1e6:.1f} MB)")
    typer.echo(f"took          {time.perf_counter() - t:.1f} s")


@ontology_app.command("info")
def info(
    path: Optional[Path] = typer.Argument(None, help="A user ontology (RDF/XML, OWL/XML, Turtle, N-Triples); "
                                                     "default: WordNet + the lexical layer."),
    cls: Optional[str] = typer.Option(None, "--class", help="Also show one class (IRI, local name or label)."),
) -> None:
    """Show the size of an ontology (and optionally one class with its parents and children)."""
    t = time.perf_counter()
    if path is None:
        from neurolabel.ontology.build import default_ontology

        onto = default_ontology()
    else:
        from neurolabel.ontology.load import load_ontology

        onto = load_ontology(path)
    for line in _describe(onto):
        typer.echo(line)
    typer.echo(f"loaded in     {time.perf_counter() - t:.2f} s")
    if cls:
        c = onto.find(cls)
        typer.echo(f"class         {onto.iri(c)}")
        typer.echo(f"labels        {', '.join(onto.labels[c])}")
        typer.echo(f"parents       {', '.join(onto.label(int(p)) for p in onto.parents(c))}")
        kids = onto.children(c)
        typer.echo(f"children      {len(kids)}: {', '.join(onto.label(int(k)) for k in kids[:10])}"
                   f"{', …' if len(kids) > 10 else ''}")


def register(app: typer.Typer) -> None:
    """Add the ``ontology`` command group to the ``neurolabel`` CLI."""
    app.add_typer(ontology_app, name="ontology")
