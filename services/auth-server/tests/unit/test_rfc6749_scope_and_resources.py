"""Scope (RFC 6749 §3.3) and resource indicator (RFC 8707) resolution."""

from __future__ import annotations

import pytest

from bsopt_auth.rfc6749.client_auth import parse_basic_authorization
from bsopt_auth.rfc6749.errors import InvalidClientError, InvalidScopeError
from bsopt_auth.rfc6749.scope import parse_scope, resolve_scope
from bsopt_auth.rfc8707 import InvalidTargetError, is_valid_resource, resolve_resources

ALLOWED = ["a", "b", "c"]


def test_scope_subset() -> None:
    assert resolve_scope("b a", ALLOWED) == ["b", "a"]
    assert resolve_scope("a  a", ALLOWED) == ["a"]
    assert resolve_scope(None, ALLOWED) == ALLOWED
    with pytest.raises(InvalidScopeError):
        resolve_scope("a d", ALLOWED)
    with pytest.raises(InvalidScopeError):
        parse_scope('a "b')


def test_resources() -> None:
    allowed = ["urn:x:one", "https://api.example/two"]
    assert resolve_resources(["urn:x:one"], allowed) == ["urn:x:one"]
    assert resolve_resources(["urn:x:one", "urn:x:one"], allowed) == ["urn:x:one"]
    assert resolve_resources([], ["urn:x:one"]) == ["urn:x:one"]
    assert resolve_resources([], allowed, default="urn:x:one") == ["urn:x:one"]
    for bad in (["urn:x:three"], ["relative/path"], ["urn:x:one#f"]):
        with pytest.raises(InvalidTargetError):
            resolve_resources(bad, allowed)
    with pytest.raises(InvalidTargetError):
        resolve_resources([], allowed)
    with pytest.raises(InvalidTargetError):
        resolve_resources([], allowed, default="urn:not:allowed")
    assert is_valid_resource("urn:bsopt:kafka")
    assert not is_valid_resource("")


def test_basic_credentials() -> None:
    import base64

    def header(raw: str) -> str:
        return "Basic " + base64.b64encode(raw.encode()).decode()

    assert parse_basic_authorization(header("id:se%3Acret")) == ("id", "se:cret")
    assert parse_basic_authorization(header("a+b:c")) == ("a b", "c")
    for bad in ("Bearer x", "Basic", header("no-colon"), header(":secret"), "Basic ***"):
        with pytest.raises(InvalidClientError):
            parse_basic_authorization(bad)
