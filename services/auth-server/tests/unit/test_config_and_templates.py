"""Settings from the environment and autoescaped HTML."""

from __future__ import annotations

import pytest

from bsopt_auth.config import AuthSettings
from bsopt_auth.pages import render


def test_defaults(monkeypatch) -> None:
    for name in ("BSOPT_AUTH_ISSUER", "BSOPT_AUTH_PORT", "BSOPT_AUTH_HOST"):
        monkeypatch.delenv(name, raising=False)
    s = AuthSettings(_env_file=None)
    assert (s.host, s.port, s.issuer) == ("127.0.0.1", 9000, "http://127.0.0.1:9000")
    assert s.access_token_ttl_seconds == 900 and s.authorization_code_ttl_seconds == 60
    assert s.token_endpoint_url == "http://127.0.0.1:9000/oauth2/token"
    assert s.jwks_uri == "http://127.0.0.1:9000/.well-known/jwks.json"


def test_env_prefix(monkeypatch) -> None:
    monkeypatch.setenv("BSOPT_AUTH_PORT", "9100")
    monkeypatch.setenv("BSOPT_AUTH_ISSUER", "https://auth.example.com/")
    monkeypatch.setenv("BSOPT_AUTH_ACCESS_TOKEN_TTL_SECONDS", "60")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")
    s = AuthSettings(_env_file=None)
    assert s.port == 9100 and s.access_token_ttl_seconds == 60
    assert s.authorization_endpoint_url == "https://auth.example.com/authorize"
    assert s.database_url == "postgresql://u@h/db"


@pytest.mark.parametrize("issuer", ["ftp://x", "https://x/?a=1", "https://x/#f", "not a url"])
def test_issuer_must_be_a_plain_url(issuer: str) -> None:
    with pytest.raises(ValueError):
        AuthSettings(_env_file=None, issuer=issuer)


def test_templates_autoescape() -> None:
    resp = render("error.html", status_code=400, error="<b>", description='"><script>x</script>')
    body = resp.body.decode()
    assert "<script>x" not in body and "&lt;script&gt;" in body
    assert resp.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
