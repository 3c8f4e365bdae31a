"""``/admin/...``: the administration API (clients, users, signing keys) over
:mod:`bsopt_auth.admin`, the layer the command line uses too.

Protected by an RFC 9068 access token for the audience ``urn:bsopt:auth-server`` with
scope ``admin`` (e.g. the dev client ``bsopt-admin`` by client credentials), verified by
the shared :class:`~bsopt_common.security.jwt.AccessTokenVerifier` against this server's
own published keys (in-process JWKS, as UserInfo does). Refusals follow RFC 6750 §3:
401 ``invalid_token`` (or a bare challenge without a token), 403 ``insufficient_scope``.
Bad input is a 400/404/409 ``application/problem+json`` (RFC 9457), never a 5xx.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from bsopt_auth import admin
from bsopt_auth.routes.state import AppState
from bsopt_common.security.jwt import (
    AccessTokenClaims,
    AccessTokenVerifier,
    InsufficientScopeError,
    InvalidTokenError,
    bearer_token,
)

log = logging.getLogger(__name__)

#: OpenAPI security scheme of the admin API.
ADMIN_SCHEME = HTTPBearer(
    scheme_name="bsopt-admin", auto_error=False,
    description="RFC 9068 access token (`Authorization: Bearer <token>`) for the resource "
                "`urn:bsopt:auth-server` with scope `admin` (client credentials grant).",
)


class AdminAuthError(Exception):
    def __init__(self, status: int, challenge: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.challenge, self.detail = status, challenge, detail


def _challenge(error: str, description: str) -> str:
    value = f'Bearer realm="bsopt-admin", error="{error}", error_description="{description.replace(chr(34), chr(39))}"'
    return value + (f', scope="{admin.ADMIN_SCOPE}"' if error == "insufficient_scope" else "")


async def admin_principal(
    request: Request, _documented: Annotated[HTTPAuthorizationCredentials | None, Security(ADMIN_SCHEME)],
) -> AccessTokenClaims:
    verifier: AccessTokenVerifier = request.app.state.admin_token_verifier
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise AdminAuthError(401, 'Bearer realm="bsopt-admin"', "missing bearer token")
    try:
        return await verifier.verify(token, (admin.ADMIN_SCOPE,))
    except InsufficientScopeError as exc:
        raise AdminAuthError(403, _challenge("insufficient_scope", str(exc)), str(exc)) from None
    except InvalidTokenError as exc:
        raise AdminAuthError(401, _challenge("invalid_token", str(exc)), str(exc)) from None
    except Exception:
        log.exception("admin token verification failed unexpectedly")
        raise AdminAuthError(401, _challenge("invalid_token", "unverifiable token"), "unverifiable token") from None


Admin = Annotated[AccessTokenClaims, Depends(admin_principal)]
_PROBLEM_SCHEMA = {"type": "object", "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                                                   "status": {"type": "integer"}, "detail": {}}}
#: problem+json (RFC 9457); FastAPI's own body-parsing refusals are plain JSON.
_PROBLEM = {"application/problem+json": {"schema": _PROBLEM_SCHEMA}, "application/json": {"schema": _PROBLEM_SCHEMA}}
#: Documented refusals of every /admin operation (RFC 6750 §3, RFC 9457).
_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid input", "content": _PROBLEM},
    401: {"description": "Missing or invalid access token (RFC 6750 §3.1 invalid_token)", "content": _PROBLEM},
    403: {"description": "The token lacks scope admin (insufficient_scope)", "content": _PROBLEM},
    404: {"description": "No such client, user or key", "content": _PROBLEM},
    409: {"description": "Already exists", "content": _PROBLEM},
    422: {"description": "Malformed JSON body", "content": _PROBLEM},
}
router = APIRouter(prefix="/admin", tags=["admin"], responses=_RESPONSES)


def _problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"type": "about:blank", "title": title, "status": status, "detail": detail},
                        status_code=status, media_type="application/problem+json",
                        headers={"Cache-Control": "no-store", **(headers or {})})


def auth_error_response(exc: AdminAuthError) -> JSONResponse:
    return _problem(exc.status, "Unauthorized" if exc.status == 401 else "Forbidden", exc.detail,
                    {"WWW-Authenticate": exc.challenge})


def admin_error_response(exc: admin.AdminError) -> JSONResponse:
    status, title = {admin.NotFoundError: (404, "Not Found"), admin.ConflictError: (409, "Conflict")}.get(
        type(exc), (400, "Bad Request"))
    return _problem(status, title, str(exc))


def _actor(principal: AccessTokenClaims) -> str:
    return f"api:{principal.client_id or principal.subject}"[:200]


def _ok(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


class ClientCreate(BaseModel):
    client_id: str = Field(max_length=255)
    client_type: Literal["public", "confidential"]
    grant_types: list[str] = Field(max_length=10)
    redirect_uris: list[str] = Field(default_factory=list, max_length=50)
    scopes: list[str] = Field(default_factory=list, max_length=100)
    resources: list[str] = Field(default_factory=list, max_length=50)
    token_endpoint_auth_method: str | None = Field(default=None, max_length=32)
    jwks: dict[str, Any] | None = None


class UserCreate(BaseModel):
    username: str = Field(max_length=255)
    password: str = Field(max_length=admin.MAX_PASSWORD_LENGTH)


class PasswordReset(BaseModel):
    password: str = Field(max_length=admin.MAX_PASSWORD_LENGTH)


@router.post("/clients", status_code=201, summary="Register a client (the secret is shown once)")
async def create_client(request: Request, body: ClientCreate, principal: Admin) -> JSONResponse:
    state = AppState.of(request)
    created = await run_in_threadpool(
        admin.create_client, state.session_factory, state.settings, body.client_id, client_type=body.client_type,
        grant_types=body.grant_types, redirect_uris=body.redirect_uris, scopes=body.scopes,
        resources=body.resources, auth_method=body.token_endpoint_auth_method, jwks=body.jwks,
        actor=_actor(principal))
    out = created.client.to_dict()
    if created.client_secret is not None:
        out["client_secret"] = created.client_secret
    return _ok(out, 201)


@router.get("/clients", summary="List clients")
async def list_clients(request: Request, principal: Admin) -> JSONResponse:
    views = await run_in_threadpool(admin.list_clients, AppState.of(request).session_factory)
    return _ok({"clients": [v.to_dict() for v in views]})


@router.get("/clients/{client_id}", summary="Show a client")
async def get_client(request: Request, client_id: str, principal: Admin) -> JSONResponse:
    view = await run_in_threadpool(admin.get_client, AppState.of(request).session_factory, client_id)
    return _ok(view.to_dict())


@router.delete("/clients/{client_id}", status_code=204, summary="Delete a client")
async def delete_client(request: Request, client_id: str, principal: Admin) -> JSONResponse:
    state = AppState.of(request)
    await run_in_threadpool(admin.delete_client, state.session_factory, state.settings, client_id,
                            actor=_actor(principal))
    return JSONResponse(None, status_code=204, headers={"Cache-Control": "no-store"})


@router.post("/clients/{client_id}/rotate-secret", summary="Replace a client's secret (shown once)")
async def rotate_secret(request: Request, client_id: str, principal: Admin) -> JSONResponse:
    state = AppState.of(request)
    secret = await run_in_threadpool(admin.rotate_client_secret, state.session_factory, state.settings, client_id,
                                     actor=_actor(principal))
    return _ok({"client_id": client_id, "client_secret": secret})


@router.post("/users", status_code=201, summary="Create a user")
async def create_user(request: Request, body: UserCreate, principal: Admin) -> JSONResponse:
    state = AppState.of(request)
    view = await run_in_threadpool(admin.create_user, state.session_factory, state.settings, body.username,
                                   body.password, actor=_actor(principal))
    return _ok(view.to_dict(), 201)


@router.get("/users", summary="List users")
async def list_users(request: Request, principal: Admin) -> JSONResponse:
    views = await run_in_threadpool(admin.list_users, AppState.of(request).session_factory)
    return _ok({"users": [v.to_dict() for v in views]})


@router.get("/users/{user}", summary="Show a user (by id or username)")
async def get_user(request: Request, user: str, principal: Admin) -> JSONResponse:
    view = await run_in_threadpool(admin.get_user, AppState.of(request).session_factory, user)
    return _ok(view.to_dict())


async def _set_disabled(request: Request, user: str, principal: AccessTokenClaims, disabled: bool) -> JSONResponse:
    state = AppState.of(request)
    view = await run_in_threadpool(admin.set_user_disabled, state.session_factory, state.settings, user, disabled,
                                   actor=_actor(principal))
    return _ok(view.to_dict())


@router.post("/users/{user}/disable", summary="Disable a user (revokes their refresh tokens)")
async def disable_user(request: Request, user: str, principal: Admin) -> JSONResponse:
    return await _set_disabled(request, user, principal, True)


@router.post("/users/{user}/enable", summary="Enable a user")
async def enable_user(request: Request, user: str, principal: Admin) -> JSONResponse:
    return await _set_disabled(request, user, principal, False)


@router.post("/users/{user}/reset-password", summary="Set a new password (revokes their refresh tokens)")
async def reset_password(request: Request, user: str, body: PasswordReset, principal: Admin) -> JSONResponse:
    state = AppState.of(request)
    view = await run_in_threadpool(admin.reset_password, state.session_factory, state.settings, user, body.password,
                                   actor=_actor(principal))
    return _ok(view.to_dict())


@router.get("/keys", summary="List signing keys (public metadata only)")
async def list_keys(request: Request, principal: Admin) -> JSONResponse:
    return _ok({"keys": await run_in_threadpool(admin.keys, AppState.of(request).session_factory)})


@router.post("/keys/rotate", summary="Rotate the signing key")
async def rotate_key(request: Request, principal: Admin) -> JSONResponse:
    state = AppState.of(request)
    kid = await run_in_threadpool(admin.rotate_key, state.session_factory, state.settings, actor=_actor(principal))
    return _ok({"kid": kid})


@router.post("/keys/{kid}/revoke", summary="Revoke a signing key")
async def revoke_key(request: Request, kid: str, principal: Admin) -> JSONResponse:
    state = AppState.of(request)
    new_kid = await run_in_threadpool(admin.revoke_key, state.session_factory, state.settings, kid,
                                      actor=_actor(principal))
    return _ok({"revoked": kid, "new_active_kid": new_kid})


__all__ = ["AdminAuthError", "admin_error_response", "auth_error_response", "router"]
