"""What a handler needs, by type (``Annotated`` aliases over FastAPI dependencies).

Principals come from :func:`bsopt_common.security.fastapi.require_scopes`: 401 for a
missing or invalid token, 403 for a missing scope (RFC 6750 §3), rendered as problem
details by :mod:`bsopt_api.problems`. The user id is always the token's ``sub``.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends
from fastapi.exceptions import RequestValidationError
from fastapi.requests import HTTPConnection
from sqlalchemy.orm import Session, sessionmaker

from bsopt_api.clients import BackendClients
from bsopt_api.config import ApiSettings
from bsopt_api.hub import CoachHub
from bsopt_common.security.fastapi import require_scopes
from bsopt_common.security.jwt import AccessTokenClaims

SCOPE_TRAINING_READ = "training:read"
SCOPE_TRAINING_WRITE = "training:write"
SCOPE_TRADES_READ = "trades:read"
SCOPE_TRADES_WRITE = "trades:write"

#: Any valid token for this API.
AnyPrincipal = Annotated[AccessTokenClaims, Depends(require_scopes())]
TrainingReader = Annotated[AccessTokenClaims, Depends(require_scopes(SCOPE_TRAINING_READ))]
TrainingWriter = Annotated[AccessTokenClaims, Depends(require_scopes(SCOPE_TRAINING_WRITE))]
TradesReader = Annotated[AccessTokenClaims, Depends(require_scopes(SCOPE_TRADES_READ))]
TradesWriter = Annotated[AccessTokenClaims, Depends(require_scopes(SCOPE_TRADES_WRITE))]


def _settings(conn: HTTPConnection) -> ApiSettings:
    return conn.app.state.settings


def _backends(conn: HTTPConnection) -> BackendClients:
    return conn.app.state.backends


def _session_factory(conn: HTTPConnection) -> sessionmaker[Session]:
    return conn.app.state.session_factory


def _hub(conn: HTTPConnection) -> CoachHub:
    return conn.app.state.hub


#: Longest path id (account, job) accepted; ids are UUIDs or short names.
MAX_PATH_ID_LENGTH = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_path_params(conn: HTTPConnection) -> None:
    """Router-wide guard: a path id with a control character (NUL above all: Postgres
    cannot store it) or longer than :data:`MAX_PATH_ID_LENGTH` is a 422 before any
    backend is called. Raises RequestValidationError (rendered as problem+json)."""
    errors = []
    for name, value in conn.path_params.items():
        if not isinstance(value, str):
            continue
        if _CONTROL.search(value):
            errors.append({"type": "string_pattern_mismatch", "loc": ("path", name),
                           "msg": f"{name} must not contain control characters (NUL included)"})
        elif len(value) > MAX_PATH_ID_LENGTH:
            errors.append({"type": "string_too_long", "loc": ("path", name),
                           "msg": f"{name} is longer than {MAX_PATH_ID_LENGTH} characters"})
    if errors:
        raise RequestValidationError(errors)


Settings = Annotated[ApiSettings, Depends(_settings)]
Backends = Annotated[BackendClients, Depends(_backends)]
SessionFactory = Annotated[sessionmaker[Session], Depends(_session_factory)]
Hub = Annotated[CoachHub, Depends(_hub)]
