"""POST /oauth2/token: the token endpoint (RFC 6749 §3.2).

Served by :class:`TokenEndpoint`, a plain ASGI app in front of the FastAPI stack (inside
the security-header and CORS middleware, so responses carry the same headers): the
busiest endpoint skips Starlette's routing, request object and multipart form parser,
which cost more than the grant itself (BENCHMARKS.md, issue 7). The FastAPI route of the
same path stays for the OpenAPI document and answers through the same :func:`answer`.

Where the blocking work runs:

- A ``client_credentials`` grant authenticated by a client secret, without DPoP, needs no
  database round trip while the caches are warm (client row, active key, throttle
  "clear" entries; ``*_cache_seconds`` settings): pure CPU, a SHA-256 digest and one
  signature. With a cheap signature (:data:`INLINE_SIGNING_ALGS`) and the audit trail
  batched (``serve``), it is first tried **on the event loop** through a session factory whose
  engine never connects (:data:`WouldBlock` at the first checkout); a cold cache or a
  failure to record ends that attempt before any write, and the request is answered
  again on the worker thread, from the start.
- Those grants share **one** worker thread per process: on many threads at once they
  only fight over the GIL (p99 400-600 ms at 16 connections on 2 cores, against 23 ms
  with one thread).
- Every other grant writes to the database and runs on the default thread pool.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bsopt_auth import audit
from bsopt_auth.rfc6749.errors import NO_STORE_HEADERS, InvalidClientError, InvalidRequestError, OAuth2Error
from bsopt_auth.rfc6749.token import handle_token_request
from bsopt_auth.routes.state import AppState
from bsopt_auth.throttle import ClientAuthGuard
from bsopt_common.db import make_session_factory

log = logging.getLogger(__name__)
router = APIRouter()

#: The token endpoint's path (RFC 8414 ``token_endpoint``).
TOKEN_ENDPOINT_PATH = "/oauth2/token"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
#: Largest request body read, bytes: far above any token request (parameters are at most
#: 4,096 characters each, bsopt_auth.rfc6749.parameters); larger is 413.
MAX_BODY_BYTES = 64 * 1024
#: Most form fields parsed; more is ``invalid_request``.
MAX_FIELDS = 64
#: Signing algorithms cheap enough to run on the event loop (ES256: ~0.04 ms; an RS256
#: signature takes ~1.2 ms, and on the loop it pushed p99 to 55 ms at 16 connections).
INLINE_SIGNING_ALGS = frozenset({"ES256"})


class WouldBlock(Exception):
    """The inline attempt needed a database connection (see the module docstring)."""


class _RefusingPool(NullPool):
    """A pool that never connects: the inline attempt's engine."""

    def _do_get(self) -> Any:
        raise WouldBlock


