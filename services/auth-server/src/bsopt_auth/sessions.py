"""Authorization-server sessions (OIDC Core §3.1.2.3-§3.1.2.6) and the authentication
parameters ``prompt`` / ``max_age`` (§3.1.2.1).

After the password is checked the browser gets a session cookie :func:`cookie_name`
(``__Host-bsopt_session``, ``Secure`` under an https issuer; ``HttpOnly``,
``SameSite=Lax`` so the top-level GET of a client's next authorization request carries
it, ``Path=/``): 32 random bytes, base64url. The server keeps ``auth.sessions``
(:class:`~bsopt_auth.models.AuthSession`) keyed by the cookie's SHA-256: user,
``auth_time``, ``last_seen_at`` (idle lifetime ``session_idle_ttl_seconds``, sliding),
``expires_at`` (absolute ``session_absolute_ttl_seconds`` from the sign-in), ``ended_at``.

A session is *usable* while not ended, not idle- or absolutely expired, and its user is
not disabled (``users.disabled_at``, when the column exists). A usable session lets a
later authorization request issue a code without the password unless ``prompt=login``,
or ``max_age`` is older than its ``auth_time``. The codes (and through them the token
families, at the code exchange) remember the session, so RP-initiated logout
(:mod:`bsopt_auth.routes.logout`) revokes their refresh and access tokens.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from bsopt_auth.config import AuthSettings
from bsopt_auth.models import AuthSession, TokenFamily, User
from bsopt_auth.rfc6749.errors import InvalidRequestError, OAuth2Error

_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_-]{43}$")
#: Ended and expired sessions are kept this long (for the record), then deleted.
SESSION_RETENTION = timedelta(days=7)
#: OIDC Core §3.1.2.1 prompt values we act on (``select_account``: one account per
#: session, so it is accepted and means nothing more).
PROMPT_VALUES = ("none", "login", "consent", "select_account")


class LoginRequiredError(OAuth2Error):
    """The Authorization Server requires End-User authentication. This error MAY be
    returned when the prompt parameter value in the Authentication Request is none, but
    the Authentication Request cannot be completed without displaying a user interface for
    End-User authentication. (OIDC Core §3.1.2.6)"""

    error = "login_required"


def cookie_name(settings: AuthSettings) -> str:
    return "__Host-bsopt_session" if settings.base_url.startswith("https://") else "bsopt_session"


def cookie_attributes(settings: AuthSettings) -> dict[str, object]:
    """Keyword arguments of ``Response.set_cookie`` besides the name and value."""
    https = settings.base_url.startswith("https://")
    return {"max_age": settings.session_absolute_ttl_seconds, "path": "/", "secure": https,
            "httponly": True, "samesite": "lax"}


def delete_cookie_attributes(settings: AuthSettings) -> dict[str, object]:
    """Keyword arguments of ``Response.delete_cookie`` (same path and flags as set)."""
    attrs = cookie_attributes(settings)
    attrs.pop("max_age")
    return attrs


def valid_cookie(value: str | None) -> str | None:
    return value if value is not None and _COOKIE_VALUE.fullmatch(value) else None


def session_id_of(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class Authn:
    """The authentication parameters of an authorization request (OIDC Core §3.1.2.1)."""

    prompt: frozenset[str]
    max_age: int | None

    @classmethod
    def parse(cls, params: dict[str, str]) -> Authn:
        """Raises :class:`InvalidRequestError` for an unknown prompt value, ``none`` with
        another value, or a ``max_age`` that is not a non-negative integer."""
        values = (params.get("prompt") or "").split()
        unknown = [v for v in values if v not in PROMPT_VALUES]
        if unknown:
            raise InvalidRequestError("unsupported prompt value: " + " ".join(unknown[:5])[:100])
        if "none" in values and len(set(values)) > 1:
            raise InvalidRequestError("prompt=none must not be combined with other values")
        raw = params.get("max_age")
        max_age = None
        if raw is not None and raw != "":
            if not raw.isascii() or not raw.isdigit() or len(raw) > 10:
                raise InvalidRequestError("max_age must be a non-negative integer (seconds)")
            max_age = int(raw)
        return cls(frozenset(values), max_age)


@dataclass(frozen=True)
class SessionInfo:
    """A usable session, detached from the database session."""

    id: str
    user_id: uuid.UUID
    auth_time: datetime


def _user_disabled(session: Session, user_id: uuid.UUID) -> bool:
    disabled_at = getattr(User, "disabled_at", None)  # users.disabled_at (revision 0007)
    if disabled_at is None:
        return False
    return session.scalar(select(disabled_at).where(User.id == user_id)) is not None


def find_session(session: Session, settings: AuthSettings, cookie: str | None, *, touch: bool = True,
                 now: datetime | None = None) -> SessionInfo | None:
    """The usable session of ``cookie`` (see the module docstring), else None. ``touch``
    moves ``last_seen_at`` (the idle lifetime slides)."""
    if valid_cookie(cookie) is None:
        return None
    assert cookie is not None
    now = now or datetime.now(UTC)
    row = session.get(AuthSession, session_id_of(cookie))
    if (row is None or row.ended_at is not None or row.expires_at <= now
            or row.last_seen_at + timedelta(seconds=settings.session_idle_ttl_seconds) <= now
            or _user_disabled(session, row.user_id)):
        return None
    if touch:
        row.last_seen_at = now
        session.flush()
    return SessionInfo(row.id, row.user_id, row.auth_time)


def start_session(session: Session, settings: AuthSettings, user_id: uuid.UUID,
                  previous_cookie: str | None = None) -> tuple[str, SessionInfo]:
    """A new session for ``user_id`` (always a new cookie value: no session fixation);
    the browser's previous session, if any, ends. Returns the cookie value and the
    session."""
    now = datetime.now(UTC)
    session.execute(delete(AuthSession).where(AuthSession.expires_at < now - SESSION_RETENTION))
    if valid_cookie(previous_cookie) is not None:
        assert previous_cookie is not None
        end_session(session, session_id_of(previous_cookie), revoke_tokens=False, now=now)
    cookie = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    row = AuthSession(id=session_id_of(cookie), user_id=user_id, auth_time=now, last_seen_at=now,
                      expires_at=now + timedelta(seconds=settings.session_absolute_ttl_seconds))
    session.add(row)
    session.flush()
    return cookie, SessionInfo(row.id, user_id, now)


def end_session(session: Session, session_id: str, *, revoke_tokens: bool = True,
                now: datetime | None = None) -> int:
    """End the session (idempotent); with ``revoke_tokens`` revoke every token family
    issued within it. Returns the number of families revoked."""
    now = now or datetime.now(UTC)
    session.execute(
        update(AuthSession).where(AuthSession.id == session_id, AuthSession.ended_at.is_(None))
        .values(ended_at=now)
    )
    if not revoke_tokens:
        return 0
    result = session.execute(
        update(TokenFamily).where(TokenFamily.session_id == session_id, TokenFamily.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def satisfies(info: SessionInfo, authn: Authn, now: datetime | None = None) -> bool:
    """Whether the session may stand in for the password in this request: not with
    ``prompt=login``, and not when ``auth_time`` is older than ``max_age``."""
    if "login" in authn.prompt:
        return False
    if authn.max_age is not None:
        now = now or datetime.now(UTC)
        if (now - info.auth_time).total_seconds() > authn.max_age:
            return False
    return True


__all__ = [
    "PROMPT_VALUES",
    "Authn",
    "LoginRequiredError",
    "SessionInfo",
    "cookie_attributes",
    "cookie_name",
    "delete_cookie_attributes",
    "end_session",
    "find_session",
    "satisfies",
    "session_id_of",
    "start_session",
    "valid_cookie",
]
