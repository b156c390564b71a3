"""API keys: created and revoked from the CLI, stored only as a SHA-256 hash.

A key looks like ``nl_<random>``; its first characters (the *prefix*) are kept in clear
so that a person can tell keys apart in listings and revoke one by prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from neurolabel.core.errors import ConfigError

KEY_PREFIX = "nl_"
PREFIX_CHARS = 10
"""How many leading characters of a key are stored in clear."""


@dataclass(frozen=True)
class NewKey:
    """A freshly created key: the secret is shown once and never stored."""

    id: int
    """Row id of the key."""
    name: str
    """Human name given at creation."""
    prefix: str
    """Leading characters, kept in clear."""
    secret: str
    """The full key; hand it to the client, it cannot be recovered later."""


@dataclass(frozen=True)
class Caller:
    """The API key behind a request."""

    key_id: int
    """Row id of the key."""
    is_admin: bool = False
    """Whether it is an admin key (sees and cancels every job)."""


class AuthError(Exception):
    """A request's credentials are missing, wrong or revoked (``status`` is 401 or 403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def hash_key(secret: str) -> str:
    """The stored form of a key: hex SHA-256 (keys are long random strings, no salt needed)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_key(*, session: Session, name: str, admin: bool = False) -> NewKey:
    """Create a key named ``name`` (an admin key when ``admin``) and add its hashed row to
    ``session`` (caller commits)."""
    from neurolabel.storage.models import ApiKey

    if not name.strip():
        raise ConfigError("keys create: --name must not be empty")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        name=name,
        key_hash=hash_key(secret),
        prefix=secret[:PREFIX_CHARS],
        created_at=datetime.now(timezone.utc),
        is_admin=admin,
    )
    session.add(row)
    session.flush()
    return NewKey(id=row.id, name=name, prefix=row.prefix, secret=secret)


def revoke_key(*, session: Session, key: str) -> int:
    """Revoke every live key whose id, prefix or full secret is ``key``; returns how many.

    Raises :class:`ConfigError` when nothing matches (caller commits)."""
    from neurolabel.storage.models import ApiKey

    rows = session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None))).all()
    hit = [
        r
        for r in rows
        if key == str(r.id) or key == r.prefix or hmac.compare_digest(hash_key(key), r.key_hash)
    ]
    if not hit:
        raise ConfigError(f"keys revoke: no live API key with id, prefix or value {key!r}")
    now = datetime.now(timezone.utc)
    for r in hit:
        r.revoked_at = now
    session.flush()
    return len(hit)


def list_keys(*, session: Session) -> list[dict]:
    """All keys (never their secrets), newest first."""
    from neurolabel.storage.models import ApiKey

    rows = session.scalars(select(ApiKey).order_by(ApiKey.id.desc())).all()
    return [
        {
            "id": r.id,
            "name": r.name,
            "prefix": r.prefix,
            "created_at": r.created_at,
            "revoked_at": r.revoked_at,
            "is_admin": bool(r.is_admin),
        }
        for r in rows
    ]


def check_bearer(*, session: Session, authorization: str | None) -> int:
    """The id of the live key in an ``Authorization: Bearer <key>`` header.

    Raises :class:`AuthError` 401 for a missing/malformed header or an unknown key,
    403 for a revoked key."""
    return bearer_caller(session=session, authorization=authorization).key_id


def bearer_caller(*, session: Session, authorization: str | None) -> Caller:
    """The live key in an ``Authorization: Bearer <key>`` header, as a :class:`Caller`
    (errors as :func:`check_bearer`)."""
    from neurolabel.storage.models import ApiKey

    if not authorization:
        raise AuthError(401, "missing Authorization header (expected 'Bearer <api key>')")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError(401, "malformed Authorization header (expected 'Bearer <api key>')")
    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(token))).first()
    if row is None:
        raise AuthError(401, "unknown API key")
    if row.revoked_at is not None:
        raise AuthError(403, f"API key {row.prefix}… was revoked")
    return Caller(key_id=row.id, is_admin=bool(row.is_admin))


def signing_key_of(*, session: Session, key_id: int | None) -> str | None:
    """The key job callbacks of API key ``key_id`` are signed with (its stored SHA-256 digest,
    :func:`service.callbacks.signing_key`); ``None`` without a key."""
    from neurolabel.storage.models import ApiKey

    if key_id is None:
        return None
    return session.scalar(select(ApiKey.key_hash).where(ApiKey.id == key_id))
