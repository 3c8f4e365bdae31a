"""RFC 8707: resource indicators. A requested ``resource`` becomes the token's ``aud``."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from bsopt_auth.rfc6749.errors import OAuth2Error


class InvalidTargetError(OAuth2Error):
    """The requested resource is invalid, missing, unknown, or malformed.
    (RFC 8707 §2)"""

    error = "invalid_target"


def is_valid_resource(value: str) -> bool:
    """RFC 8707 §2: an absolute URI (RFC 3986 §4.3) that MUST NOT include a fragment."""
    if not value or "#" in value or any(c.isspace() for c in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return bool(parts.scheme) and bool(parts.netloc or parts.path)


def resolve_resources(
    requested: Sequence[str], allowed: Sequence[str], default: str | None = None
) -> list[str]:
    """Return the resources a token is issued for, or raise :class:`InvalidTargetError`.

    Every requested resource must be well formed and among ``allowed``. With none
    requested: ``default`` when given and allowed, else the only allowed resource when the
    client has exactly one, else ``invalid_target``.
    """
    if requested:
        resolved: list[str] = []
        for value in requested:
            if not is_valid_resource(value):
                raise InvalidTargetError("resource must be an absolute URI without a fragment")
            if value not in allowed:
                raise InvalidTargetError("resource not allowed for this client")
            if value not in resolved:
                resolved.append(value)
        return resolved
    if default is not None and default in allowed:
        return [default]
    if len(allowed) == 1:
        return [allowed[0]]
    raise InvalidTargetError("resource is required: this client may obtain tokens for several resources")


__all__ = ["InvalidTargetError", "is_valid_resource", "resolve_resources"]
