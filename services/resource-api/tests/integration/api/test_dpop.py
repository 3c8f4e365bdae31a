"""DPoP-bound access tokens at resource-api (RFC 9449 §7): the stolen-token attacks.

Proofs are built here with joserfc's raw JWS API, independently of
``bsopt_common.security.dpop`` and ``bsopt_cli.dpop``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import ECKey, RSAKey
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bsopt_common.settings import RESOURCE_API_AUDIENCE


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Holder:
    """A client's DPoP key pair."""

    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256", private=True)
        pub = self.key.as_dict(private=False)
        self.jwk = {k: pub[k] for k in ("crv", "kty", "x", "y")}
        canonical = json.dumps(self.jwk, sort_keys=True, separators=(",", ":")).encode()
        self.jkt = b64(hashlib.sha256(canonical).digest())  # RFC 7638, by hand

    def proof(self, htm: str, htu: str, token: str | None, **over: Any) -> str:
        claims: dict[str, Any] = {"jti": secrets.token_urlsafe(12), "htm": htm, "htu": htu, "iat": int(time.time())}
        if token is not None:
            claims["ath"] = b64(hashlib.sha256(token.encode()).digest())
        claims.update(over)
        claims = {k: v for k, v in claims.items() if v is not None}
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": over.pop("jwk", None) or self.jwk}
        return jws.serialize_compact(header, json.dumps(claims).encode(), self.key, algorithms=["ES256"])


@pytest.fixture
def holder() -> Holder:
    return Holder()


@pytest.fixture
def bound(test_issuer, holder: Holder) -> str:
    return test_issuer.token(aud=RESOURCE_API_AUDIENCE, scope="trades:read training:read", sub="u-dpop",
                             client_id="bsopt-cli", cnf={"jkt": holder.jkt})


def dpop_headers(token: str, proof: str) -> dict[str, str]:
    return {"authorization": f"DPoP {token}", "dpop": proof}


async def test_bound_token_with_its_proof_is_accepted(client, running_api, holder, bound):
    url = running_api.base_url + "/v1/me"
    resp = await client.get("/v1/me?x=1", headers=dpop_headers(bound, holder.proof("GET", url, bound)))
    assert resp.status_code == 200, resp.text
    assert resp.json()["sub"] == "u-dpop"


async def test_stolen_bound_token_as_bearer_is_refused(client, bound):
    resp = await client.get("/v1/me", headers={"authorization": f"Bearer {bound}"})
    assert resp.status_code == 401
    challenge = resp.headers["www-authenticate"]
    assert challenge.startswith("DPoP ") and 'error="invalid_token"' in challenge and "ES256" in challenge


async def test_proof_from_another_key_is_refused(client, running_api, bound):
    thief = Holder()
    url = running_api.base_url + "/v1/me"
    resp = await client.get("/v1/me", headers=dpop_headers(bound, thief.proof("GET", url, bound)))
    assert resp.status_code == 401
    assert 'error="invalid_dpop_proof"' in resp.headers["www-authenticate"]


async def test_replayed_proof_is_refused(client, running_api, holder, bound):
    proof = holder.proof("GET", running_api.base_url + "/v1/me", bound)
    assert (await client.get("/v1/me", headers=dpop_headers(bound, proof))).status_code == 200
    again = await client.get("/v1/me", headers=dpop_headers(bound, proof))
    assert again.status_code == 401
    assert 'error="invalid_dpop_proof"' in again.headers["www-authenticate"]


@pytest.mark.parametrize("htm,path", [("POST", "/v1/me"), ("GET", "/v1/trades"), ("GET", "/v1/me/other")])
async def test_proof_for_another_method_or_url_is_refused(client, running_api, holder, bound, htm, path):
    resp = await client.get("/v1/me", headers=dpop_headers(bound, holder.proof(htm, running_api.base_url + path,
                                                                                   bound)))
    assert resp.status_code == 401
    assert 'error="invalid_dpop_proof"' in resp.headers["www-authenticate"]


