"""The ``neurolabel`` command line. Each command group lives in its own ``service/cli_*.py``
module exposing ``register(app)``; this module only assembles them."""

from __future__ import annotations

import importlib
import logging
import os

import typer

from neurolabel.core.errors import NeurolabelError

app = typer.Typer(
    name="neurolabel",
    help="Automated neuron labelling: record, explain, validate, store and serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

_COMMAND_MODULES = (
    "neurolabel.service.cli_record",
    "neurolabel.service.cli_db",
    "neurolabel.service.cli_ontology",
    "neurolabel.service.cli_label",
    "neurolabel.service.cli_service",
    "neurolabel.service.cli_decode",
    "neurolabel.service.cli_contrast",
)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details.")) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


for _mod in _COMMAND_MODULES:
    try:
        importlib.import_module(_mod).register(app)
    except ModuleNotFoundError as _exc:
        if _exc.name != _mod:
            raise


def main() -> None:
    """Entry point that turns neurolabel's own errors into one clear line and exit code 2."""
    try:
        app(standalone_mode=True)
    except NeurolabelError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
