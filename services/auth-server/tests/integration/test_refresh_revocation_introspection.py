"""Refresh tokens (RFC 6749 §6, RFC 9700 §4.14), revocation (RFC 7009) and introspection
(RFC 7662), over real HTTP against real Postgres; refresh, revocation and introspection
also through authlib's httpx OAuth 2 client, an independent implementation."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from sqlalchemy import select

from bsopt_auth.app import create_app
from bsopt_auth.models import Client, RefreshToken, TokenFamily
from bsopt_auth.seed import CLI_CLIENT_ID, dev_client_secret
from bsopt_common.db import session_scope

TOKEN = "/oauth2/token"
REVOKE = "/oauth2/revoke"
INTROSPECT = "/oauth2/introspect"
OFFLINE = "openid trades:read offline_access"
#: A confidential introspecting client of the dev seed.
RS_ID = "resource-api"
RS_SECRET = dev_client_secret(RS_ID)
WEB_ID = "web-app"  # confidential, code flow + refresh tokens (registered below)
NO_REFRESH_ID = "no-refresh-cli"  # public, code flow only


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


@pytest.fixture(scope="module", autouse=True)
def extra_clients(session_factory) -> None:
    """A confidential code-flow client allowed to refresh (it shares resource-api's secret
    hash, so its secret is resource-api's dev secret) and a public client that may not."""
    with session_scope(session_factory) as s:
        rs = s.get_one(Client, RS_ID)
        common: dict[str, Any] = {
            "redirect_uris": ["http://127.0.0.1:53123/callback"],
            "allowed_scopes": ["openid", "trades:read", "offline_access"],
            "allowed_resources": ["urn:bsopt:resource-api"],
            "first_party": True,  # the suite's own: no consent screen (bsopt_auth.consent)
        }
        s.merge(Client(client_id=WEB_ID, client_type="confidential", client_secret_hash=rs.client_secret_hash,
                       token_endpoint_auth_method="client_secret_basic",
                       grant_types=["authorization_code", "refresh_token"], **common))
        s.merge(Client(client_id=NO_REFRESH_ID, client_type="public", token_endpoint_auth_method="none",
                       grant_types=["authorization_code"], **common))


async def refresh(client: httpx.AsyncClient, token: str, client_id: str = CLI_CLIENT_ID,
                  **extra: str) -> httpx.Response:
    return await client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": token,
                                          "client_id": client_id, **extra})


async def introspect(client: httpx.AsyncClient, token: str, **extra: str) -> dict[str, Any]:
    resp = await client.post(INTROSPECT, data={"token": token, **extra}, headers=basic(RS_ID, RS_SECRET))
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    return resp.json()


@pytest.fixture
async def authlib_cli(app, settings) -> AsyncIterator[AsyncOAuth2Client]:
    async with AsyncOAuth2Client(client_id=CLI_CLIENT_ID, token_endpoint_auth_method="none",
                                 transport=httpx.ASGITransport(app=app), base_url=settings.issuer) as c:
        yield c


@pytest.fixture
async def authlib_rs(app, settings) -> AsyncIterator[AsyncOAuth2Client]:
    async with AsyncOAuth2Client(client_id=RS_ID, client_secret=RS_SECRET,
                                 token_endpoint_auth_method="client_secret_basic",
                                 transport=httpx.ASGITransport(app=app), base_url=settings.issuer) as c:
        yield c


# --------------------------------------------------------------------------- issuing


async def test_cli_gets_a_refresh_token_only_with_offline_access(oauth) -> None:
    plain = await oauth.user_tokens(scope="openid trades:read")
    assert "refresh_token" not in plain
    assert "offline_access" not in (await oauth.user_tokens(scope=None))["scope"].split()  # never a default
    body = await oauth.user_tokens(scope=OFFLINE)
    assert len(body["refresh_token"]) >= 43  # 256 bits, base64url
    claims = (await oauth.decode(body["access_token"])).claims
    assert claims["sid"]  # the family id


async def test_refresh_token_stored_as_digest_only(oauth, session_factory) -> None:
    body = await oauth.user_tokens(scope=OFFLINE)
    with session_scope(session_factory) as s:
        hashes = list(s.scalars(select(RefreshToken.token_hash)))
    assert body["refresh_token"] not in hashes and all(len(h) == 64 for h in hashes)


