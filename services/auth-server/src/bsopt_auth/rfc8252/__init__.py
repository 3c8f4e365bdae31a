"""RFC 8252 (OAuth 2.0 for native apps): redirect URI matching with loopback ports.

§7.3: "The authorization server MUST allow any port to be specified at the time of the
request for loopback IP redirect URIs, to accommodate clients that obtain an available
ephemeral port from the operating system at the time of the request." Loopback means
the IP literals ``127.0.0.1`` and ``[::1]`` over ``http``; ``localhost`` is not treated
as loopback (§8.3, OAuth 2.1 §8.4.2). Every other redirect URI must match exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1"})


def _split(uri: str) -> SplitResult | None:
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return None
    return parts


def is_loopback_redirect(uri: str) -> bool:
    parts = _split(uri)
    return (
        parts is not None
        and parts.scheme == "http"
        and parts.hostname in LOOPBACK_HOSTS
        and parts.username is None
        and parts.password is None
        and not parts.fragment
    )


def redirect_uri_matches(requested: str, registered: str) -> bool:
    """True when ``requested`` may be used for a client that registered ``registered``."""
    if "#" in requested:
        return False  # RFC 6749 §3.1.2: the redirection endpoint MUST NOT include a fragment
    if requested == registered:
        return True
    if not (is_loopback_redirect(requested) and is_loopback_redirect(registered)):
        return False
    req, reg = _split(requested), _split(registered)
    assert req is not None and reg is not None
    if reg.port is not None:
        # Only a port-less loopback registration accepts any port (§7.3, native apps); one
        # registered with a port (a browser page such as Swagger UI's redirect) is exact.
        return False
    return (req.path or "/") == (reg.path or "/") and req.query == reg.query


def match_redirect_uri(requested: str | None, registered: Iterable[str]) -> bool:
    """True when ``requested`` matches one of the client's registered redirect URIs."""
    if not requested:
        return False
    return any(redirect_uri_matches(requested, r) for r in registered)


__all__ = ["LOOPBACK_HOSTS", "is_loopback_redirect", "match_redirect_uri", "redirect_uri_matches"]
