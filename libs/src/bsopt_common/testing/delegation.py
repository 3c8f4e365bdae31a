"""Delegated tokens for backend tests: what a caller acting for a user presents after an
RFC 8693 token exchange (``sub`` = the user, ``client_id`` and ``act`` = the caller)."""

from __future__ import annotations

from typing import Any

from bsopt_common.testing.tokens import TestIssuer


def delegated_token(issuer: TestIssuer, *, user: str, aud: str, scope: str, actor: str = "resource-api",
                    **claims: Any) -> str:
    """A token of ``issuer`` for ``aud`` acting for ``user``: ``act = {"sub": actor}``."""
    return issuer.token(aud=aud, scope=scope, sub=user, client_id=actor, act={"sub": actor}, **claims)