async def test_no_refresh_token_for_client_credentials(oauth) -> None:
    resp = await oauth.client_credentials(RS_ID, resource="urn:bsopt:kafka", scope="kafka:cluster")
    assert resp.status_code == 200 and "refresh_token" not in resp.json()
    refused = await oauth.client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": "x"},
                                      headers=basic(RS_ID, RS_SECRET))
    assert refused.status_code == 400 and refused.json()["error"] == "unauthorized_client"


async def test_client_that_may_not_refresh_is_refused(oauth) -> None:
    result = await oauth.login(client_id=NO_REFRESH_ID, scope=OFFLINE)
    resp = await oauth.exchange(result.code, result.verifier, result.redirect_uri, client_id=NO_REFRESH_ID)
    assert resp.status_code == 200 and "refresh_token" not in resp.json()
    cli_token = (await oauth.user_tokens(scope=OFFLINE))["refresh_token"]
    refused = await refresh(oauth.client, cli_token, client_id=NO_REFRESH_ID)
    assert refused.status_code == 400 and refused.json()["error"] == "unauthorized_client"


# --------------------------------------------------------------------------- refresh


async def test_refresh_rotates_and_keeps_or_narrows_scope_with_authlib(oauth, authlib_cli) -> None:
    first = await oauth.user_tokens(scope=OFFLINE)
    token = await authlib_cli.refresh_token(TOKEN, refresh_token=first["refresh_token"])
    assert token["refresh_token"] != first["refresh_token"]
    assert set(token["scope"].split()) == set(OFFLINE.split())
    assert "id_token" in token
    old = (await oauth.decode(first["access_token"])).claims
    new = (await oauth.decode(token["access_token"])).claims
    assert new["sid"] == old["sid"] and new["sub"] == old["sub"] and new["aud"] == old["aud"]
    assert new["client_id"] == CLI_CLIENT_ID

    narrowed = await refresh(oauth.client, token["refresh_token"], scope="trades:read")
    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.json()["scope"] == "trades:read"
    assert (await oauth.decode(narrowed.json()["access_token"])).claims["aud"] == "urn:bsopt:resource-api"
    # the refresh token keeps the original grant: a later refresh may have all of it again
    wider = await refresh(oauth.client, narrowed.json()["refresh_token"])
    assert set(wider.json()["scope"].split()) == set(OFFLINE.split())
    beyond = await refresh(oauth.client, wider.json()["refresh_token"], scope="trades:write")
    assert beyond.status_code == 400 and beyond.json()["error"] == "invalid_scope"
    # a refused request does not consume the token
    assert (await refresh(oauth.client, wider.json()["refresh_token"])).status_code == 200


