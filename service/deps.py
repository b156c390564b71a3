"""Typed FastAPI dependencies: a database session per request and the API-key check."""

from __future__ import annotations

from typing import Annotated, Iterator

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from neurolabel.service.auth import AuthError, check_bearer


def get_session(request: Request) -> Iterator[Session]:
    """A session from the app's session factory, closed after the request.

    Read handlers never commit; write handlers commit explicitly."""
    session = request.app.state.session_factory()
    try:
        yield session
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]
"""A SQLAlchemy session for the request."""


_bearer = HTTPBearer(auto_error=False, description="An API key from `neurolabel keys create`.")


def require_key(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> int:
    """The id of the caller's API key; 401 when missing, malformed or unknown, 403 when revoked."""
    authorization = f"{credentials.scheme} {credentials.credentials}" if credentials else None
    try:
        return check_bearer(session=session, authorization=authorization)
    except AuthError as exc:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        raise HTTPException(status_code=exc.status, detail=exc.message, headers=headers) from None


ApiKeyDep = Annotated[int, Depends(require_key)]
"""Id of the live API key of a write request."""
