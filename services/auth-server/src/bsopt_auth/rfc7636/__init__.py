"""RFC 7636: Proof Key for Code Exchange. Only ``S256`` is accepted (OAuth 2.1 §4.1.1)."""

from __future__ import annotations

import hmac
import re

from authlib.oauth2.rfc7636 import create_s256_code_challenge

from bsopt_auth.rfc6749.errors import InvalidGrantError, InvalidRequestError

SUPPORTED_METHODS = ("S256",)

#: RFC 7636 §4.1: code-verifier = 43*128unreserved
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
#: S256 challenges are BASE64URL(SHA256(verifier)) without padding: exactly 43 characters.
_S256_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")


def validate_code_challenge(code_challenge: str | None, method: str | None) -> None:
    """Authorization request checks; raises :class:`InvalidRequestError`.

    A missing ``code_challenge_method`` means ``plain`` (RFC 7636 §4.3), which is refused.
    """
    if not code_challenge:
        raise InvalidRequestError("code_challenge is required (PKCE)")
    if (method or "plain") not in SUPPORTED_METHODS:
        raise InvalidRequestError("code_challenge_method must be S256")
    if not _S256_CHALLENGE.match(code_challenge):
        raise InvalidRequestError("code_challenge is malformed")


def verify_code_verifier(code_verifier: str | None, code_challenge: str, method: str) -> None:
    """Token request check (RFC 7636 §4.6); raises :class:`InvalidGrantError` on mismatch."""
    if not code_verifier:
        raise InvalidRequestError("code_verifier is required")
    if not _VERIFIER.match(code_verifier):
        raise InvalidGrantError("code_verifier is malformed")
    if method != "S256":  # never stored, but refuse rather than fall back to plain
        raise InvalidGrantError("unsupported code_challenge_method")
    computed = create_s256_code_challenge(code_verifier)
    if not hmac.compare_digest(computed.encode(), code_challenge.encode()):
        raise InvalidGrantError("code_verifier does not match the code_challenge")


__all__ = [
    "SUPPORTED_METHODS",
    "create_s256_code_challenge",
    "validate_code_challenge",
    "verify_code_verifier",
]
