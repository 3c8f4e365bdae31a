"""Request parameter sanity shared by the authorization and token endpoints.

A parameter value with a NUL character cannot be stored (Postgres text refuses it) nor
safely echoed, and no OAuth parameter is anywhere near :data:`MAX_PARAMETER_LENGTH`
characters: both are ``invalid_request`` (RFC 6749 §4.1.2.1, §5.2: "otherwise
malformed") before anything looks the values up. The description names the parameter
only when its name is itself short and printable; values are never echoed.
"""

from __future__ import annotations

from collections.abc import Iterable

from bsopt_auth.rfc6749.errors import InvalidRequestError

#: Longest parameter value accepted, characters.
MAX_PARAMETER_LENGTH = 4096
_MAX_NAME_SHOWN = 64


def _shown(name: str) -> str:
    if len(name) <= _MAX_NAME_SHOWN and name.isprintable():
        return f"parameter {name!r}"
    return "a parameter"


def check_parameters(items: Iterable[tuple[str, str]]) -> None:
    """Raise :class:`InvalidRequestError` for a NUL character in a parameter's name or
    value, or a value longer than :data:`MAX_PARAMETER_LENGTH`."""
    for name, value in items:
        if "\x00" in name or "\x00" in value:
            raise InvalidRequestError(f"{_shown(name.replace(chr(0), ''))} contains a NUL (0x00) character")
        if len(value) > MAX_PARAMETER_LENGTH or len(name) > MAX_PARAMETER_LENGTH:
            raise InvalidRequestError(f"{_shown(name)} is longer than {MAX_PARAMETER_LENGTH} characters")


__all__ = ["MAX_PARAMETER_LENGTH", "check_parameters"]
