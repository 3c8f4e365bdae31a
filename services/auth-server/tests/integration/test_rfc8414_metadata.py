"""RFC 8414 authorization server metadata and OIDC discovery."""

from __future__ import annotations

import pytest

PATHS = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]


@pytest.mark.parametrize("path", PATHS)
async def test_metadata(oauth, settings, path: str) -> None:
    resp = await oauth.client.get(path)
    assert resp.status_code == 200
    meta = resp.json()
    base = settings.issuer
    assert meta["issuer"] == base
    assert meta["authorization_endpoint"] == base + "/authorize"
    assert meta["token_endpoint"] == base + "/oauth2/token"
    assert meta["jwks_uri"] == base + "/.well-known/jwks.json"
    assert meta["userinfo_endpoint"] == base + "/userinfo"
    assert meta["response_types_supported"] == ["code"]
    assert set(meta["grant_types_supported"]) == {
        "authorization_code", "refresh_token", "client_credentials",
        "urn:ietf:params:oauth:grant-type:token-exchange", "urn:ietf:params:oauth:grant-type:device_code",
    }
    assert meta["device_authorization_endpoint"] == base + "/oauth2/device_authorization"
    assert meta["revocation_endpoint"] == base + "/oauth2/revoke"
    assert meta["introspection_endpoint"] == base + "/oauth2/introspect"
    assert "none" in meta["revocation_endpoint_auth_methods_supported"]
    assert "none" not in meta["introspection_endpoint_auth_methods_supported"]
    assert "client_secret_basic" in meta["introspection_endpoint_auth_methods_supported"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert set(meta["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic", "client_secret_post", "private_key_jwt", "none"
    }
    # RFC 7523 assertions: asymmetric algorithms only
    assert set(meta["token_endpoint_auth_signing_alg_values_supported"]) == {
        "ES256", "RS256", "PS256", "EdDSA", "Ed25519"
    }
    assert {"openid", "profile", "trades:read", "kafka:cluster", "broker:orders"} <= set(meta["scopes_supported"])
    assert meta["subject_types_supported"] == ["public"]
    assert "RS256" in meta["id_token_signing_alg_values_supported"]
    assert meta["authorization_response_iss_parameter_supported"] is True


async def test_both_documents_agree(oauth) -> None:
    a, b = [(await oauth.client.get(p)).json() for p in PATHS]
    assert a == b


async def test_endpoints_in_the_metadata_work(oauth, settings) -> None:
    from urllib.parse import urlsplit

    meta = (await oauth.client.get(PATHS[0])).json()
    jwks = await oauth.client.get(urlsplit(meta["jwks_uri"]).path)
    assert jwks.status_code == 200 and jwks.json()["keys"]
    token = await oauth.client.post(urlsplit(meta["token_endpoint"]).path, data={"grant_type": "x"})
    assert token.json()["error"] == "unsupported_grant_type"


async def test_issuer_setting_drives_the_documents(engine, settings) -> None:
    import httpx

    from bsopt_auth.app import create_app

    other = settings.model_copy(update={"issuer": "https://auth.example.com"})
    app = create_app(other, engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c:
        meta = (await c.get(PATHS[1])).json()
    assert meta["issuer"] == "https://auth.example.com"
    assert meta["token_endpoint"] == "https://auth.example.com/oauth2/token"


async def test_health(oauth) -> None:
    assert (await oauth.client.get("/healthz")).json() == {"status": "ok"}
    assert (await oauth.client.get("/readyz")).json() == {"status": "ok"}
