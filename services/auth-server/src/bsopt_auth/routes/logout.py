"""GET/POST /oauth2/logout: OpenID Connect RP-Initiated Logout 1.0 (the
``end_session_endpoint``).

- With a valid ``id_token_hint`` (:mod:`bsopt_auth.oidc.logout`) for the signed-in user
  (or with nobody signed in) the session ends at once.
- Otherwise, while a session exists, the user confirms first (§2 / §6: a logout request
  from any site must not sign the user out unasked, logout CSRF): a page whose POST
  carries a CSRF token (:mod:`bsopt_auth.csrf`) bound to the session cookie and the
  logout request; a missing or wrong token is 403 with the page again.
- Logging out ends the session (``ended_at``), clears the cookie and revokes every token
  family issued within the session (refresh tokens fail with ``invalid_grant``, access
  tokens introspect inactive). Then the browser goes to the registered
  ``post_logout_redirect_uri`` with ``state`` (302; 303 after a POST), or sees a
  signed-out page.
- Bad input (unknown client, unregistered redirect URI, a hint we did not issue,
  malformed parameters) is a 400 page, never a redirect.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from bsopt_auth import csrf, sessions
from bsopt_auth.oidc.logout import LogoutRequest, LogoutRequestError, validate_logout_request
from bsopt_auth.pages import render
from bsopt_auth.rfc6749.authorization import add_query
from bsopt_auth.rfc6749.errors import OAuth2Error
from bsopt_auth.rfc6749.parameters import check_parameters
from bsopt_auth.routes.state import AppState
from bsopt_common.db import session_scope

log = logging.getLogger(__name__)
router = APIRouter()

LOGOUT_PATH = "/oauth2/logout"
#: Marks the confirmation form's CSRF binding.
FORM_MARKER = ("form", "logout")
FORM_EXPIRED = "This sign-out form expired or did not come from this site. Please confirm again."


def _error_page(description: str, status_code: int = 400) -> Response:
    return render("error.html", status_code=status_code, error="invalid_request", description=description)


def _confirm_page(state: AppState, req: LogoutRequest, session_cookie: str, *, status_code: int = 200,
                  error: str | None = None) -> Response:
    hidden = sorted(req.params.items())
    token = csrf.issue_token(state.settings, session_cookie, [*hidden, FORM_MARKER])
    return render("logout.html", status_code=status_code, action=state.settings.base_url + LOGOUT_PATH,
                  client_id=req.client_id, hidden=[*hidden, (csrf.FIELD, token)], error=error)


def _logout(state: AppState, items: list[tuple[str, str]], session_cookie: str | None, post: bool) -> Response:
    settings = state.settings
    try:
        check_parameters(items)
    except OAuth2Error as exc:
        return _error_page(exc.description or exc.error)
    form = dict(items)
    with session_scope(state.session_factory) as session:
        try:
            req = validate_logout_request(session, settings, items)
        except LogoutRequestError as exc:
            log.info("logout refused: %s", exc.description)
            return _error_page(exc.description)
        info = sessions.find_session(session, settings, session_cookie, touch=False)
        if info is not None:
            assert session_cookie is not None
            hinted = req.hint is not None and req.hint.subject == str(info.user_id)
            if not hinted:
                if not (post and form.get("confirm") == "yes"):
                    return _confirm_page(state, req, session_cookie)
                if not csrf.check_token(settings, session_cookie, form.get(csrf.FIELD),
                                        [*sorted(req.params.items()), FORM_MARKER]):
                    log.info("logout form refused: missing or wrong CSRF token")
                    return _confirm_page(state, req, session_cookie, status_code=403, error=FORM_EXPIRED)
            revoked = sessions.end_session(session, info.id)
            log.info("session ended by RP-initiated logout client_id=%s user_id=%s families_revoked=%d",
                     req.client_id, info.user_id, revoked)
    if req.post_logout_redirect_uri is not None:
        location = add_query(req.post_logout_redirect_uri, [("state", req.state)])
        response: Response = RedirectResponse(location, status_code=303 if post else 302,
                                              headers={"Cache-Control": "no-store"})
    else:
        response = render("logged_out.html")
    if session_cookie is not None:
        response.delete_cookie(sessions.cookie_name(settings),
                               **sessions.delete_cookie_attributes(settings))  # type: ignore[arg-type]
    return response


@router.get(LOGOUT_PATH)
async def logout_get(request: Request) -> Response:
    state = AppState.of(request)
    items = list(request.query_params.multi_items())
    return await run_in_threadpool(_logout, state, items,
                                   request.cookies.get(sessions.cookie_name(state.settings)), False)


@router.post(LOGOUT_PATH)
async def logout_post(request: Request) -> Response:
    state = AppState.of(request)
    form = await request.form()
    items = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    return await run_in_threadpool(_logout, state, items,
                                   request.cookies.get(sessions.cookie_name(state.settings)), True)


__all__ = ["LOGOUT_PATH", "router"]
