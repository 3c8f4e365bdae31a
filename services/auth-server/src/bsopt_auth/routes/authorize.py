"""GET/POST /authorize: the authorization endpoint with its login form.

Login-form hygiene on the POST, in this order:

- ``Origin`` (RFC 6454; OWASP "verifying origin with standard headers"): when present it
  must be the issuer's origin, else 403 (no form). The login page carries ``<meta
  name="referrer" content="same-origin">`` so browsers send the real origin, not
  ``null``, on the form POST (Fetch §3.1: ``no-referrer`` would make it ``null``).
- CSRF token (:mod:`bsopt_auth.csrf`, signed double-submit cookie bound to the
  authorization request): missing or wrong is 403 with a fresh form (retry works).
- Brute-force limits (:mod:`bsopt_auth.throttle`, scope ``login``: per account and per
  client IP): a blocked or locked key is 429 with ``Retry-After`` and the form; the
  password is not checked then, and the attempt does not count.
- Every redirect answering the POST is 303 See Other (RFC 9700 §4.12: a 307 would make
  the browser re-POST the credentials to the client); the GET's redirects stay 302.

Sessions and consent (:mod:`bsopt_auth.sessions`, :mod:`bsopt_auth.consent`): a correct
password starts a session (cookie). A GET with a usable session issues the code without
the form unless ``prompt=login`` or ``max_age`` asks for a fresh sign-in;
``prompt=none`` without one is ``login_required`` (OIDC Core §3.1.2.6). A client that is
not first-party then shows the consent page (``POST /authorize/consent``, same Origin
and CSRF checks) unless the user already granted the scopes; ``prompt=none`` there is
``consent_required``, deny is ``access_denied``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from bsopt_auth import audit, csrf, sessions
from bsopt_auth.consent import FORM_MARKER, ConsentRequiredError, consent_needed, record_consent
from bsopt_auth.login import MAX_CREDENTIAL_LENGTH, check_password
from bsopt_auth.pages import render
from bsopt_auth.rfc6749.authorization import (
    AuthorizationRedirectError,
    AuthorizationRequest,
    UnsafeRedirectError,
    error_redirect,
    issue_authorization_code,
    success_redirect,
    validate_authorization_request,
)
from bsopt_auth.rfc6749.errors import AccessDeniedError, OAuth2Error
from bsopt_auth.rfc6749.parameters import check_parameters
from bsopt_auth.routes.state import AppState
from bsopt_auth.throttle import Limiter, retry_after_header
from bsopt_common.db import session_scope

log = logging.getLogger(__name__)
router = APIRouter()

LOGIN_FAILED = "Invalid username or password."
FORM_EXPIRED = "This sign-in form expired or did not come from this site. Please sign in again."
#: Throttle scope of the login form's keys.
THROTTLE_SCOPE = "login"


def _origin(url: str) -> str:
    """ASCII serialization of ``url``'s origin (RFC 6454 §6.2): lower-case scheme and host,
    the port only when not the scheme's default. "" when it has none."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return ""
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        return ""
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == {"http": 80, "https": 443}[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


@dataclass(frozen=True)
class LoginPost:
    """What the form handler needs of the HTTP request."""

    items: list[tuple[str, str]]
    csrf_cookie: str | None
    client_ip: str | None
    session_cookie: str | None = None


def _hidden_fields(request: AuthorizationRequest) -> list[tuple[str, str]]:
    fields = list(request.params.items())
    fields += [("resource", r) for r in request.requested_resources]
    return fields


def _login_page(state: AppState, request: AuthorizationRequest, cookie: str | None, *, status_code: int = 200,
                error: str | None = None, username: str = "", headers: dict[str, str] | None = None) -> Response:
    """The form, with a CSRF token for this request and the browser's CSRF cookie (kept
    when well formed, else a new one)."""
    settings = state.settings
    cookie = csrf.valid_cookie(cookie) or csrf.new_cookie()
    hidden = _hidden_fields(request)
    response = render(
        "login.html",
        status_code=status_code,
        action=settings.authorization_endpoint_url,
        client_id=request.client.client_id,
        scope=request.scope_string,
        hidden=[*hidden, (csrf.FIELD, csrf.issue_token(settings, cookie, hidden))],
        error=error,
        username=username,
    )
    response.set_cookie(csrf.cookie_name(settings), cookie, **csrf.cookie_attributes(settings))  # type: ignore[arg-type]
    response.headers.update(headers or {})
    return response


def _consent_page(state: AppState, request: AuthorizationRequest, session_cookie: str, *,
                  status_code: int = 200, error: str | None = None) -> Response:
    """The consent page (:mod:`bsopt_auth.consent`): the client, the scopes, approve or
    deny; its CSRF token is bound to the session cookie and this request."""
    settings = state.settings
    hidden = _hidden_fields(request)
    token = csrf.issue_token(settings, session_cookie, [*hidden, FORM_MARKER])
    return render(
        "consent.html",
        status_code=status_code,
        action=settings.authorization_endpoint_url + "/consent",
        client_id=request.client.client_id,
        scopes=request.scope,
        hidden=[*hidden, (csrf.FIELD, token)],
        error=error,
    )


def _with_session_cookie(state: AppState, response: Response, cookie: str) -> Response:
    response.set_cookie(sessions.cookie_name(state.settings), cookie,
                        **sessions.cookie_attributes(state.settings))  # type: ignore[arg-type]
    return response


def _redirect_error(state: AppState, request: AuthorizationRequest, error: OAuth2Error,
                    status_code: int = 302) -> Response:
    exc = AuthorizationRedirectError(error, request.redirect_uri, request.state)
    return _redirect(error_redirect(exc, state.settings.issuer), status_code)


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


def _redirect(location: str, status_code: int = 302) -> Response:
    return RedirectResponse(location, status_code=status_code, headers={"Cache-Control": "no-store"})


def _see_other(location: str) -> Response:
    """A redirect answering the form POST: 303, so the browser follows with a GET and
    never re-sends the credentials (RFC 9700 §4.12)."""
    return _redirect(location, 303)


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
    return await run_in_threadpool(
        _authorize_in_session, state, req, request.cookies.get(sessions.cookie_name(state.settings)),
        request.cookies.get(csrf.cookie_name(state.settings)),
    )


def _authorize_in_session(state: AppState, req: AuthorizationRequest, session_cookie: str | None,
                          csrf_cookie: str | None) -> Response:
    """The GET after validation: a code from a usable session (OIDC Core §3.1.2.3), the
    consent page, the login form, or ``login_required`` / ``consent_required``."""
    try:
        authn = sessions.Authn.parse(req.params)
    except OAuth2Error as exc:
        return _redirect_error(state, req, exc)
    settings = state.settings
    with session_scope(state.session_factory) as session:
        info = sessions.find_session(session, settings, session_cookie)
        usable = info is not None and sessions.satisfies(info, authn)
        if info is not None and usable:
            if consent_needed(session, req.client, info.user_id, req.scope, forced="consent" in authn.prompt):
                code = None
            else:
                code = issue_authorization_code(
                    session, req, info.user_id, ttl_seconds=settings.authorization_code_ttl_seconds,
                    auth_time=info.auth_time, session_id=info.id,
                )
    if info is None or not usable:
        if "none" in authn.prompt:
            return _redirect_error(state, req, sessions.LoginRequiredError("the user is not signed in"))
        return _login_page(state, req, csrf_cookie)
    assert session_cookie is not None
    if code is None:
        if "none" in authn.prompt:
            return _redirect_error(state, req, ConsentRequiredError("the user has not approved this client"))
        return _consent_page(state, req, session_cookie)
    log.info("authorization code issued from the session client_id=%s user_id=%s",
             req.client.client_id, info.user_id)
    return _redirect(success_redirect(req, code, settings.issuer))


def _login(state: AppState, post: LoginPost) -> Response:
    """Re-validate the request carried by the form, check the CSRF token and the brute-force
    limits, then the credentials; issue a code."""
    items = post.items
    try:
        req = _validate(state, items)
    except UnsafeRedirectError as exc:
        return _error_page(exc.description)
    except AuthorizationRedirectError as exc:
        return _see_other(error_redirect(exc, state.settings.issuer))

    form = dict(items)
    username = form.get("username", "")
    password = form.get("password", "")
    shown_username = username[:MAX_CREDENTIAL_LENGTH]
    if not csrf.check_token(state.settings, post.csrf_cookie, form.get(csrf.FIELD), _hidden_fields(req)):
        log.info("login form refused: missing or wrong CSRF token client_id=%s", req.client.client_id)
        return _login_page(state, req, post.csrf_cookie, status_code=403, error=FORM_EXPIRED,
                           username=shown_username)

    limiter = Limiter(state.settings, state.session_factory)
    account_key = limiter.account_key(THROTTLE_SCOPE, shown_username) if username else None
    keys = [limiter.ip_key(THROTTLE_SCOPE, post.client_ip), *([account_key] if account_key else [])]
    if (wait := limiter.retry_after(keys)) is not None:
        retry_after = retry_after_header(wait)
        log.info("login throttled client_id=%s retry_after=%s", req.client.client_id, retry_after)
        return _login_page(
            state, req, post.csrf_cookie, status_code=429, username=shown_username,
            error=f"Too many failed sign-in attempts. Try again in {retry_after} seconds.",
            headers={"Retry-After": retry_after},
        )

    check = check_password(state.session_factory, username, password)
    subject = check.subject
    code: str | None = None
    new_session: tuple[str, sessions.SessionInfo] | None = None
    if check.user_id is not None:
        with session_scope(state.session_factory) as session:
            new_session = sessions.start_session(session, state.settings, check.user_id, post.session_cookie)
            info = new_session[1]
            forced = "consent" in (req.params.get("prompt") or "").split()
            if not consent_needed(session, req.client, check.user_id, req.scope, forced=forced):
                code = issue_authorization_code(
                    session, req, check.user_id, ttl_seconds=state.settings.authorization_code_ttl_seconds,
                    auth_time=info.auth_time, session_id=info.id,
                )
    if new_session is None:
        log.info("login failed for client_id=%s", req.client.client_id)
        limiter.record_failure(keys, ip_hash=limiter.ip_hash(post.client_ip), subject=subject)
        audit.emit(state.settings, state.session_factory, audit.LOGIN_FAILED, outcome="failure", user_id=subject,
                   client_id=req.client.client_id, ip=post.client_ip, reason="invalid_credentials")
        return _login_page(state, req, post.csrf_cookie, status_code=401, error=LOGIN_FAILED,
                           username=shown_username)
    if account_key is not None and account_key.key in limiter.seen:
        limiter.reset([account_key])  # the IP's record stays (see bsopt_auth.throttle)
    cookie = new_session[0]
    if code is None:
        log.info("login ok, consent asked client_id=%s user_id=%s", req.client.client_id, subject)
        return _with_session_cookie(state, _consent_page(state, req, cookie), cookie)
    log.info("authorization code issued client_id=%s user_id=%s", req.client.client_id, subject)
    audit.emit(state.settings, state.session_factory, audit.LOGIN_SUCCEEDED, outcome="success", user_id=subject,
               client_id=req.client.client_id, ip=post.client_ip)
    return _with_session_cookie(state, _see_other(success_redirect(req, code, state.settings.issuer)), cookie)


async def _form_post(request: Request, state: AppState) -> list[tuple[str, str]] | Response:
    """The POSTed form's fields, or the refusal (malformed, cross-origin)."""
    form = await request.form()
    items = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    if (refused := _malformed(items)) is not None:
        return refused
    origin = request.headers.get("origin")
    if origin is not None and _origin(origin) != _origin(state.settings.issuer or ""):
        log.info("authorization form refused: cross-origin POST path=%s", request.url.path)
        return render("error.html", status_code=403, error="access_denied",
                      description="The sign-in form was submitted from another site.")
    return items


@router.post("/authorize")
async def authorize_post(request: Request) -> Response:
    state = AppState.of(request)
    items = await _form_post(request, state)
    if isinstance(items, Response):
        return items
    post = LoginPost(items, request.cookies.get(csrf.cookie_name(state.settings)),
                     request.client.host if request.client else None,
                     request.cookies.get(sessions.cookie_name(state.settings)))
    return await run_in_threadpool(_login, state, post)


def _consent(state: AppState, items: list[tuple[str, str]], session_cookie: str | None,
             csrf_cookie: str | None) -> Response:
    """The consent page's POST: session, CSRF token, then approve (remember the scopes,
    issue a code) or deny (``access_denied``, RFC 6749 §4.1.2.1)."""
    try:
        req = _validate(state, items)
    except UnsafeRedirectError as exc:
        return _error_page(exc.description)
    except AuthorizationRedirectError as exc:
        return _see_other(error_redirect(exc, state.settings.issuer))
    form = dict(items)
    settings = state.settings
    with session_scope(state.session_factory) as session:
        info = sessions.find_session(session, settings, session_cookie)
        if info is None:  # signed out or expired meanwhile: sign in again
            return _login_page(state, req, csrf_cookie)
        assert session_cookie is not None
        if not csrf.check_token(settings, session_cookie, form.get(csrf.FIELD), [*_hidden_fields(req), FORM_MARKER]):
            log.info("consent form refused: missing or wrong CSRF token client_id=%s", req.client.client_id)
            return _consent_page(state, req, session_cookie, status_code=403, error=FORM_EXPIRED)
        decision = form.get("decision")
        if decision == "deny":
            log.info("consent denied client_id=%s user_id=%s", req.client.client_id, info.user_id)
            return _redirect_error(state, req, AccessDeniedError("the user denied the request"), 303)
        if decision != "approve":
            return _error_page("The consent form has no decision.")
        record_consent(session, req.client.client_id, info.user_id, req.scope)
        code = issue_authorization_code(
            session, req, info.user_id, ttl_seconds=settings.authorization_code_ttl_seconds,
            auth_time=info.auth_time, session_id=info.id,
        )
    log.info("consent given, authorization code issued client_id=%s user_id=%s", req.client.client_id, info.user_id)
    return _see_other(success_redirect(req, code, settings.issuer))


@router.post("/authorize/consent")
async def consent_post(request: Request) -> Response:
    state = AppState.of(request)
    items = await _form_post(request, state)
    if isinstance(items, Response):
        return items
    return await run_in_threadpool(
        _consent, state, items, request.cookies.get(sessions.cookie_name(state.settings)),
        request.cookies.get(csrf.cookie_name(state.settings)),
    )


__all__ = ["router"]
