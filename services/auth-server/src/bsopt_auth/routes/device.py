"""The Device Authorization Grant's HTTP side (RFC 8628).

``POST /oauth2/device_authorization`` (§3.1-3.2): JSON, client authentication as at the
token endpoint (public clients send ``client_id``), with the same brute-force limits on
client authentication (:class:`bsopt_auth.throttle.ClientAuthGuard`).

``GET/POST /device``: the verification page (§3.3), HTML with the login page's look and
headers. Steps: the user enters the user code (prefilled from
``verification_uri_complete``, §3.3.1); a valid pending code shows the client, the scopes
and the code again (to compare with the device's, §5.4) with a sign-in form and
"approve" / "deny"; approving needs the user's password, denying does not. Hygiene on
every decision POST, as on the login form (:mod:`bsopt_auth.routes.authorize`): ``Origin``
must be the issuer's when present (403), a CSRF token (signed double-submit cookie of
:mod:`bsopt_auth.csrf`, bound to the user code; own cookie, ``Path=/device``) must
match (403 with the form again). Brute-force limits (:mod:`bsopt_auth.throttle`):
wrong user codes count per client IP in scope ``device`` (§5.1, user-code guessing), wrong
passwords per account and IP in scope ``login`` (shared with the login form); a blocked
key is 429 with ``Retry-After``. Wrong, expired or already used codes get the code form
again with a message (400), never a 5xx.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from bsopt_auth import csrf
from bsopt_auth.config import AuthSettings
from bsopt_auth.login import MAX_CREDENTIAL_LENGTH, check_password
from bsopt_auth.pages import render
from bsopt_auth.rfc6749.errors import NO_STORE_HEADERS, InvalidClientError, InvalidRequestError, OAuth2Error
from bsopt_auth.rfc6749.parameters import check_parameters
from bsopt_auth.rfc6749.scope import to_scope_string
from bsopt_auth.rfc8628 import (
    PendingDevice,
    decide,
    device_authorization_request,
    find_pending,
    format_user_code,
    normalize_user_code,
)
from bsopt_auth.routes.authorize import LOGIN_FAILED, _origin
from bsopt_auth.routes.authorize import THROTTLE_SCOPE as LOGIN_THROTTLE_SCOPE
from bsopt_auth.routes.state import AppState
from bsopt_auth.routes.token import FORM_CONTENT_TYPE, error_response
from bsopt_auth.throttle import ClientAuthGuard, Limiter, retry_after_header
from bsopt_common.db import session_scope

log = logging.getLogger(__name__)
router = APIRouter()

#: Throttle scope of wrong user codes (per client IP).
DEVICE_THROTTLE_SCOPE = "device"
BAD_CODE = "That code is not valid, has expired or was already used. Check the code on your device and try again."
FORM_EXPIRED = "This form expired or did not come from this site. Please try again."
VERIFICATION_PATH = "/device"


def _csrf_cookie_name(settings: AuthSettings) -> str:
    return "__Host-bsopt_device_csrf" if settings.base_url.startswith("https://") else "bsopt_device_csrf"


def _csrf_cookie_attributes(settings: AuthSettings) -> dict[str, object]:
    https = settings.base_url.startswith("https://")
    return {**csrf.cookie_attributes(settings), "path": "/" if https else VERIFICATION_PATH}


def _binding(user_code: str) -> list[tuple[str, str]]:
    return [("device_user_code", user_code)]


@router.post("/oauth2/device_authorization")
async def device_authorization(request: Request) -> JSONResponse:
    state = AppState.of(request)
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    try:
        if content_type != FORM_CONTENT_TYPE:
            raise InvalidRequestError(f"the request body must be {FORM_CONTENT_TYPE}")
        form = await request.form()
        items = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        guard = ClientAuthGuard(state.settings, state.session_factory, request.headers.get("authorization"),
                                items, request.client.host if request.client else None)
        await run_in_threadpool(guard.check)
        try:
            body = await run_in_threadpool(
                device_authorization_request, state.session_factory, state.settings,
                request.headers.get("authorization"), items,
            )
        except InvalidClientError:
            await run_in_threadpool(guard.failed)
            raise
        await run_in_threadpool(guard.succeeded)
    except OAuth2Error as exc:
        log.info("device authorization request refused: %s", exc.error)
        return error_response(exc)
    log.info("device authorization started")
    return JSONResponse(body, headers=NO_STORE_HEADERS)


# --------------------------------------------------------------------------- the page


@dataclass(frozen=True)
class DevicePost:
    items: list[tuple[str, str]]
    csrf_cookie: str | None
    client_ip: str | None


def _code_page(settings: AuthSettings, *, user_code: str = "", error: str | None = None, status_code: int = 200,
               headers: dict[str, str] | None = None) -> Response:
    response = render("device.html", status_code=status_code, step="code",
                      action=settings.device_verification_url, user_code=user_code[:64], error=error)
    response.headers.update(headers or {})
    return response


def _confirm_page(settings: AuthSettings, pending: PendingDevice, cookie: str | None, *, status_code: int = 200,
                  error: str | None = None, username: str = "", headers: dict[str, str] | None = None) -> Response:
    cookie = csrf.valid_cookie(cookie) or csrf.new_cookie()
    shown = format_user_code(pending.user_code)
    hidden = [("user_code", shown), (csrf.FIELD, csrf.issue_token(settings, cookie, _binding(pending.user_code)))]
    response = render("device.html", status_code=status_code, step="confirm",
                      action=settings.device_verification_url, user_code=shown, client_id=pending.client_id,
                      scope=to_scope_string(pending.scope), hidden=hidden, error=error, username=username)
    response.set_cookie(_csrf_cookie_name(settings), cookie, **_csrf_cookie_attributes(settings))  # type: ignore[arg-type]
    response.headers.update(headers or {})
    return response


def _done_page(title: str, message: str) -> Response:
    return render("device.html", step="done", title=title, message=message)


def _throttled(wait: float) -> tuple[str, dict[str, str]]:
    retry_after = retry_after_header(wait)
    return (f"Too many failed attempts. Try again in {retry_after} seconds.", {"Retry-After": retry_after})


def _lookup(state: AppState, raw_code: str, client_ip: str | None, cookie: str | None) -> Response:
    """Show the confirmation page for a pending code, else the code form with an error."""
    limiter = Limiter(state.settings, state.session_factory)
    ip_key = limiter.ip_key(DEVICE_THROTTLE_SCOPE, client_ip)
    if (wait := limiter.retry_after([ip_key])) is not None:
        message, headers = _throttled(wait)
        return _code_page(state.settings, user_code=raw_code, error=message, status_code=429, headers=headers)
    code = normalize_user_code(raw_code)
    pending = None
    if code is not None:
        with session_scope(state.session_factory) as session:
            pending = find_pending(session, code)
    if pending is None:
        log.info("device verification: unknown, expired or used user code")
        limiter.record_failure([ip_key], ip_hash=limiter.ip_hash(client_ip))
        return _code_page(state.settings, user_code=raw_code, error=BAD_CODE, status_code=400)
    return _confirm_page(state.settings, pending, cookie)


@router.get(VERIFICATION_PATH)
async def device_page(request: Request) -> Response:
    state = AppState.of(request)
    items = list(request.query_params.multi_items())
    raw = next((v for k, v in items if k == "user_code"), "")
    try:
        check_parameters(items)
    except OAuth2Error:
        return _code_page(state.settings, error=BAD_CODE, status_code=400)
    if not raw:
        return _code_page(state.settings)
    return await run_in_threadpool(_lookup, state, raw, request.client.host if request.client else None,
                                   request.cookies.get(_csrf_cookie_name(state.settings)))


def _decide(state: AppState, post: DevicePost) -> Response:
    settings = state.settings
    form = dict(post.items)
    raw_code = form.get("user_code", "")
    decision = form.get("decision")
    if decision not in ("approve", "deny"):
        return _lookup(state, raw_code, post.client_ip, post.csrf_cookie)

    code = normalize_user_code(raw_code)
    with session_scope(state.session_factory) as session:
        pending = find_pending(session, code) if code is not None else None
    if pending is None:
        return _code_page(settings, user_code=raw_code, error=BAD_CODE, status_code=400)
    username = form.get("username", "")
    password = form.get("password", "")
    shown_username = username[:MAX_CREDENTIAL_LENGTH]
    if not csrf.check_token(settings, post.csrf_cookie, form.get(csrf.FIELD), _binding(pending.user_code)):
        log.info("device verification refused: missing or wrong CSRF token")
        return _confirm_page(settings, pending, post.csrf_cookie, status_code=403, error=FORM_EXPIRED,
                             username=shown_username)

    if decision == "deny":
        with session_scope(state.session_factory) as session:
            decided = decide(session, pending.user_code, approve=False, user_id=None)
        if not decided:
            return _code_page(settings, error=BAD_CODE, status_code=400)
        log.info("device authorization denied client_id=%s", pending.client_id)
        return _done_page("Request denied", "The device was not signed in. You can close this window.")

    limiter = Limiter(settings, state.session_factory)
    account_key = limiter.account_key(LOGIN_THROTTLE_SCOPE, shown_username) if username else None
    keys = [limiter.ip_key(LOGIN_THROTTLE_SCOPE, post.client_ip), *([account_key] if account_key else [])]
    if (wait := limiter.retry_after(keys)) is not None:
        message, headers = _throttled(wait)
        return _confirm_page(settings, pending, post.csrf_cookie, status_code=429, error=message,
                             username=shown_username, headers=headers)

    check = check_password(state.session_factory, username, password)
    subject = check.subject
    decided = False
    if check.user_id is not None:
        with session_scope(state.session_factory) as session:
            decided = decide(session, pending.user_code, approve=True, user_id=check.user_id)
    if check.user_id is None:
        log.info("device verification: sign-in failed client_id=%s", pending.client_id)
        limiter.record_failure(keys, ip_hash=limiter.ip_hash(post.client_ip), subject=subject)
        return _confirm_page(settings, pending, post.csrf_cookie, status_code=401, error=LOGIN_FAILED,
                             username=shown_username)
    if account_key is not None and account_key.key in limiter.seen:
        limiter.reset([account_key])
    if not decided:  # expired or decided elsewhere meanwhile
        return _code_page(settings, error=BAD_CODE, status_code=400)
    log.info("device authorization approved client_id=%s user_id=%s", pending.client_id, subject)
    return _done_page("Device connected", "You are signed in on your device. You can close this window.")


@router.post(VERIFICATION_PATH)
async def device_page_post(request: Request) -> Response:
    state = AppState.of(request)
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != FORM_CONTENT_TYPE:
        return _code_page(state.settings, error=BAD_CODE, status_code=400)
    form = await request.form()
    items = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    try:
        check_parameters(items)
    except OAuth2Error:
        return _code_page(state.settings, error=BAD_CODE, status_code=400)
    origin = request.headers.get("origin")
    if origin is not None and _origin(origin) != _origin(state.settings.issuer or ""):
        log.info("device verification refused: cross-origin POST")
        return render("error.html", status_code=403, error="access_denied",
                      description="The form was submitted from another site.")
    post = DevicePost(items, request.cookies.get(_csrf_cookie_name(state.settings)),
                      request.client.host if request.client else None)
    return await run_in_threadpool(_decide, state, post)


__all__ = ["router"]
