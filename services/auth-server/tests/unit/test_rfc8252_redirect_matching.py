"""RFC 8252 §7.3 redirect matching, without a server."""

from __future__ import annotations

import pytest

from bsopt_auth.rfc8252 import is_loopback_redirect, match_redirect_uri, redirect_uri_matches

REGISTERED = "http://127.0.0.1/callback"


@pytest.mark.parametrize(
    "requested",
    [
        "http://127.0.0.1/callback",
        "http://127.0.0.1:1/callback",
        "http://127.0.0.1:8080/callback",
        "http://127.0.0.1:65535/callback",
        "http://[::1]:8080/callback",
        "http://[::1]/callback",
    ],
)
def test_loopback_any_port(requested: str) -> None:
    assert redirect_uri_matches(requested, REGISTERED)


@pytest.mark.parametrize(
    "requested",
    [
        "http://localhost:8080/callback",
        "http://127.0.0.1.evil.example:8080/callback",
        "http://127.1:8080/callback",
        "https://127.0.0.1:8080/callback",
        "http://127.0.0.1:8080/Callback",
        "http://127.0.0.1:8080/callback/",
        "http://127.0.0.1:8080/callback?next=x",
        "http://127.0.0.1:8080/callback#x",
        "http://127.0.0.1:0x50/callback",
        "http://127.0.0.1:70000/callback",
        "http://a:b@127.0.0.1:8080/callback",
        "http://127.0.0.1:8080\\@evil.example/callback",
        "//127.0.0.1:8080/callback",
        "callback",
    ],
)
def test_rejected(requested: str) -> None:
    assert not redirect_uri_matches(requested, REGISTERED)


def test_non_loopback_needs_exact_match() -> None:
    registered = "https://app.example.com/cb"
    assert redirect_uri_matches("https://app.example.com/cb", registered)
    assert not redirect_uri_matches("https://app.example.com:8443/cb", registered)
    assert not redirect_uri_matches("https://app.example.com/cb?x=1", registered)


def test_registered_query_must_match() -> None:
    registered = "http://127.0.0.1/cb?tenant=a"
    assert redirect_uri_matches("http://127.0.0.1:9/cb?tenant=a", registered)
    assert not redirect_uri_matches("http://127.0.0.1:9/cb?tenant=b", registered)


def test_match_against_a_list() -> None:
    assert match_redirect_uri("http://127.0.0.1:5/callback", ["https://x.example/cb", REGISTERED])
    assert not match_redirect_uri(None, [REGISTERED])
    assert not match_redirect_uri("", [REGISTERED])
    assert not match_redirect_uri("http://127.0.0.1:5/callback", [])


def test_is_loopback() -> None:
    assert is_loopback_redirect("http://127.0.0.1:1/x")
    assert is_loopback_redirect("http://[::1]:1/x")
    assert not is_loopback_redirect("http://localhost:1/x")
    assert not is_loopback_redirect("https://127.0.0.1:1/x")


def test_a_loopback_uri_registered_with_a_port_matches_exactly():
    registered = "http://127.0.0.1:8000/docs/oauth2-redirect"
    assert redirect_uri_matches(registered, registered)
    assert not redirect_uri_matches("http://127.0.0.1:9999/docs/oauth2-redirect", registered)
    assert not redirect_uri_matches("http://[::1]:8000/docs/oauth2-redirect", registered)