async def test_reuse_of_a_rotated_token_revokes_the_family(oauth) -> None:
    first = await oauth.user_tokens(scope=OFFLINE)
    second = (await refresh(oauth.client, first["refresh_token"])).json()
    reused = await refresh(oauth.client, first["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    after = await refresh(oauth.client, second["refresh_token"])
    assert after.status_code == 400 and after.json()["error"] == "invalid_grant"
    for access_token in (first["access_token"], second["access_token"]):
        assert await introspect(oauth.client, access_token) == {"active": False}
    assert await introspect(oauth.client, second["refresh_token"]) == {"active": False}


async def test_twenty_concurrent_refreshes_one_wins_and_the_family_is_revoked(oauth) -> None:
    first = await oauth.user_tokens(scope=OFFLINE)
    responses = await asyncio.gather(*(refresh(oauth.client, first["refresh_token"]) for _ in range(20)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [400] * 19, [r.text for r in responses]
    assert all(r.json()["error"] == "invalid_grant" for r in responses if r.status_code == 400)
    winner = next(r.json() for r in responses if r.status_code == 200)
    late = await refresh(oauth.client, winner["refresh_token"])
    assert late.status_code == 400 and late.json()["error"] == "invalid_grant"
    assert await introspect(oauth.client, winner["access_token"]) == {"active": False}


async def test_confidential_client_must_authenticate_to_refresh(oauth) -> None:
    result = await oauth.login(client_id=WEB_ID, scope="trades:read")  # confidential: no offline_access needed
    resp = await oauth.client.post(TOKEN, headers=basic(WEB_ID, RS_SECRET), data={
        "grant_type": "authorization_code", "code": result.code, "redirect_uri": result.redirect_uri,
        "code_verifier": result.verifier})
    assert resp.status_code == 200, resp.text
    token = resp.json()["refresh_token"]
    anonymous = await refresh(oauth.client, token, client_id=WEB_ID)
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"
    wrong = await oauth.client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": token},
                                    headers=basic(WEB_ID, "wrong"))
    assert wrong.status_code == 401
    # another client presenting it gets invalid_grant, and the token survives
    other = await refresh(oauth.client, token, client_id=CLI_CLIENT_ID)
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant"
    ok = await oauth.client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": token},
                                 headers=basic(WEB_ID, RS_SECRET))
    assert ok.status_code == 200, ok.text
    assert ok.json()["refresh_token"] != token


async def test_unknown_refresh_token_is_invalid_grant(oauth) -> None:
    resp = await refresh(oauth.client, "not-a-token")
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    missing = await oauth.client.post(TOKEN, data={"grant_type": "refresh_token", "client_id": CLI_CLIENT_ID})
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"


async def test_sliding_and_absolute_expiry(oauth, settings, engine, session_factory) -> None:
    short = settings.model_copy(update={"refresh_token_idle_ttl_seconds": 3,
                                        "refresh_token_absolute_ttl_seconds": 5})
    app = create_app(short, engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.issuer) as c:
        short_oauth = type(oauth)(c, short)
        idle = (await short_oauth.user_tokens(scope=OFFLINE))["refresh_token"]  # never used
        rt1 = (await short_oauth.user_tokens(scope=OFFLINE))["refresh_token"]
        t0 = time.monotonic()  # both families were created before t0

        async def at(seconds: float) -> None:
            await asyncio.sleep(max(0.0, t0 + seconds - time.monotonic()))

        await at(1.5)
        rt2 = (await refresh(c, rt1)).json()["refresh_token"]  # sliding: a new idle period
        await at(3.2)  # past rt1's (and idle's) idle expiry, within rt2's
        unused = await refresh(c, idle)
        assert unused.status_code == 400 and unused.json()["error"] == "invalid_grant"  # idle expiry
        resp = await refresh(c, rt2)
        assert resp.status_code == 200, resp.text
        rt3 = resp.json()["refresh_token"]
        assert (await introspect(c, rt3))["active"] is True
        await at(5.3)  # past the absolute lifetime, within rt3's idle period
        assert await introspect(c, rt3) == {"active": False}
        late = await refresh(c, rt3)
        assert late.status_code == 400 and late.json()["error"] == "invalid_grant"


# --------------------------------------------------------------------------- code replay


async def test_code_replay_revokes_the_tokens_issued_from_it(oauth, session_factory) -> None:
    result = await oauth.login(scope=OFFLINE)
    first = await oauth.exchange(result.code, result.verifier, result.redirect_uri)
    assert first.status_code == 200
    tokens = first.json()
    assert (await introspect(oauth.client, tokens["access_token"]))["active"] is True
    replay = await oauth.exchange(result.code, result.verifier, result.redirect_uri)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert await introspect(oauth.client, tokens["access_token"]) == {"active": False}
    assert await introspect(oauth.client, tokens["refresh_token"]) == {"active": False}
    refused = await refresh(oauth.client, tokens["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    sid = (await oauth.decode(tokens["access_token"])).claims["sid"]
    with session_scope(session_factory) as s:
        assert s.scalar(select(TokenFamily.revoked_at).where(TokenFamily.id == sid)) is not None


# --------------------------------------------------------------------------- revocation


async def test_revoke_refresh_token_revokes_the_family_with_authlib(oauth, authlib_cli, authlib_rs) -> None:
    first = await oauth.user_tokens(scope=OFFLINE)
    second = await authlib_cli.refresh_token(TOKEN, refresh_token=first["refresh_token"])
    assert (await authlib_rs.introspect_token(INTROSPECT, token=second["access_token"])).json()["active"]
    resp = await authlib_cli.revoke_token(REVOKE, token=second["refresh_token"], token_type_hint="refresh_token")
    assert resp.status_code == 200 and resp.content == b""
    assert (await authlib_rs.introspect_token(INTROSPECT, token=second["refresh_token"])).json() == {"active": False}
    assert (await authlib_rs.introspect_token(INTROSPECT, token=second["access_token"])).json() == {"active": False}
    refused = await refresh(oauth.client, second["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


async def test_revoke_access_token_is_reflected_in_introspection(oauth, authlib_cli, authlib_rs) -> None:
    body = await oauth.user_tokens(scope=OFFLINE)
    active = (await authlib_rs.introspect_token(INTROSPECT, token=body["access_token"])).json()
    assert active["active"] is True and active["token_type"] == "Bearer"
    assert active["client_id"] == CLI_CLIENT_ID and active["scope"] == body["scope"]
    assert {"sub", "aud", "exp", "iat", "iss", "jti", "sid"} <= set(active)
    # no hint: the refresh-token lookup misses, the access token is found
    resp = await authlib_cli.revoke_token(REVOKE, token=body["access_token"])
    assert resp.status_code == 200
    assert (await authlib_rs.introspect_token(INTROSPECT, token=body["access_token"])).json() == {"active": False}
    # the refresh token (and new access tokens) are untouched
    renewed = await refresh(oauth.client, body["refresh_token"])
    assert renewed.status_code == 200
    assert (await introspect(oauth.client, renewed.json()["access_token"]))["active"] is True


async def test_revocation_answers_200_for_unknown_tokens_and_refuses_bad_requests(oauth) -> None:
    ok = await oauth.client.post(REVOKE, data={"token": "unknown", "client_id": CLI_CLIENT_ID})
    assert ok.status_code == 200
    hint = await oauth.client.post(REVOKE, data={"token": "x", "token_type_hint": "id_token",
                                                 "client_id": CLI_CLIENT_ID})
    assert hint.status_code == 400 and hint.json()["error"] == "unsupported_token_type"
    missing = await oauth.client.post(REVOKE, data={"client_id": CLI_CLIENT_ID})
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    anonymous = await oauth.client.post(REVOKE, data={"token": "x"})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"
    json_body = await oauth.client.post(REVOKE, json={"token": "x", "client_id": CLI_CLIENT_ID})
    assert json_body.status_code == 400 and json_body.json()["error"] == "invalid_request"


async def test_a_client_cannot_revoke_another_clients_tokens(oauth) -> None:
    body = await oauth.user_tokens(scope=OFFLINE)
    for token in (body["refresh_token"], body["access_token"]):
        resp = await oauth.client.post(REVOKE, data={"token": token}, headers=basic(RS_ID, RS_SECRET))
        assert resp.status_code == 200
        assert (await introspect(oauth.client, token))["active"] is True


# --------------------------------------------------------------------------- introspection


async def test_introspection_requires_client_authentication(oauth) -> None:
    body = await oauth.user_tokens(scope=OFFLINE)
    anonymous = await oauth.client.post(INTROSPECT, data={"token": body["access_token"]})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"
    public = await oauth.client.post(INTROSPECT, data={"token": body["access_token"], "client_id": CLI_CLIENT_ID})
    assert public.status_code == 401 and public.json()["error"] == "invalid_client"
    wrong = await oauth.client.post(INTROSPECT, data={"token": body["access_token"]}, headers=basic(RS_ID, "x"))
    assert wrong.status_code == 401 and "active" not in wrong.json()


async def test_introspection_of_refresh_and_unknown_tokens(oauth) -> None:
    body = await oauth.user_tokens(scope=OFFLINE)
    rt = await introspect(oauth.client, body["refresh_token"], token_type_hint="refresh_token")
    assert rt["active"] is True and rt["client_id"] == CLI_CLIENT_ID and rt["scope"] == body["scope"]
    assert rt["aud"] == "urn:bsopt:resource-api" and rt["exp"] > rt["iat"]
    # a wrong hint still finds it (RFC 7662 §2.1)
    assert (await introspect(oauth.client, body["refresh_token"], token_type_hint="access_token"))["active"]
    for token in ("unknown", "a.b.c", body["access_token"][:-4] + "AAAA"):
        assert await introspect(oauth.client, token) == {"active": False}
    cc = (await oauth.client_credentials(RS_ID, resource="urn:bsopt:kafka", scope="kafka:cluster")).json()
    cc = cc["access_token"]
    assert (await introspect(oauth.client, cc))["active"] is True
    # once rotated, the old refresh token is inactive
    await refresh(oauth.client, body["refresh_token"])
    assert await introspect(oauth.client, body["refresh_token"]) == {"active": False}