async def test_proof_for_another_token_or_without_ath_is_refused(client, running_api, holder, bound, test_issuer):
    url = running_api.base_url + "/v1/me"
    other = test_issuer.token(aud=RESOURCE_API_AUDIENCE, client_id="bsopt-cli", cnf={"jkt": holder.jkt})
    for proof in (holder.proof("GET", url, other), holder.proof("GET", url, None)):
        resp = await client.get("/v1/me", headers=dpop_headers(bound, proof))
        assert resp.status_code == 401, resp.text


async def test_old_proof_private_jwk_and_missing_proof_are_refused(client, running_api, holder, bound):
    url = running_api.base_url + "/v1/me"
    old = holder.proof("GET", url, bound, iat=int(time.time()) - 600)
    private = holder.proof("GET", url, bound, jwk=holder.key.as_dict(private=True))
    for headers in (dpop_headers(bound, old), dpop_headers(bound, private), {"authorization": f"DPoP {bound}"}):
        resp = await client.get("/v1/me", headers=headers)
        assert resp.status_code == 401
        assert 'error="invalid_dpop_proof"' in resp.headers["www-authenticate"]


async def test_rsa_proof_key_works_and_hs256_is_refused(client, running_api, test_issuer):
    rsa = RSAKey.generate_key(2048, private=True)
    pub = rsa.as_dict(private=False)
    jkt = b64(hashlib.sha256(json.dumps({k: pub[k] for k in ("e", "kty", "n")}, sort_keys=True,
                                        separators=(",", ":")).encode()).digest())
    token = test_issuer.token(aud=RESOURCE_API_AUDIENCE, client_id="bsopt-cli", cnf={"jkt": jkt})
    url = running_api.base_url + "/v1/me"
    claims = {"jti": secrets.token_urlsafe(8), "htm": "GET", "htu": url, "iat": int(time.time()),
              "ath": b64(hashlib.sha256(token.encode()).digest())}
    proof = jws.serialize_compact({"typ": "dpop+jwt", "alg": "PS256", "jwk": pub}, json.dumps(claims).encode(), rsa,
                                  algorithms=["PS256"])
    assert (await client.get("/v1/me", headers=dpop_headers(token, proof))).status_code == 200
    from joserfc.jwk import OctKey
    secret = OctKey.generate_key(256)
    hs = jws.serialize_compact({"typ": "dpop+jwt", "alg": "HS256", "jwk": pub},
                               json.dumps({**claims, "jti": "x"}).encode(), secret, algorithms=["HS256"])
    assert (await client.get("/v1/me", headers=dpop_headers(token, hs))).status_code == 401


async def test_unbound_token_as_dpop_is_refused_and_missing_token_is_challenged_with_both(client, running_api,
                                                                                          holder, tokens):
    plain = tokens.user("trades:read")
    resp = await client.get("/v1/me", headers=dpop_headers(plain, holder.proof("GET", running_api.base_url + "/v1/me",
                                                                               plain)))
    assert resp.status_code == 401
    anonymous = await client.get("/v1/me")
    assert anonymous.status_code == 401
    assert "Bearer" in anonymous.headers["www-authenticate"] and 'DPoP algs="' in anonymous.headers["www-authenticate"]
    # an unbound token stays usable as Bearer
    assert (await client.get("/v1/me", headers={"authorization": f"Bearer {plain}"})).status_code == 200


async def test_insufficient_scope_with_dpop_is_403(client, running_api, holder, test_issuer):
    token = test_issuer.token(aud=RESOURCE_API_AUDIENCE, scope="", client_id="bsopt-cli", cnf={"jkt": holder.jkt})
    resp = await client.get("/v1/trades", headers=dpop_headers(token, holder.proof(
        "GET", running_api.base_url + "/v1/trades", token)))
    assert resp.status_code == 403


