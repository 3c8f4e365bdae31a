"""GET/POST /authorize: the authorization endpoint with its login form."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from bsopt_auth.models import User
from bsopt_auth.pages import render
from bsopt_auth.passwords import hash_secret, needs_rehash, verify_secret
from bsopt_auth.rfc6749.authorization import (
    AuthorizationRedirectError,
    AuthorizationRequest,
    UnsafeRedirectError,
    error_redirect,
    issue_authorization_code,
    success_redirect,
    validate_authorization_request,
)
from bsopt_auth.rfc6749.errors import OAuth2Error
from bsopt_auth.rfc6749.parameters import check_parameters
from bsopt_auth.routes.state import AppState
from bsopt_common.db import session_scope

log = logging.getLogger(__name__)
router = APIRouter()

LOGIN_FAILED = "Invalid username or password."
MAX_CREDENTIAL_LENGTH = 1024


def _hidden_fields(request: AuthorizationRequest) -> list[tuple[str, str]]:
    fields = list(request.params.items())
    fields += [("resource", r) for r in request.requested_resources]
    return fields


def _login_page(state: AppState, request: AuthorizationRequest, *, status_code: int = 200,
                error: str | None = None, username: str = "") -> Response:
    return render(
        "login.html",
        status_code=status_code,
        action=state.settings.authorization_endpoint_url,
        client_id=request.client.client_id,
        scope=request.scope_string,
        hidden=_hidden_fields(request),
        error=error,
        username=username,
    )


def _error_page(description: str) -> Response:
    return render("error.html", status_code=400, error="invalid_request", description=description)


def _malformed(items: list[tuple[str, str]]) -> Response | None:
    """The error page for parameters that cannot be trusted (NUL, over-long), else None.
    Shown to the user, never redirected: the redirect URI and state are among them."""
    try:
        check_parameters(items)
    except OAuth2Error as exc:
        return _error_page(exc.description or exc.error)
    return None


def _redirect(location: str) -> Response:
    return RedirectResponse(location, status_code=302, headers={"Cache-Control": "no-store"})


def _validate(state: AppState, items: Iterable[tuple[str, str]]) -> AuthorizationRequest:
    with session_scope(state.session_factory) as session:
        req = validate_authorization_request(
            session, items, default_resource=state.settings.default_code_flow_resource
        )
        session.expunge(req.client)
        return req


@router.get("/authorize")
async def authorize_get(request: Request) -> Response:
    state = AppState.of(request)
    items = list(request.query_params.multi_items())
    if (refused := _malformed(items)) is not None:
        return refused
    try:
        req = await run_in_threadpool(_validate, state, items)
    except UnsafeRedirectError as exc:
        return _error_page(exc.description)
    except AuthorizationRedirectError as exc:
        return _redirect(error_redirect(exc, state.settings.issuer))
    return _login_page(state, req)


def _login(state: AppState, items: list[tuple[str, str]]) -> Response:
    """Re-validate the request carried by the form, check the credentials, issue a code."""
    try:
        req = _validate(state, items)
    except UnsafeRedirectError as exc:
        return _error_page(exc.description)
    except AuthorizationRedirectError as exc:
        return _redirect(error_redirect(exc, state.settings.issuer))

    form = dict(items)
    username = form.get("username", "")
    password = form.get("password", "")
    oversized = len(username) > MAX_CREDENTIAL_LENGTH or len(password) > MAX_CREDENTIAL_LENGTH
    with session_scope(state.session_factory) as session:
        user = None
        if username and not oversized:
            user = session.scalars(select(User).where(User.username == username)).one_or_none()
        # One argon2 verification whether or not the user exists.
        ok = verify_secret(user.password_hash if user else None, password[:MAX_CREDENTIAL_LENGTH])
        if not ok or user is None:
            log.info("login failed for client_id=%s", req.client.client_id)
            return _login_page(
                state, req, status_code=401, error=LOGIN_FAILED, username=username[:MAX_CREDENTIAL_LENGTH]
            )
        if needs_rehash(user.password_hash):
            user.password_hash = hash_secret(password)
        code = issue_authorization_code(
            session, req, user.id, ttl_seconds=state.settings.authorization_code_ttl_seconds
        )
    log.info("authorization code issued client_id=%s user_id=%s", req.client.client_id, user.id)
    return _redirect(success_redirect(req, code, state.settings.issuer))


@router.post("/authorize")
async def authorize_post(request: Request) -> Response:
    state = AppState.of(request)
    form = await request.form()
    items = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    if (refused := _malformed(items)) is not None:
        return refused
    return await run_in_threadpool(_login, state, items)


__all__ = ["router"]
