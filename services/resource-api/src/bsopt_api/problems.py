"""HTTP problem details (RFC 9457) for every error this API returns.

:data:`GRPC_TO_HTTP` is the one table from a backend's gRPC status to the HTTP status
the user sees. Client-side problems (400/403/404/409) carry the backend's message,
which backends write for callers (``bsopt_common.errors``); server
-side ones (502/503) carry a fixed message, since gRPC transport errors name internal
addresses. Every body is ``application/problem+json`` with ``type`` ``about:blank``
(RFC 9457 §4.2.1: the title is then the HTTP reason phrase) and extension members
``grpc_status`` (backend errors) or ``errors`` (422 validation).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bsopt_common.security.token_provider import TokenRequestError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
#: Longest ``instance`` (the request path) echoed in a problem, characters.
MAX_INSTANCE_LENGTH = 512
#: Seconds a client should wait before retrying after a 503 (RFC 9110 §10.2.3).
RETRY_AFTER_SECONDS = 5

#: gRPC status of a backend call -> HTTP status of our response.
GRPC_TO_HTTP: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,  # a per-user quota; with Retry-After
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
}
#: Any other gRPC status (INTERNAL, UNKNOWN, UNAUTHENTICATED: our own token refused, ...).
GRPC_DEFAULT_HTTP = 502


def http_status_for(code: grpc.StatusCode) -> int:
    return GRPC_TO_HTTP.get(code, GRPC_DEFAULT_HTTP)


def problem(
    status: int,
    detail: str | None = None,
    *,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """An ``application/problem+json`` response (RFC 9457 §3)."""
    body: dict[str, Any] = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance if len(instance) <= MAX_INSTANCE_LENGTH else instance[:MAX_INSTANCE_LENGTH] + "..."
    body.update(extensions)
    return JSONResponse(jsonable_encoder(body), status_code=status, headers=dict(headers or {}),
                        media_type=PROBLEM_JSON)


async def _rpc_error(request: Request, exc: grpc.aio.AioRpcError) -> JSONResponse:
    code = exc.code()
    status = http_status_for(code)
    headers: dict[str, str] = {}
    if status >= 500:
        log.warning("backend call for %s %s failed: %s %s", request.method, request.url.path, code.name,
                    exc.details())
        detail = ("a backend service is unavailable; retry later" if status == 503
                  else "a backend service failed")
        if status == 503:
            headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    else:
        detail = exc.details() or None
        if status == 429:
            headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return problem(status, detail, instance=request.url.path, headers=headers, grpc_status=code.name)


async def _token_request_error(request: Request, exc: TokenRequestError) -> JSONResponse:
    # We could not get our own client-credentials token: the authorization server is
    # down or refuses this service. Either way the user can only retry later.
    log.error("no backend credentials for %s %s: %s", request.method, request.url.path, exc)
    return problem(503, "backend credentials are unavailable; retry later", instance=request.url.path,
                   headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def _http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Keeps the RFC 6750 WWW-Authenticate challenge of 401/403.
    return problem(exc.status_code, str(exc.detail) if exc.detail else None, instance=request.url.path,
                   headers=exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in exc.errors()]
    return problem(422, "the request does not match the API's schema", instance=request.url.path,
                   errors=errors)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's ServerErrorMiddleware sends this, then re-raises for the server's log.
    return problem(500, "unexpected error; it has been logged", instance=request.url.path)


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error of ``app`` as problem+json."""
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(grpc.aio.AioRpcError, _rpc_error)  # type: ignore[arg-type]
    app.add_exception_handler(TokenRequestError, _token_request_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_exception)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
