"""Scope strings (RFC 6749 §3.3): space-delimited, case-sensitive, order irrelevant."""

from __future__ import annotations

import re
from collections.abc import Iterable

from bsopt_auth.rfc6749.errors import InvalidScopeError

#: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")

#: Scopes granted only when requested, never as part of the default: ``offline_access``
#: (OIDC Core §11) asks for a refresh token.
EXPLICIT_ONLY_SCOPES = ("offline_access",)


def parse_scope(value: str | None) -> list[str]:
    """Split a scope string, keeping first-seen order and dropping duplicates."""
    if not value:
        return []
    tokens = [t for t in value.split(" ") if t]
    for token in tokens:
        if not _SCOPE_TOKEN.match(token):
            raise InvalidScopeError("malformed scope")
    return list(dict.fromkeys(tokens))


def to_scope_string(tokens: Iterable[str]) -> str:
    return " ".join(dict.fromkeys(tokens))


def resolve_scope(requested: str | None, allowed: Iterable[str]) -> list[str]:
    """The scope to grant: the requested scope when it is a subset of ``allowed``, every
    allowed scope when none was requested (RFC 6749 §3.3 pre-defined default), except
    :data:`EXPLICIT_ONLY_SCOPES`."""
    allowed_list = list(allowed)
    tokens = parse_scope(requested)
    if not tokens:
        default = [s for s in allowed_list if s not in EXPLICIT_ONLY_SCOPES]
        if not default:
            raise InvalidScopeError("no scope is allowed for this client")
        return default
    not_allowed = [t for t in tokens if t not in allowed_list]
    if not_allowed:
        raise InvalidScopeError("scope not allowed for this client: " + " ".join(not_allowed))
    return tokens


__all__ = ["EXPLICIT_ONLY_SCOPES", "parse_scope", "resolve_scope", "to_scope_string"]
