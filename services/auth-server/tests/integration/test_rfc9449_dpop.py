"""DPoP (RFC 9449) at the token endpoint: proofs, cnf.jkt, key-bound refresh tokens,
nonces and replay. Proofs are built here with joserfc's raw JWS API, independently of
``bsopt_common.security.dpop`` and ``bsopt_cli.dpop``."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import ECKey
from sqlalchemy import text

from bsopt_auth.seed import CLI_CLIENT_ID

TOKEN = "/oauth2/token"
OFFLINE = "openid trades:read offline_access"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Holder:
    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256", private=True)
        pub = self.key.as_dict(private=False)
        self.jwk = {k: pub[k] for k in ("crv", "kty", "x", "y")}
        self.jkt = b64(hashlib.sha256(json.dumps(self.jwk, sort_keys=True, separators=(",", ":")).encode()).digest())

    def proof(self, htu: str, htm: str = "POST", **over: Any) -> str:
        claims: dict[str, Any] = {"jti": secrets.token_urlsafe(12), "htm": htm, "htu": htu, "iat": int(time.time())}
        jwk = over.pop("jwk", None) or self.jwk
        claims.update(over)
        return jws.serialize_compact({"typ": over.pop("typ", "dpop+jwt"), "alg": "ES256", "jwk": jwk},
                                     json.dumps(claims).encode(), self.key, algorithms=["ES256"])


@pytest.fixture
def requires_dpop(engine):
    """bsopt-cli as seeded: dpop_bound_access_tokens (the shared conftest turns it off)."""
    def set_flag(value: bool) -> None:
        with engine.begin() as conn:
            conn.execute(text("UPDATE auth.clients SET dpop_bound_access_tokens = :v WHERE client_id = 'bsopt-cli'"),
                         {"v": value})
    set_flag(True)
    yield
    set_flag(False)


async def post_with_nonce(oauth, data: dict[str, str], holder: Holder, url: str) -> Any:
    """A token request with a proof; the nonce round trip of RFC 9449 §8 first."""
    first = await oauth.client.post(TOKEN, data=data, headers={"DPoP": holder.proof(url)})
    assert first.status_code == 400 and first.json()["error"] == "use_dpop_nonce", first.text
    nonce = first.headers["DPoP-Nonce"]
    return await oauth.client.post(TOKEN, data=data, headers={"DPoP": holder.proof(url, nonce=nonce)}), nonce


async def code_data(oauth, scope: str = OFFLINE) -> dict[str, str]:
    result = await oauth.login(scope=scope)
    assert result.response.status_code == 303, result.response.text
    return {"grant_type": "authorization_code", "code": result.code, "redirect_uri": result.redirect_uri,
            "client_id": CLI_CLIENT_ID, "code_verifier": result.verifier}


async def test_metadata_advertises_dpop_algs(oauth) -> None:
    meta = (await oauth.client.get("/.well-known/oauth-authorization-server")).json()
    assert "ES256" in meta["dpop_signing_alg_values_supported"]
    assert "none" not in meta["dpop_signing_alg_values_supported"]
    assert not any(a.startswith("HS") for a in meta["dpop_signing_alg_values_supported"])


async def test_client_requiring_dpop_without_proof_is_refused(oauth, requires_dpop) -> None:
    resp = await oauth.client.post(TOKEN, data=await code_data(oauth))
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_dpop_proof"


async def test_code_exchange_binds_access_and_refresh_tokens(oauth, settings, requires_dpop) -> None:
    holder, thief = Holder(), Holder()
    url = settings.token_endpoint_url
    resp, nonce = await post_with_nonce(oauth, await code_data(oauth), holder, url)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "DPoP"
    claims = (await oauth.decode(body["access_token"])).claims
    assert claims["cnf"] == {"jkt": holder.jkt}

    refresh = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": CLI_CLIENT_ID}
    # the stolen refresh token: no proof, or a proof by another key, is refused ...
    assert (await oauth.client.post(TOKEN, data=refresh)).json()["error"] == "invalid_dpop_proof"
    stolen = await oauth.client.post(TOKEN, data=refresh, headers={"DPoP": thief.proof(url, nonce=nonce)})
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_dpop_proof", stolen.text
    # ... and burns nothing: the holder still refreshes with its key
    ok = await oauth.client.post(TOKEN, data=refresh, headers={"DPoP": holder.proof(url, nonce=nonce)})
    assert ok.status_code == 200, ok.text
    assert ok.json()["token_type"] == "DPoP"
    assert (await oauth.decode(ok.json()["access_token"])).claims["cnf"] == {"jkt": holder.jkt}


async def test_invalid_proofs_are_refused(oauth, settings, requires_dpop) -> None:
    holder = Holder()
    url = settings.token_endpoint_url
    first = await oauth.client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": "x",
                                                 "client_id": CLI_CLIENT_ID}, headers={"DPoP": holder.proof(url)})
    nonce = first.headers["DPoP-Nonce"]
    bad = [
        holder.proof(url + "/other", nonce=nonce),  # another URL
        holder.proof(url, htm="GET", nonce=nonce),  # another method
        holder.proof(url, nonce=nonce, iat=int(time.time()) - 3600),  # too old
        holder.proof(url, nonce=nonce, typ="JWT"),  # not dpop+jwt
        holder.proof(url, nonce=nonce, jwk=holder.key.as_dict(private=True)),  # private key in the header
        holder.proof(url, nonce=nonce, ath="abc"),  # ath at the token endpoint
        "not.a.proof",
    ]
    for proof in bad:
        resp = await oauth.client.post(TOKEN, data=await code_data(oauth), headers={"DPoP": proof})
        assert resp.status_code == 400, proof
        assert resp.json()["error"] == "invalid_dpop_proof", resp.text
    # the query string does not count in htu
    resp = await oauth.client.post(TOKEN, data=await code_data(oauth),
                                   headers={"DPoP": holder.proof(url + "?a=b", nonce=nonce)})
    assert resp.status_code == 200, resp.text


async def test_replayed_proof_is_refused(oauth, settings, requires_dpop) -> None:
    holder = Holder()
    url = settings.token_endpoint_url
    _, nonce = await post_with_nonce(oauth, await code_data(oauth), holder, url)
    proof = holder.proof(url, nonce=nonce)
    assert (await oauth.client.post(TOKEN, data=await code_data(oauth), headers={"DPoP": proof})).status_code == 200
    again = await oauth.client.post(TOKEN, data=await code_data(oauth), headers={"DPoP": proof})
    assert again.status_code == 400 and again.json()["error"] == "invalid_dpop_proof"
    assert "already used" in again.json()["error_description"]


async def test_stale_nonce_gets_a_new_one(oauth, settings, requires_dpop) -> None:
    holder = Holder()
    resp = await oauth.client.post(TOKEN, data=await code_data(oauth),
                                   headers={"DPoP": holder.proof(settings.token_endpoint_url, nonce="stale")})
    assert resp.status_code == 400 and resp.json()["error"] == "use_dpop_nonce"
    assert resp.headers["DPoP-Nonce"] and resp.headers["Cache-Control"] == "no-store"


async def test_optional_for_other_clients(oauth, settings) -> None:
    """Without the flag a client may send a proof (bound token) or not (bearer token)."""
    plain = await oauth.client.post(TOKEN, data=await code_data(oauth, "openid trades:read"))
    assert plain.status_code == 200 and plain.json()["token_type"] == "Bearer"
    assert "cnf" not in (await oauth.decode(plain.json()["access_token"])).claims
    holder = Holder()
    bound, _ = await post_with_nonce(oauth, await code_data(oauth, "openid trades:read"), holder,
                                     settings.token_endpoint_url)
    assert bound.json()["token_type"] == "DPoP"
