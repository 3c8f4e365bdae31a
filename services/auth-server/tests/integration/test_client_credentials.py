"""Client credentials grant (RFC 6749 §4.4) with client_secret_basic / client_secret_post
(RFC 6749 §2.3.1) and resource indicators (RFC 8707)."""

from __future__ import annotations

import base64

import pytest

from bsopt_common.settings import (
    BROKER_GATEWAY_AUDIENCE,
    KAFKA_AUDIENCE,
    ML_SCORER_AUDIENCE,
    RL_TRAINER_AUDIENCE,
)


@pytest.mark.parametrize("method", ["basic", "post"])
async def test_client_credentials(oauth, settings, method: str) -> None:
    resp = await oauth.client_credentials("broker-gateway", method=method, scope="kafka:cluster")
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    assert resp.headers["pragma"] == "no-cache"
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.access_token_ttl_seconds
    assert body["scope"] == "kafka:cluster"
    assert "id_token" not in body and "refresh_token" not in body
    token = await oauth.decode(body["access_token"])
    assert token.header["typ"] == "at+jwt"
    claims = token.claims
    assert claims["sub"] == "broker-gateway" and claims["client_id"] == "broker-gateway"
    assert claims["aud"] == KAFKA_AUDIENCE  # the only allowed resource is the default
    assert "auth_time" not in claims


async def test_scope_defaults_to_all_allowed(oauth) -> None:
    resp = await oauth.client_credentials("rl-trainer", resource=KAFKA_AUDIENCE)
    assert resp.status_code == 200
    assert set(resp.json()["scope"].split()) == {"broker:accounts", "broker:orders", "kafka:cluster"}


@pytest.mark.parametrize("audience", [BROKER_GATEWAY_AUDIENCE, ML_SCORER_AUDIENCE, RL_TRAINER_AUDIENCE])
async def test_resource_becomes_aud(oauth, audience: str) -> None:
    resp = await oauth.client_credentials("resource-api", scope="broker:orders", resource=audience)
    assert resp.status_code == 200, resp.text
    assert (await oauth.decode(resp.json()["access_token"])).claims["aud"] == audience


async def test_several_resources_give_an_aud_array(oauth) -> None:
    resp = await oauth.client_credentials(
        "resource-api", scope="broker:orders", resource=[BROKER_GATEWAY_AUDIENCE, ML_SCORER_AUDIENCE]
    )
    assert resp.status_code == 200, resp.text
    aud = (await oauth.decode(resp.json()["access_token"])).claims["aud"]
    assert aud == [BROKER_GATEWAY_AUDIENCE, ML_SCORER_AUDIENCE]


async def test_missing_resource_with_several_allowed_is_invalid_target(oauth) -> None:
    resp = await oauth.client_credentials("resource-api", scope="broker:orders")
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_target"


async def test_resource_not_allowed_is_invalid_target(oauth) -> None:
    resp = await oauth.client_credentials("broker-gateway", resource=ML_SCORER_AUDIENCE)
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_target"
    assert resp.headers["cache-control"] == "no-store"


async def test_malformed_resource_is_invalid_target(oauth) -> None:
    resp = await oauth.client_credentials("broker-gateway", resource="urn:bsopt:kafka#frag")
    assert resp.json()["error"] == "invalid_target"


async def test_scope_not_allowed_is_invalid_scope(oauth) -> None:
    resp = await oauth.client_credentials("broker-gateway", scope="kafka:cluster broker:orders")
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_scope"


@pytest.mark.parametrize("method", ["basic", "post"])
async def test_wrong_secret_is_invalid_client_401(oauth, method: str) -> None:
    resp = await oauth.client_credentials("broker-gateway", "not-the-secret", method=method)
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"
    assert resp.headers["www-authenticate"].startswith("Basic")
    assert resp.headers["cache-control"] == "no-store"


async def test_unknown_client_is_invalid_client(oauth) -> None:
    resp = await oauth.client_credentials("no-such-client", "whatever")
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"


async def test_no_authentication_is_invalid_client(oauth) -> None:
    resp = await oauth.client.post("/oauth2/token", data={"grant_type": "client_credentials"})
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"


async def test_public_client_cannot_use_client_credentials(oauth) -> None:
    resp = await oauth.client.post(
        "/oauth2/token", data={"grant_type": "client_credentials", "client_id": "bsopt-cli"}
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "unauthorized_client"


async def test_two_authentication_methods_is_invalid_request(oauth) -> None:
    basic = base64.b64encode(b"broker-gateway:dev-broker-gateway-secret").decode()
    resp = await oauth.client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": "broker-gateway",
              "client_secret": "dev-broker-gateway-secret"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"


async def test_basic_credentials_are_form_urlencoded(oauth) -> None:
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before base64; "-" needs none,
    # but an encoded form must decode to the same client.
    basic = base64.b64encode(b"broker%2Dgateway:dev%2Dbroker%2Dgateway%2Dsecret").decode()
    resp = await oauth.client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert resp.status_code == 200, resp.text


async def test_malformed_basic_header_is_invalid_client(oauth) -> None:
    resp = await oauth.client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic !!!not-base64"},
    )
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"


async def test_openid_scope_is_not_for_machines(oauth) -> None:
    resp = await oauth.client_credentials("broker-gateway", scope="openid")
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_scope"
