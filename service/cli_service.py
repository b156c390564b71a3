"""CLI commands of the service: ``serve``, ``worker``, ``nightly CONFIG.toml`` and ``keys``."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

log = logging.getLogger(__name__)

keys_app = typer.Typer(help="Create, list and revoke API keys for the write endpoints.",
                       no_args_is_help=True)


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="TCP port."),
    db: str = typer.Option(None, "--db", help="Database URL (default: NEUROLABEL_DATABASE_URL)."),
    migrate: bool = typer.Option(True, help="Bring the database schema up to date first."),
    workers: int = typer.Option(1, help="uvicorn worker processes."),
) -> None:
    """Serve the REST API (under /v1, docs at /docs) and the web neuron browser."""
    import uvicorn

    from neurolabel.service.app import serving_app
    from neurolabel.storage.db import normalize_url, upgrade

    url = normalize_url(db)
    if migrate:
        upgrade(url)
    if workers > 1:
        import os

        os.environ["NEUROLABEL_DATABASE_URL"] = url
        uvicorn.run("neurolabel.service.app:serving_app", factory=True, host=host, port=port, workers=workers)
    else:
        uvicorn.run(serving_app(url), host=host, port=port)


def worker(
    db: str = typer.Option(None, "--db", help="Database URL (default: NEUROLABEL_DATABASE_URL)."),
    once: bool = typer.Option(False, help="Run at most one job, then exit."),
    until_idle: bool = typer.Option(False, help="Exit when the queue is empty."),
    job: int = typer.Option(None, help="Run only this job id (if queued)."),
    poll: float = typer.Option(2.0, help="Seconds between polls of an empty queue."),
    heartbeat: float = typer.Option(5.0, help="Seconds between heartbeats."),
    stale_after: float = typer.Option(60.0, help="Requeue running jobs silent this long."),
    name: str = typer.Option(None, help="Worker name (default host:pid:random)."),
) -> None:
    """Run labelling jobs from the database queue (several workers may run at once)."""
    from neurolabel.service.worker import Worker
    from neurolabel.storage.db import normalize_url

    import signal

    w = Worker(database_url=normalize_url(db), name=name, poll_s=poll, heartbeat_s=heartbeat,
               stale_after_s=stale_after)

    def _graceful(signum, _frame) -> None:
        log.warning("worker %s: signal %s, stopping after the current neuron", w.name, signum)
        w.shutdown.set()

    signal.signal(signal.SIGTERM, _graceful)
    signal.signal(signal.SIGINT, _graceful)
    try:
        if once or job is not None:
            state = w.run_one(job_id=job)
            typer.echo("no queued job" if state is None else f"job {state['id']}: {state['status']}")
            return
        n = w.run_forever(until_idle=until_idle)
        typer.echo(f"worker {w.name}: ran {n} job(s)")
    finally:
        w.close(timeout_s=30.0)  # job callbacks still being delivered get up to 30 s


def nightly(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="Nightly TOML config."),
) -> None:
    """Label what is missing or stale for the configured models; write a summary."""
    from neurolabel.service.nightly import load_config, run_nightly

    summary = run_nightly(load_config(config))
    typer.echo(f"nightly: {summary['status']}; summary in {summary['summary_json']}")
    if summary["status"] != "ok":
        raise typer.Exit(1)


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., "--name", help="Who or what the key is for."),
    admin: bool = typer.Option(False, "--admin", help="An admin key: sees and cancels every job."),
    db: str = typer.Option(None, "--db", help="Database URL."),
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from neurolabel.service.auth import create_key
    from neurolabel.storage.db import session_scope

    with session_scope(db) as s:
        key = create_key(session=s, name=name, admin=admin)
    typer.echo(key.secret)
    typer.echo(f"id {key.id}, prefix {key.prefix}: store the key now, it cannot be shown again", err=True)


@keys_app.command("revoke")
def keys_revoke(
    key: str = typer.Argument(..., help="Key id, prefix or the key itself."),
    db: str = typer.Option(None, "--db", help="Database URL."),
) -> None:
    """Revoke a key (requests with it get 403)."""
    from neurolabel.service.auth import revoke_key
    from neurolabel.storage.db import session_scope

    with session_scope(db) as s:
        n = revoke_key(session=s, key=key)
    typer.echo(f"revoked {n} key(s)")


@keys_app.command("list")
def keys_list(db: str = typer.Option(None, "--db", help="Database URL.")) -> None:
    """List keys (id, name, prefix, created, revoked) — never their secrets."""
    from neurolabel.service.auth import list_keys
    from neurolabel.storage.db import session_scope

    with session_scope(db) as s:
        for k in list_keys(session=s):
            state = f"revoked {k['revoked_at']:%Y-%m-%d}" if k["revoked_at"] else "live"
            role = "\tadmin" if k["is_admin"] else ""
            typer.echo(f"{k['id']}\t{k['prefix']}…\t{k['name']}\t{state}{role}")


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``worker``, ``nightly`` and ``keys`` to the ``neurolabel`` CLI."""
    app.command("serve")(serve)
    app.command("worker")(worker)
    app.command("nightly")(nightly)
    app.add_typer(keys_app, name="keys")
