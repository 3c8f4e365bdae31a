"""POST /oauth2/revoke (RFC 7009) and POST /oauth2/introspect (RFC 7662).

Both take an ``application/x-www-form-urlencoded`` body (no parameter repeated) and the
client's authentication as at the token endpoint (RFC 6749 §2.3,
:mod:`bsopt_auth.rfc6749.client_auth`), under the same brute-force limits
(:class:`bsopt_auth.throttle.ClientAuthGuard`: 429 + ``Retry-After``); errors are RFC 6749
§5.2 JSON."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from bsopt_auth.config import AuthSettings
from bsopt_auth.models import Client
from bsopt_auth.rfc6749.client_auth import authenticate_client
from bsopt_auth.rfc6749.errors import NO_STORE_HEADERS, InvalidClientError, InvalidRequestError, OAuth2Error
from bsopt_auth.rfc6749.parameters import check_parameters
from bsopt_auth.rfc7009 import revoke_token
from bsopt_auth.rfc7523 import AssertionPolicy
from bsopt_auth.rfc7662 import introspect_token
from bsopt_auth.routes.state import AppState
from bsopt_auth.routes.token import FORM_CONTENT_TYPE, error_response
from bsopt_auth.throttle import ClientAuthGuard
from bsopt_common.db import session_scope

log = logging.getLogger(__name__)
router = APIRouter()

Handler = Callable[[Any, AuthSettings, Client, dict[str, str]], Any]


async def _handle(request: Request, handler: Handler) -> Any:
    """Parse the form, authenticate the client and run ``handler`` in a worker thread;
    raises :class:`OAuth2Error`."""
    state = AppState.of(request)
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != FORM_CONTENT_TYPE:
        raise InvalidRequestError(f"the request body must be {FORM_CONTENT_TYPE}")
    form = await request.form()
    items = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    check_parameters(items)
    params: dict[str, str] = {}
    for name, value in items:
        if name in params:
            raise InvalidRequestError(f"parameter {name!r} must not repeat")
        params[name] = value
    authorization = request.headers.get("authorization")
    client_ip = request.client.host if request.client else None

    def run() -> Any:
        guard = ClientAuthGuard(state.settings, state.session_factory, authorization, items, client_ip)
        guard.check()
        try:
            with session_scope(state.session_factory) as session:
                client = authenticate_client(
                    session, authorization, params, AssertionPolicy.from_settings(state.settings)
                ).client
                session.expunge(client)
        except InvalidClientError:
            guard.failed()
            raise
        guard.succeeded()
        return handler(state.session_factory, state.settings, client, params)

    return await run_in_threadpool(run)


@router.post("/oauth2/revoke")
async def revoke(request: Request) -> Response:
    try:
        await _handle(request, revoke_token)
    except OAuth2Error as exc:
        log.info("revocation request refused: %s", exc.error)  # never the token
        return error_response(exc)
    return Response(status_code=200, headers=NO_STORE_HEADERS)  # RFC 7009 §2.2


@router.post("/oauth2/introspect")
async def introspect(request: Request) -> JSONResponse:
    try:
        body = await _handle(request, introspect_token)
    except OAuth2Error as exc:
        log.info("introspection request refused: %s", exc.error)
        return error_response(exc)
    return JSONResponse(body, headers=NO_STORE_HEADERS)


__all__ = ["router"]
