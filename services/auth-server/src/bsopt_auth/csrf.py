"""CSRF protection of the login form (RFC 6749 §10.12, RFC 9700 §4.4.1.8 login CSRF).

Design: the OWASP *signed double-submit cookie*, bound to the pending authorization
request, so no server-side session is needed and every replica can check any form:

- a cookie :func:`cookie_name` (``__Host-`` prefixed, ``Secure`` and ``Path=/`` when the
  issuer is https; ``Path=/authorize`` otherwise), ``HttpOnly``, ``SameSite=Strict``,
  holding 32 random bytes (base64url), kept across forms while it is well formed;
- the form's hidden ``csrf_token``: ``<issued_at>.<base64url HMAC-SHA256(csrf key,
  "v1" | cookie | issued_at | SHA-256 of the authorization request's parameters)>``.

A POST is accepted only with both, matching (constant-time), issued at most
``login_form_ttl_seconds`` ago. A cross-site page can neither read nor set the cookie, and
a token copied from another request (other client, redirect URI, state, PKCE challenge)
or another browser does not match. The key is ``csrf_secret`` (or derived from the
key-encryption key), shared by every replica.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable

from bsopt_auth.config import AuthSettings

#: Name of the hidden form field.
FIELD = "csrf_token"
_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_-]{43}$")
#: Tokens from this far in the future (clock skew between replicas) still count, seconds.
_SKEW_SECONDS = 60


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def cookie_name(settings: AuthSettings) -> str:
    return "__Host-bsopt_login_csrf" if settings.base_url.startswith("https://") else "bsopt_login_csrf"


def cookie_attributes(settings: AuthSettings) -> dict[str, object]:
    """Keyword arguments of ``Response.set_cookie`` besides the name and value."""
    https = settings.base_url.startswith("https://")
    return {"max_age": settings.login_form_ttl_seconds, "path": "/" if https else "/authorize",
            "secure": https, "httponly": True, "samesite": "strict"}


def valid_cookie(value: str | None) -> str | None:
    """``value`` when it is a well-formed cookie value, else None."""
    return value if value is not None and _COOKIE_VALUE.fullmatch(value) else None


def new_cookie() -> str:
    return _b64(secrets.token_bytes(32))


def _binding(request_fields: Iterable[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(request_fields):
        digest.update(f"{len(name)}:{name}{len(value)}:{value}".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _mac(settings: AuthSettings, cookie: str, issued_at: int, binding: str) -> str:
    message = f"v1|{cookie}|{issued_at}|{binding}".encode()
    return _b64(hmac.new(settings.derived_secret("csrf"), message, hashlib.sha256).digest())


def issue_token(settings: AuthSettings, cookie: str, request_fields: Iterable[tuple[str, str]],
                *, now: float | None = None) -> str:
    """The hidden field's value for a form showing ``request_fields``."""
    issued_at = int(time.time() if now is None else now)
    return f"{issued_at}.{_mac(settings, cookie, issued_at, _binding(request_fields))}"


def check_token(settings: AuthSettings, cookie: str | None, token: str | None,
                request_fields: Iterable[tuple[str, str]], *, now: float | None = None) -> bool:
    """Whether ``token`` was issued for this cookie and request, and is still fresh."""
    if valid_cookie(cookie) is None or not token or len(token) > 128:
        return False
    issued, sep, mac = token.partition(".")
    if not sep or not issued.isdigit() or len(issued) > 12:
        return False
    issued_at = int(issued)
    current = time.time() if now is None else now
    if not (current - settings.login_form_ttl_seconds <= issued_at <= current + _SKEW_SECONDS):
        return False
    assert cookie is not None
    expected = _mac(settings, cookie, issued_at, _binding(request_fields))
    return hmac.compare_digest(expected.encode(), mac.encode("utf-8", "surrogatepass"))


__all__ = ["FIELD", "check_token", "cookie_attributes", "cookie_name", "issue_token", "new_cookie",
           "valid_cookie"]
