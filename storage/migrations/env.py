"""Alembic environment, configured programmatically by :func:`storage.db.upgrade`.

The database URL comes from ``config.attributes["url"]`` (set by ``storage.db``), or from
``sqlalchemy.url`` / the settings when Alembic is run by hand.
"""

from __future__ import annotations

from alembic import context

from neurolabel.storage.db import make_engine
from neurolabel.storage.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str | None:
    return config.attributes.get("url") or config.get_main_option("sqlalchemy.url")


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of running it."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on a live connection."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url(), pool=False)
    try:
        with engine.connect() as conn:
            context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
