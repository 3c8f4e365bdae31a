"""POST /oauth2/token: the token endpoint."""

from __future__ import annotations

import logging

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from bsopt_auth import audit
from bsopt_auth.rfc6749.errors import NO_STORE_HEADERS, InvalidClientError, InvalidRequestError, OAuth2Error
from bsopt_auth.rfc6749.token import handle_token_request
from bsopt_auth.routes.state import AppState
from bsopt_auth.throttle import ClientAuthGuard

log = logging.getLogger(__name__)
router = APIRouter()

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def _audit_token(state: AppState, request: Request, items: list[tuple[str, str]], error: str | None) -> None:
    """``auth.token_issued`` / ``auth.token_refused`` (:mod:`bsopt_auth.audit`): grant type,
    claimed client, hashed address, the RFC 6749 §5.2 error; never a credential."""
    grant_type = next((v for k, v in items if k == "grant_type"), "")[:100]
    audit.emit(state.settings, state.session_factory, audit.TOKEN_REFUSED if error else audit.TOKEN_ISSUED,
               outcome="failure" if error else "success", reason=error,
               client_id=audit.claimed_client_id(request.headers.get("authorization"), items),
               ip=request.client.host if request.client else None, details={"grant_type": grant_type})


def error_response(exc: OAuth2Error) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers())


def _process(state: AppState, authorization: str | None, client_ip: str | None, items: list[tuple[str, str]],
             dpop: list[str]) -> dict[str, object]:
    """Throttle check, the grant, the throttle's bookkeeping: blocking work, run in one
    worker-thread hop per request (each hop costs more than the grant's own logic)."""
    # Brute-force limits on client authentication (bsopt_auth.throttle): 429 + Retry-After.
    guard = ClientAuthGuard(state.settings, state.session_factory, authorization, items, client_ip)
    guard.check()
    try:
        body = handle_token_request(state.session_factory, state.settings, authorization, items, dpop)
    except InvalidClientError:
        guard.failed()
        raise
    guard.succeeded()
    return body


def _respond(state: AppState, request: Request, items: list[tuple[str, str]],
             dpop: list[str]) -> tuple[dict[str, object] | None, OAuth2Error | None]:
    authorization = request.headers.get("authorization")
    client_ip = request.client.host if request.client else None
    try:
        body: dict[str, object] | None = _process(state, authorization, client_ip, items, dpop)
        error: OAuth2Error | None = None
    except OAuth2Error as exc:
        body, error = None, exc
    _audit_token(state, request, items, error.error if error is not None else None)
    return body, error


def _lane(request: Request, items: list[tuple[str, str]]) -> anyio.CapacityLimiter | None:
    """The worker-thread limit a token request runs under.

    A ``client_credentials`` grant authenticated by a client secret, without DPoP, needs
    no database round trip while the caches are warm: pure CPU (secret digest, signature).
    Those share **one** worker thread per process: run on many threads at once they
    only fight over the GIL, and that fight, not the work, made the latency tail (p99
    400-600 ms at 16 connections on 2 cores against 23 ms with one thread; BENCHMARKS.md).
    Every other grant writes to the database and keeps the default thread pool (``None``).
    """
    if request.headers.get("dpop") is not None:
        return None
    if any(k == "client_assertion" for k, _ in items) or ("grant_type", "client_credentials") not in items:
        return None
    lane: anyio.CapacityLimiter | None = getattr(request.app.state, "token_secret_lane", None)
    if lane is None:
        lane = request.app.state.token_secret_lane = anyio.CapacityLimiter(1)
    return lane


@router.post("/oauth2/token")
async def token(request: Request) -> JSONResponse:
    state = AppState.of(request)
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    items: list[tuple[str, str]] = []
    if content_type != FORM_CONTENT_TYPE:
        error: OAuth2Error | None = InvalidRequestError(f"the request body must be {FORM_CONTENT_TYPE}")
        body = None
        await run_in_threadpool(_audit_token, state, request, items, error.error)  # type: ignore[union-attr]
    else:
        form = await request.form()
        items = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        body, error = await anyio.to_thread.run_sync(_respond, state, request, items, request.headers.getlist("dpop"),
                                                     limiter=_lane(request, items))
    if error is not None:
        # Never log the request: it carries secrets, codes and verifiers.
        log.info("token request refused: %s", error.error)
        return error_response(error)
    return JSONResponse(body, headers=NO_STORE_HEADERS)


__all__ = ["error_response", "router"]
