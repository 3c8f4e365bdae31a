"""Client authentication with the service's own key (RFC 7523 ``private_key_jwt``) and
RFC 8693 token exchange, through ``ClientCredentialsTokenProvider.request_token`` against
the test issuer's token endpoint over real HTTP; and what :func:`load_signing_key`
refuses."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from bsopt_common.security import (
    ClientCredentialsTokenProvider,
    SigningKeyError,
    TokenRequestError,
    generate_signing_key,
    load_signing_key,
    private_jwk_json,
    public_jwks,
)
from bsopt_common.security.jwt import AccessTokenVerifier, JWKSCache
from bsopt_common.security.token_provider import CLIENT_ASSERTION_TYPE

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"


def claims_of(token: str) -> dict:
    seg = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))


def header_of(token: str) -> dict:
    seg = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))


# --------------------------------------------------------------------------- private_key_jwt


async def test_private_key_jwt_gets_a_token_from_the_issuer(test_issuer):
    key = test_issuer.service_key("digest-worker")
    provider = ClientCredentialsTokenProvider(test_issuer.token_url, "digest-worker", signing_key=key)
    verifier = AccessTokenVerifier(test_issuer.issuer, "urn:bsopt:ml-scorer", JWKSCache(test_issuer.jwks_url))
    accepted = test_issuer.assertions_accepted
    try:
        claims = await verifier.verify(await provider.token("urn:bsopt:ml-scorer", "scorer:read"), ("scorer:read",))
        assert (claims.client_id, claims.subject) == ("digest-worker", "digest-worker")
        assert test_issuer.assertions_accepted == accepted + 1
        assert provider.auth_method == "private_key_jwt"
    finally:
        await provider.aclose()
        await verifier.jwks.aclose()


async def test_the_request_carries_a_fresh_assertion_and_no_basic_auth(test_issuer):
    """The exact form: client_id, client_assertion_type, a new client_assertion per request."""
    seen: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        seen.append(request)

    key = test_issuer.service_key("digest-worker")
    client = httpx.AsyncClient(event_hooks={"request": [record]})
    provider = ClientCredentialsTokenProvider(test_issuer.token_url, "digest-worker", signing_key=key,
                                              http_client=client)
    try:
        await provider.token("urn:bsopt:a")
        await provider.token("urn:bsopt:b")
    finally:
        await client.aclose()
    forms = [dict(httpx.QueryParams(r.content.decode())) for r in seen]
    assert all("authorization" not in r.headers for r in seen)
    assert [f["client_assertion_type"] for f in forms] == [CLIENT_ASSERTION_TYPE] * 2
    assert [f["client_id"] for f in forms] == ["digest-worker"] * 2
    assertions = [f["client_assertion"] for f in forms]
    first = claims_of(assertions[0])
    assert (first["iss"], first["sub"], first["aud"]) == ("digest-worker", "digest-worker", test_issuer.token_url)
    assert first["exp"] - first["iat"] == 60 and abs(first["iat"] - time.time()) < 10
    assert claims_of(assertions[1])["jti"] != first["jti"]
    assert header_of(assertions[0])["kid"] == key.kid and header_of(assertions[0])["alg"] == "ES256"
    # the issuer verifies it: the signature, and with the client's public key only
    jwt.decode(assertions[0], ECKey.import_key(key.as_dict(private=False)))


async def test_an_unregistered_key_or_a_replayed_assertion_is_refused(test_issuer):
    provider = ClientCredentialsTokenProvider(test_issuer.token_url, "digest-worker",
                                              signing_key=generate_signing_key())
    try:
        with pytest.raises(TokenRequestError, match="invalid_client"):
            await provider.token("urn:bsopt:ml-scorer")
    finally:
        await provider.aclose()
    # another client's registered key does not authenticate this one
    provider = ClientCredentialsTokenProvider(test_issuer.token_url, "no-keys-client",
                                              signing_key=test_issuer.service_key("ml-scorer"))
    try:
        with pytest.raises(TokenRequestError, match="invalid_client"):
            await provider.token("urn:bsopt:ml-scorer")
    finally:
        await provider.aclose()
    # a captured assertion cannot be used twice
    good = ClientCredentialsTokenProvider(test_issuer.token_url, "digest-worker",
                                          signing_key=test_issuer.service_key("digest-worker"))
    assertion = good.client_assertion()
    form = {"grant_type": "client_credentials", "resource": "urn:bsopt:x", "client_id": "digest-worker",
            "client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": assertion}
    async with httpx.AsyncClient() as client:
        assert (await client.post(test_issuer.token_url, data=form)).status_code == 200
        replay = await client.post(test_issuer.token_url, data=form)
        assert replay.status_code == 401 and replay.json()["error"] == "invalid_client"
        # an assertion for another audience
        other = ClientCredentialsTokenProvider(test_issuer.token_url, "digest-worker",
                                               signing_key=test_issuer.service_key("digest-worker"),
                                               assertion_audience="https://elsewhere.example/token")
        wrong_aud = await client.post(test_issuer.token_url,
                                      data={**form, "client_assertion": other.client_assertion()})
        assert wrong_aud.status_code == 401


def test_exactly_one_credential_and_nothing_secret_in_repr():
    key = generate_signing_key()
    with pytest.raises(ValueError, match="exactly one"):
        ClientCredentialsTokenProvider("http://x/token", "c")
    with pytest.raises(ValueError, match="exactly one"):
        ClientCredentialsTokenProvider("http://x/token", "c", "secret", signing_key=key)
    with pytest.raises(ValueError):
        ClientCredentialsTokenProvider("http://x/token", "c", signing_key=ECKey.import_key(key.as_dict()))
    with pytest.raises(ValueError):
        ClientCredentialsTokenProvider("http://x/token", "c", signing_key=OctKey.generate_key(256))
    provider = ClientCredentialsTokenProvider("http://x/token", "c", signing_key=key)
    d = key.as_dict(private=True)["d"]
    assert d not in repr(provider) and "private_key_jwt" in repr(provider)
    secret = ClientCredentialsTokenProvider("http://x/token", "c", "s3cret-value")
    assert "s3cret-value" not in repr(secret) and secret.auth_method == "client_secret_basic"


async def test_client_secret_still_works(test_issuer):
    provider = ClientCredentialsTokenProvider(test_issuer.token_url, "ml-scorer", "dev-ml-scorer-secret")
    try:
        assert claims_of(await provider.token("urn:bsopt:x", "a"))["client_id"] == "ml-scorer"
    finally:
        await provider.aclose()


# --------------------------------------------------------------------------- token exchange


async def test_token_exchange_through_request_token(test_issuer):
    provider = ClientCredentialsTokenProvider(test_issuer.token_url, "resource-api",
                                              signing_key=test_issuer.service_key("resource-api"))
    user_token = test_issuer.token(aud="urn:bsopt:resource-api", scope="trades:read", sub="user-7",
                                   client_id="bsopt-web", ttl_seconds=120)
    before = test_issuer.exchange_requests
    try:
        body = await provider.request_token({
            "grant_type": EXCHANGE, "subject_token": user_token, "subject_token_type": ACCESS_TOKEN,
            "resource": "urn:bsopt:rl-trainer", "scope": "trainer:jobs.read"}, what="an exchanged token")
        assert body["issued_token_type"] == ACCESS_TOKEN and body["scope"] == "trainer:jobs.read"
        verifier = AccessTokenVerifier(test_issuer.issuer, "urn:bsopt:rl-trainer", JWKSCache(test_issuer.jwks_url))
        claims = await verifier.verify(body["access_token"], ("trainer:jobs.read",))
        await verifier.jwks.aclose()
        assert (claims.subject, claims.client_id, claims.actor) == ("user-7", "resource-api", ("resource-api",))
        assert claims.expires_at <= claims_of(user_token)["exp"]

        # re-exchange by rl-trainer: the act chain nests
        trainer = ClientCredentialsTokenProvider(test_issuer.token_url, "rl-trainer", "secret")
        again = await trainer.request_token({
            "grant_type": EXCHANGE, "subject_token": body["access_token"], "subject_token_type": ACCESS_TOKEN,
            "resource": "urn:bsopt:broker-gateway"})
        await trainer.aclose()
        nested = claims_of(again["access_token"])
        assert nested["act"] == {"sub": "rl-trainer", "act": {"sub": "resource-api"}}
        assert nested["scope"] == "trainer:jobs.read" and nested["sub"] == "user-7"

        for bad in (test_issuer.token(aud="urn:bsopt:resource-api", sub="user-7", rogue=True),
                    test_issuer.expired_token(aud="urn:bsopt:resource-api", sub="user-7")):
            with pytest.raises(TokenRequestError, match="invalid_grant"):
                await provider.request_token({"grant_type": EXCHANGE, "subject_token": bad,
                                              "subject_token_type": ACCESS_TOKEN, "resource": "urn:bsopt:x"})
        with pytest.raises(TokenRequestError, match="invalid_request"):
            await provider.request_token({"grant_type": EXCHANGE, "subject_token": user_token,
                                          "resource": "urn:bsopt:x"})
        assert test_issuer.exchange_requests == before + 5
    finally:
        await provider.aclose()


# --------------------------------------------------------------------------- TestIssuer client JWKS


async def test_client_jwks_are_served_and_unknown_clients_are_404(test_issuer):
    key = test_issuer.service_key("ml-scorer")
    assert test_issuer.service_key("ml-scorer") is key  # once per client id
    assert test_issuer.client_jwks_url_template == test_issuer.base_url + "/oauth2/clients/{client_id}/jwks.json"
    test_issuer.jwks_max_age = 42
    try:
        async with httpx.AsyncClient() as client:
            resp = await client.get(test_issuer.client_jwks_url("ml-scorer"))
            assert resp.status_code == 200 and "max-age=42" in resp.headers["cache-control"]
            (jwk,) = [k for k in resp.json()["keys"] if k["kid"] == key.kid]
            assert "d" not in jwk
            assert (await client.get(test_issuer.client_jwks_url("nobody"))).status_code == 404
    finally:
        test_issuer.jwks_max_age = None


# --------------------------------------------------------------------------- load_signing_key


def test_load_signing_key_reads_private_jwks_and_pems():
    ec = ECKey.generate_key("P-256")
    loaded = load_signing_key(json.dumps(ec.as_dict(private=True)))
    assert loaded.is_private and loaded.kid == ec.thumbprint()  # RFC 7638 kid when absent
    named = ECKey.generate_key("P-256", parameters={"kid": "k-2026"})
    assert load_signing_key(json.dumps(named.as_dict(private=True))).kid == "k-2026"
    assert load_signing_key(private_jwk_json(loaded)).kid == loaded.kid
    for key in (ec, RSAKey.generate_key(2048), OKPKey.generate_key("Ed25519")):
        pem = key.as_pem(private=True).decode()
        assert load_signing_key(pem).thumbprint() == key.thumbprint()
    assert public_jwks(loaded)["keys"][0].keys() >= {"kid", "alg", "kty", "x", "y"}
    assert "d" not in public_jwks(loaded)["keys"][0]


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")  # the RSA-1024 key, on purpose
@pytest.mark.parametrize("kind", [
    "public-jwk", "public-pem", "oct-jwk", "jwks", "garbage", "empty", "p384", "rsa-1024", "x25519",
    "hs-alg-on-ec", "encrypted-pem",
])
def test_load_signing_key_refuses(kind):
    ec = ECKey.generate_key("P-256")
    text = {
        "public-jwk": lambda: json.dumps(ec.as_dict(private=False)),
        "public-pem": lambda: ec.as_pem(private=False).decode(),
        "oct-jwk": lambda: json.dumps(OctKey.generate_key(256).as_dict(private=True)),
        "jwks": lambda: json.dumps({"keys": [ec.as_dict(private=True)]}),
        "garbage": lambda: "not a key at all",
        "empty": lambda: "   ",
        "p384": lambda: json.dumps(ECKey.generate_key("P-384").as_dict(private=True)),
        "rsa-1024": lambda: RSAKey.generate_key(1024).as_pem(private=True).decode(),
        "x25519": lambda: json.dumps(OKPKey.generate_key("X25519").as_dict(private=True)),
        "hs-alg-on-ec": lambda: json.dumps({**ec.as_dict(private=True), "alg": "ES384"}),
        "encrypted-pem": lambda: ec.as_pem(private=True, password="pw").decode(),
    }[kind]()
    with pytest.raises(SigningKeyError) as err:
        load_signing_key(text)
    private_d = ec.as_dict(private=True)["d"]
    assert private_d not in str(err.value)
    if text.strip():
        assert text.strip()[:40] not in str(err.value)