async def test_websocket_handshake_with_dpop(running_api, holder, bound):
    http_url = running_api.base_url + "/v1/ws/coach"
    async with connect(running_api.ws_url, additional_headers=dpop_headers(bound, holder.proof("GET", http_url,
                                                                                                bound))):
        pass
    with pytest.raises(InvalidStatus) as refused:
        async with connect(running_api.ws_url, additional_headers={"authorization": f"Bearer {bound}"}):
            pass
    assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        async with connect(running_api.ws_url, additional_headers=dpop_headers(bound, Holder().proof(
                "GET", http_url, bound))):
            pass


async def test_nonce_flow_and_public_url(settings_for, test_issuer, holder):
    """With ``dpop_nonce_required`` a proof without the server nonce gets ``use_dpop_nonce``
    and a ``DPoP-Nonce``; ``public_url`` (behind a proxy) is the ``htu`` base."""
    import httpx

    from bsopt_api.app import create_app

    settings = settings_for(dpop_nonce_required=True, public_url="https://api.example.test", consume_events=False)
    app = create_app(settings)
    app.state.token_verifier = _verifier(test_issuer)
    token = test_issuer.token(aud=RESOURCE_API_AUDIENCE, client_id="bsopt-cli", cnf={"jkt": holder.jkt})
    public = "https://api.example.test/v1/me"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://internal:8000") as c:
        first = await c.get("/v1/me", headers=dpop_headers(token, holder.proof("GET", public, token)))
        assert first.status_code == 401
        assert 'error="use_dpop_nonce"' in first.headers["www-authenticate"]
        nonce = first.headers["dpop-nonce"]
        wrong_url = await c.get("/v1/me", headers=dpop_headers(token, holder.proof(
            "GET", "http://internal:8000/v1/me", token, nonce=nonce)))
        assert wrong_url.status_code == 401
        ok = await c.get("/v1/me", headers=dpop_headers(token, holder.proof("GET", public, token, nonce=nonce)))
        assert ok.status_code == 200, ok.text
        stale = await c.get("/v1/me", headers=dpop_headers(token, holder.proof("GET", public, token, nonce="bogus")))
        assert 'error="use_dpop_nonce"' in stale.headers["www-authenticate"]


def _verifier(test_issuer):
    from bsopt_common.security.jwt import AccessTokenVerifier, JWKSCache

    return AccessTokenVerifier(test_issuer.issuer, RESOURCE_API_AUDIENCE, JWKSCache(test_issuer.jwks_url))


async def test_a_proof_replayed_to_another_replica_is_refused(settings_for, token_provider, test_issuer, holder):
    """Two replicas behind one public URL, one database: a proof used at the first is a
    replay at the second (the seen jtis live in ``api.dpop_proof_jtis``, not in a process)."""
    import contextlib

    import httpx

    from bsopt_api.app import create_app
    from bsopt_api.runtime import bootstrap

    settings = settings_for(public_url="https://api.example.test", consume_events=False)
    token = test_issuer.token(aud=RESOURCE_API_AUDIENCE, scope="trades:read", sub="u-replicas", client_id="bsopt-cli",
                              cnf={"jkt": holder.jkt})
    url = "https://api.example.test/v1/me"
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for _ in range(2):
            app = create_app(settings, runtime=bootstrap(settings, token_provider=token_provider("resource-api")))
            await stack.enter_async_context(app.router.lifespan_context(app))
            clients.append(await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replica")))
        first, second = clients
        proof = holder.proof("GET", url, token)
        assert (await first.get("/v1/me", headers=dpop_headers(token, proof))).status_code == 200
        replayed = await second.get("/v1/me", headers=dpop_headers(token, proof))
        assert replayed.status_code == 401, replayed.text
        assert 'error="invalid_dpop_proof"' in replayed.headers["www-authenticate"]
        # a fresh proof still works on either replica
        assert (await second.get("/v1/me", headers=dpop_headers(token, holder.proof("GET", url, token)))
                ).status_code == 200
