"""Operator-registered data sources: corpora and models that clients may name
(``neurolabel corpora add NAME PATH``, ``neurolabel models add NAME PATH``).

Keyword-only functions over an open session; none commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from neurolabel.core.errors import ConfigError
from neurolabel.storage.models import DATA_SOURCE_KINDS, DataSource


def _check_kind(kind: str) -> None:
    if kind not in DATA_SOURCE_KINDS:
        raise ConfigError(f"data source kind must be one of {', '.join(DATA_SOURCE_KINDS)}, not {kind!r}")


def add_source(*, session: Session, kind: str, name: str, path: str) -> int:
    """Register (or re-point) the ``kind`` named ``name`` at ``path``; returns its row id."""
    _check_kind(kind)
    row = session.scalars(select(DataSource).where(DataSource.kind == kind, DataSource.name == name)).first()
    if row is None:
        row = DataSource(kind=kind, name=name, path=path)
        session.add(row)
    else:
        row.path = path
    session.flush()
    return row.id


def remove_source(*, session: Session, kind: str, name: str) -> bool:
    """Unregister the ``kind`` named ``name``; ``False`` when there was none."""
    _check_kind(kind)
    res = session.execute(delete(DataSource).where(DataSource.kind == kind, DataSource.name == name))
    return res.rowcount > 0


def source_path(*, session: Session, kind: str, name: str) -> str | None:
    """The path registered for the ``kind`` named ``name``, or ``None``."""
    _check_kind(kind)
    return session.scalar(select(DataSource.path).where(DataSource.kind == kind, DataSource.name == name))


def list_sources(*, session: Session, kind: str | None = None) -> list[dict[str, Any]]:
    """Registered sources (``kind`` only, when given), by kind and name; paths included: for
    the operator's CLI, never for API clients."""
    q = select(DataSource).order_by(DataSource.kind, DataSource.name)
    if kind is not None:
        _check_kind(kind)
        q = q.where(DataSource.kind == kind)
    return [{"kind": r.kind, "name": r.name, "path": r.path, "created_at": r.created_at}
            for r in session.scalars(q)]


def source_names(*, session: Session, kind: str) -> list[str]:
    """Names of the registered sources of ``kind``, sorted."""
    _check_kind(kind)
    return list(session.scalars(select(DataSource.name).where(DataSource.kind == kind).order_by(DataSource.name)))
