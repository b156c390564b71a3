"""The ``neurolabel`` command line. Each command group lives in its own ``service/cli_*.py``
module exposing ``register(app)``; this module only assembles them."""

from __future__ import annotations

import importlib
import logging
import os
import sys

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
    "neurolabel.service.cli_sources",
    "neurolabel.service.cli_contrast",
)


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of a failure."),
) -> None:
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


def describe_failure(exc: BaseException) -> str | None:
    """One line telling what went wrong, for the failures a user can fix (configuration,
    database); ``None`` for anything else (a bug: shown with its traceback)."""
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

    if isinstance(exc, NeurolabelError):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, (ArgumentError, NoSuchModuleError)):
        return f"bad database URL: {str(exc).splitlines()[0]}"
    if isinstance(exc, DBAPIError):
        orig = exc.orig if exc.orig is not None else exc
        first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        return f"database unavailable or unusable: {first} (check --db / NEUROLABEL_DATABASE_URL)"
    if isinstance(exc, SQLAlchemyError):
        return f"database error: {str(exc).splitlines()[0]}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or exc}"
    try:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):  # settings from the environment
            err = exc.errors()[0]
            return f"bad setting {'.'.join(str(p) for p in err.get('loc', ())) or exc.title}: {err.get('msg', '')}"
    except ImportError:  # pragma: no cover - pydantic is a dependency
        pass
    return None


def main() -> None:
    """Entry point: a configuration or database failure is one clear line on stderr and exit
    code 2 (the traceback only with ``--debug``)."""
    debug = "--debug" in sys.argv[1:]
    try:
        app(standalone_mode=True)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - decide below what the user sees
        line = describe_failure(exc)
        if debug or line is None:
            raise
        typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