def non_connecting_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions on ``engine``'s URL (so every URL-keyed cache is shared) whose first
    connection checkout raises :class:`WouldBlock`."""
    return make_session_factory(create_engine(engine.url, poolclass=_RefusingPool))


def _audit_token(state: AppState, client_ip: str | None, authorization: str | None,
                 items: list[tuple[str, str]], error: str | None) -> None:
    """``auth.token_issued`` / ``auth.token_refused`` (:mod:`bsopt_auth.audit`): grant type,
    claimed client, hashed address, the RFC 6749 §5.2 error; never a credential."""
    grant_type = next((v for k, v in items if k == "grant_type"), "")[:100]
    audit.emit(state.settings, state.session_factory, audit.TOKEN_REFUSED if error else audit.TOKEN_ISSUED,
               outcome="failure" if error else "success", reason=error,
               client_id=audit.claimed_client_id(authorization, items), ip=client_ip,
               details={"grant_type": grant_type})


def error_response(exc: OAuth2Error) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers())


def _process(state: AppState, session_factory: sessionmaker[Session], authorization: str | None,
             client_ip: str | None, items: list[tuple[str, str]], dpop: list[str]) -> dict[str, object]:
    """Throttle check, the grant, the throttle's bookkeeping (blocking unless
    ``session_factory`` never connects)."""
    # Brute-force limits on client authentication (bsopt_auth.throttle): 429 + Retry-After.
    guard = ClientAuthGuard(state.settings, session_factory, authorization, items, client_ip)
    guard.check()
    try:
        body = handle_token_request(session_factory, state.settings, authorization, items, dpop)
    except InvalidClientError:
        guard.failed()
        raise
    guard.succeeded()
    return body


def _outcome(fn: Callable[[], dict[str, object]]) -> tuple[dict[str, object] | None, OAuth2Error | None]:
    try:
        return fn(), None
    except OAuth2Error as exc:
        return None, exc


def _respond(state: AppState, authorization: str | None, client_ip: str | None, items: list[tuple[str, str]],
             dpop: list[str]) -> tuple[dict[str, object] | None, OAuth2Error | None]:
    """The grant and its audit fact, on a worker thread."""
    body, error = _outcome(lambda: _process(state, state.session_factory, authorization, client_ip, items, dpop))
    _audit_token(state, client_ip, authorization, items, error.error if error is not None else None)
    return body, error


def _secret_grant(authorization: str | None, items: list[tuple[str, str]], dpop: list[str]) -> bool:
    """A ``client_credentials`` grant authenticated by a client secret, without DPoP: no
    database round trip while the caches are warm."""
    if dpop or any(k == "client_assertion" for k, _ in items):
        return False
    return ("grant_type", "client_credentials") in items


class _Lanes:
    """The one worker thread of secret grants, and the inline attempt's session factory,
    per application."""

    def __init__(self, state: AppState) -> None:
        self.secret = anyio.CapacityLimiter(1)
        self.offline = non_connecting_session_factory(state.engine)


def _lanes(state: AppState) -> _Lanes:
    lanes = state.extras.get("token_lanes")
    if lanes is None:
        lanes = state.extras["token_lanes"] = _Lanes(state)
    assert isinstance(lanes, _Lanes)
    return lanes


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """An ``application/x-www-form-urlencoded`` body as (name, value) pairs in order,
    blank values kept (WHATWG URL §5.1; bytes outside percent-escapes read as Latin-1,
    escapes as UTF-8 with replacement, as Starlette's form parser does).
    InvalidRequestError with more than :data:`MAX_FIELDS` fields."""
    try:
        return parse_qsl(body.decode("latin-1"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        raise InvalidRequestError(f"more than {MAX_FIELDS} parameters") from None


async def answer(state: AppState, *, content_type: str, authorization: str | None, dpop: list[str],
                 client_ip: str | None, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A token request's answer: status, JSON body, headers (RFC 6749 §5.1 / §5.2)."""
    items: list[tuple[str, str]] = []
    result: dict[str, object] | None = None
    error: OAuth2Error | None = None
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != FORM_CONTENT_TYPE:
        error = InvalidRequestError(f"the request body must be {FORM_CONTENT_TYPE}")
    else:
        try:
            items = parse_form(body)
        except InvalidRequestError as exc:
            error = exc
    batched = audit.batching_for(state.session_factory)
    if error is not None:
        if batched:
            _audit_token(state, client_ip, authorization, items, error.error)
        else:
            await anyio.to_thread.run_sync(_audit_token, state, client_ip, authorization, items, error.error)
    elif _secret_grant(authorization, items, dpop):
        lanes = _lanes(state)
        try:
            if not batched or state.settings.signing_alg not in INLINE_SIGNING_ALGS:
                raise WouldBlock
            result, error = _outcome(lambda: _process(state, lanes.offline, authorization, client_ip, items, dpop))
            _audit_token(state, client_ip, authorization, items, error.error if error is not None else None)
        except WouldBlock:
            result, error = await anyio.to_thread.run_sync(_respond, state, authorization, client_ip, items, dpop,
                                                           limiter=lanes.secret)
    else:
        result, error = await anyio.to_thread.run_sync(_respond, state, authorization, client_ip, items, dpop)
    if error is not None:
        # Never log the request: it carries secrets, codes and verifiers.
        log.info("token request refused: %s", error.error)
        return error.status_code, error.to_dict(), error.headers()
    assert result is not None
    return 200, result, dict(NO_STORE_HEADERS)


def _json(content: dict[str, Any]) -> bytes:
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class TokenEndpoint:
    """ASGI: answers ``POST`` :data:`TOKEN_ENDPOINT_PATH` itself (see the module
    docstring); every other request goes to ``app``. A body over
    :data:`MAX_BODY_BYTES` is 413 ``invalid_request``."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != TOKEN_ENDPOINT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        content_type, authorization, dpop = "", None, []
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"dpop":
                dpop.append(value.decode("latin-1"))
        client = scope.get("client")
        body = await _read_body(receive)
        if body is None:
            error = InvalidRequestError(f"the request body is larger than {MAX_BODY_BYTES} bytes")
            status, content, headers = 413, error.to_dict(), error.headers()
        else:
            try:
                status, content, headers = await answer(
                    self.state, content_type=content_type, authorization=authorization, dpop=dpop,
                    client_ip=client[0] if client else None, body=body)
            except Exception:  # what Starlette's ServerErrorMiddleware would do, as JSON
                log.exception("token endpoint failed")
                status, content, headers = 500, {"error": "server_error"}, dict(NO_STORE_HEADERS)
        payload = _json(content)
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
               *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": payload})


async def _read_body(receive: Receive) -> bytes | None:
    """The request body, or None once it passes :data:`MAX_BODY_BYTES`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


@router.post(TOKEN_ENDPOINT_PATH)
async def token(request: Request) -> Response:
    """The same endpoint through FastAPI (documented in the OpenAPI document); in the app
    :class:`TokenEndpoint` answers first."""
    body = await request.body()
    status, content, headers = await answer(
        AppState.of(request), content_type=request.headers.get("content-type", ""),
        authorization=request.headers.get("authorization"), dpop=request.headers.getlist("dpop"),
        client_ip=request.client.host if request.client else None, body=body)
    return JSONResponse(content, status_code=status, headers=headers)


__all__ = ["FORM_CONTENT_TYPE", "MAX_BODY_BYTES", "TOKEN_ENDPOINT_PATH", "TokenEndpoint", "WouldBlock", "answer",
           "error_response", "parse_form", "router"]
