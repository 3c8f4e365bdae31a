"""RFC 7523 ``private_key_jwt`` at the token endpoint, and each client's public keys at
``/oauth2/clients/{client_id}/jwks.json``, over the real app and Postgres.

The module's database is re-seeded with public keys for four service clients (EC P-256,
RSA, Ed25519, EC), each generated here as its service would; digest-worker keeps its dev
secret. Every attack is replayed and must be ``invalid_client`` (401) or, for two
methods at once, ``invalid_request`` (400): a replayed jti, a key not registered for the
client, another client's id signed with one's own key, a wrong ``aud``, expired or far-
future ``exp``, ``alg`` none / HS256 keyed with the public key, a secret presented for a
``private_key_jwt`` client and an assertion for a secret client."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey
from sqlalchemy import func, select

from bsopt_auth.models import Client, ClientAssertionJti
from bsopt_auth.seed import seed_dev
from bsopt_common.db import session_scope
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE, KAFKA_AUDIENCE

TOKEN_PATH = "/oauth2/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

Key = ECKey | RSAKey | OKPKey

# The tests sign with EdDSA too (joserfc warns: RFC 9864 prefers "Ed25519"); the server
# accepts both on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")

#: client_id -> (private key, algorithm it signs with); generated once per module.
KEYS: dict[str, tuple[Key, str]] = {
    "broker-gateway": (ECKey.generate_key("P-256", private=True), "ES256"),
    "ml-scorer": (RSAKey.generate_key(2048, private=True), "PS256"),
    "rl-trainer": (OKPKey.generate_key("Ed25519", private=True), "EdDSA"),
    "resource-api": (ECKey.generate_key("P-256", private=True), "ES256"),
}


def public_jwks(client_id: str, *, with_kid: bool = True) -> dict[str, Any]:
    key, _ = KEYS[client_id]
    jwk = key.as_dict(private=False)
    if with_kid:
        jwk["kid"] = f"{client_id}-2027"
    return {"keys": [jwk]}


def kid_of(client_id: str) -> str:
    # broker-gateway registers its key without a kid: the server names it by thumbprint
    return KEYS[client_id][0].thumbprint() if client_id == "broker-gateway" else f"{client_id}-2027"


@pytest.fixture(scope="module", autouse=True)
def registered_keys(session_factory) -> None:
    documents = {cid: public_jwks(cid, with_kid=cid != "broker-gateway") for cid in KEYS}
    documents["rl-trainer"]["keys"][0]["alg"] = "EdDSA"
    seed_dev(session_factory, client_jwks=documents)
    with session_scope(session_factory) as session:  # as the shared conftest: code exchanges without DPoP
        session.get_one(Client, "bsopt-cli").dpop_bound_access_tokens = False


def make_assertion(
    client_id: str, settings, *, key: Key | None = None, alg: str | None = None, kid: str | None = "auto",
    aud: Any = "issuer", exp_in: float | None = 60, jti: str | None = "new", drop: tuple[str, ...] = (),
    **claims: Any,
) -> str:
    own_key, own_alg = KEYS[client_id]
    key, alg = key or own_key, alg or own_alg
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": client_id, "sub": client_id,
        "aud": settings.issuer if aud == "issuer" else aud,
        "iat": now, "jti": uuid.uuid4().hex if jti == "new" else jti,
    }
    if exp_in is not None:
        body["exp"] = now + exp_in
    body.update(claims)
    for name in drop:
        body.pop(name, None)
    header: dict[str, Any] = {"alg": alg}
    if kid == "auto":
        header["kid"] = kid_of(client_id)
    elif kid is not None:
        header["kid"] = kid
    return jwt.encode(header, body, key, algorithms=[alg])


async def with_assertion(client: httpx.AsyncClient, assertion: str, grant_type: str = "client_credentials",
                         headers: dict[str, str] | None = None, **data: Any) -> httpx.Response:
    body = {"grant_type": grant_type, "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion,
            **data}
    return await client.post(TOKEN_PATH, data=body, headers=headers or {})


def refused(resp: httpx.Response, error: str = "invalid_client") -> str:
    assert resp.status_code == (401 if error == "invalid_client" else 400), resp.text
    body = resp.json()
    assert body["error"] == error, body
    assert "access_token" not in body
    return str(body.get("error_description", ""))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --------------------------------------------------------------------------- accepted


@pytest.mark.parametrize("client_id", ["broker-gateway", "ml-scorer", "rl-trainer"])
async def test_valid_assertion_gets_a_client_credentials_token(oauth, settings, client_id) -> None:
    resp = await with_assertion(oauth.client, make_assertion(client_id, settings), resource=KAFKA_AUDIENCE,
                                scope="kafka:cluster")
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    claims = (await oauth.decode(resp.json()["access_token"])).claims
    assert claims["sub"] == claims["client_id"] == client_id
    assert claims["aud"] == KAFKA_AUDIENCE and claims["scope"] == "kafka:cluster"


@pytest.mark.parametrize("aud", ["token_endpoint", "both", "issuer_in_list"])
async def test_aud_may_be_the_token_endpoint_or_a_list(oauth, settings, aud) -> None:
    value = {"token_endpoint": settings.token_endpoint_url,
             "both": [settings.issuer, settings.token_endpoint_url],
             "issuer_in_list": ["urn:bsopt:other", settings.issuer]}[aud]
    resp = await with_assertion(oauth.client, make_assertion("broker-gateway", settings, aud=value))
    assert resp.status_code == 200, resp.text


async def test_form_client_id_may_name_the_same_client(oauth, settings) -> None:
    resp = await with_assertion(oauth.client, make_assertion("broker-gateway", settings), client_id="broker-gateway")
    assert resp.status_code == 200, resp.text


async def test_kid_may_be_left_out(oauth, settings) -> None:
    resp = await with_assertion(oauth.client, make_assertion("ml-scorer", settings, kid=None, alg="RS256"))
    assert resp.status_code == 200, resp.text


async def test_token_exchange_with_private_key_jwt(oauth, settings) -> None:
    user = (await oauth.user_tokens(scope="trades:read"))["access_token"]
    resp = await with_assertion(
        oauth.client, make_assertion("resource-api", settings), grant_type=TOKEN_EXCHANGE,
        subject_token=user, subject_token_type=ACCESS_TOKEN_TYPE, resource=BROKER_GATEWAY_AUDIENCE,
        scope="broker:accounts",
    )
    assert resp.status_code == 200, resp.text
    claims = (await oauth.decode(resp.json()["access_token"])).claims
    assert claims["aud"] == BROKER_GATEWAY_AUDIENCE
    assert claims["client_id"] == "resource-api" and claims["act"] == {"sub": "resource-api"}
    assert claims["scope"] == "broker:accounts"


async def test_unregistered_grant_still_refused(oauth, settings) -> None:
    user = (await oauth.user_tokens(scope="trades:read"))["access_token"]
    resp = await with_assertion(
        oauth.client, make_assertion("broker-gateway", settings), grant_type=TOKEN_EXCHANGE,
        subject_token=user, subject_token_type=ACCESS_TOKEN_TYPE, resource=BROKER_GATEWAY_AUDIENCE,
    )
    assert resp.status_code == 400 and resp.json()["error"] == "unauthorized_client", resp.text


# --------------------------------------------------------------------------- attacks


async def test_replayed_assertion_is_refused(oauth, settings, session_factory) -> None:
    assertion = make_assertion("broker-gateway", settings)
    assert (await with_assertion(oauth.client, assertion)).status_code == 200
    assert "already used" in refused(await with_assertion(oauth.client, assertion))
    # a fresh assertion reusing the jti is a replay too, until the first one's exp
    jti = json.loads(base64.urlsafe_b64decode(assertion.split(".")[1] + "==="))["jti"]
    refused(await with_assertion(oauth.client, make_assertion("broker-gateway", settings, jti=jti)))
    # ... but another client's jti space is its own
    resp = await with_assertion(oauth.client, make_assertion("ml-scorer", settings, jti=jti))
    assert resp.status_code == 200, resp.text


async def test_concurrent_replays_get_one_token(oauth, settings) -> None:
    import asyncio

    assertion = make_assertion("broker-gateway", settings)
    responses = await asyncio.gather(*(with_assertion(oauth.client, assertion) for _ in range(5)))
    assert sorted(r.status_code for r in responses) == [200, 401, 401, 401, 401]


async def test_expired_jtis_are_purged(oauth, settings, session_factory) -> None:
    with session_scope(session_factory) as s:
        s.add(ClientAssertionJti(client_id="ml-scorer", jti="stale-jti",
                                 expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert (await with_assertion(oauth.client, make_assertion("broker-gateway", settings))).status_code == 200
    with session_scope(session_factory) as s:
        assert s.get(ClientAssertionJti, ("ml-scorer", "stale-jti")) is None
        remembered = s.scalar(select(func.min(ClientAssertionJti.expires_at)))
    assert remembered is not None and remembered > datetime.now(UTC)


@pytest.mark.parametrize("same_kid", [True, False])
async def test_key_not_registered_for_the_client_is_refused(oauth, settings, same_kid) -> None:
    intruder = ECKey.generate_key("P-256", private=True)
    assertion = make_assertion("broker-gateway", settings, key=intruder,
                               kid=kid_of("broker-gateway") if same_kid else intruder.thumbprint())
    assert refused(await with_assertion(oauth.client, assertion)) == "client authentication failed"


async def test_another_clients_id_signed_with_own_key_is_refused(oauth, settings) -> None:
    # broker-gateway signs an assertion that says it is ml-scorer (with its own key and kid,
    # and with ml-scorer's kid)
    key, _ = KEYS["broker-gateway"]
    for kid in (kid_of("broker-gateway"), kid_of("ml-scorer"), None):
        assertion = make_assertion("ml-scorer", settings, key=key, alg="ES256", kid=kid)
        refused(await with_assertion(oauth.client, assertion))
    # own id in the assertion, another client's id in the form
    refused(await with_assertion(oauth.client, make_assertion("broker-gateway", settings), client_id="ml-scorer"))
    # iss and sub disagree
    refused(await with_assertion(oauth.client, make_assertion("broker-gateway", settings, iss="ml-scorer")))
    refused(await with_assertion(oauth.client, make_assertion("broker-gateway", settings, sub="ml-scorer",
                                                              kid=kid_of("broker-gateway"))))


@pytest.mark.parametrize("aud", ["http://127.0.0.1:9001", "urn:bsopt:resource-api", ["urn:bsopt:kafka"], [], 7,
                                 None, "http://127.0.0.1:9000/oauth2/token/x"])
async def test_wrong_aud_is_refused(oauth, settings, aud) -> None:
    assertion = make_assertion("broker-gateway", settings, aud=aud, **({"drop": ("aud",)} if aud is None else {}))
    refused(await with_assertion(oauth.client, assertion))


async def test_expired_and_far_future_assertions_are_refused(oauth, settings) -> None:
    leeway = settings.token_leeway_seconds
    assert "expired" in refused(await with_assertion(
        oauth.client, make_assertion("broker-gateway", settings, exp_in=-(leeway + 5))))
    far = settings.client_assertion_max_lifetime_seconds + leeway + 60
    assert "future" in refused(await with_assertion(
        oauth.client, make_assertion("broker-gateway", settings, exp_in=far)))
    assert "exp is required" in refused(await with_assertion(
        oauth.client, make_assertion("broker-gateway", settings, exp_in=None)))
    refused(await with_assertion(oauth.client, make_assertion("broker-gateway", settings, exp="soon")))
    refused(await with_assertion(oauth.client, make_assertion("broker-gateway", settings, exp=True)))
    refused(await with_assertion(oauth.client, make_assertion("broker-gateway", settings,
                                                              nbf=int(time.time()) + 3600)))
    assert "jti" in refused(await with_assertion(oauth.client, make_assertion("broker-gateway", settings,
                                                                              drop=("jti",))))
    refused(await with_assertion(oauth.client, make_assertion("broker-gateway", settings, jti="x" * 300)))


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return signing_input + "." + b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


async def test_alg_none_and_hs256_with_the_public_key_are_refused(oauth, settings) -> None:
    now = int(time.time())
    claims = {"iss": "ml-scorer", "sub": "ml-scorer", "aud": settings.issuer, "exp": now + 60,
              "jti": uuid.uuid4().hex}
    key, _ = KEYS["ml-scorer"]
    public = key.as_dict(private=False)
    pem = RSAKey.import_key(public).as_pem(private=False)
    secrets_tried = [pem, json.dumps(public).encode(), json.dumps({**public, "kid": kid_of("ml-scorer")}).encode(),
                     public["n"].encode()]
    for secret in secrets_tried:
        for header in ({"alg": "HS256", "kid": kid_of("ml-scorer")}, {"alg": "HS256"}):
            description = refused(await with_assertion(oauth.client, hs256(header, claims, secret)))
            assert "alg must be one of" in description
    for alg in ("none", "None", "NONE"):
        unsigned = f"{b64(json.dumps({'alg': alg}).encode())}.{b64(json.dumps(claims).encode())}."
        refused(await with_assertion(oauth.client, unsigned))
        refused(await with_assertion(oauth.client, unsigned + "c2ln"))
    # an EC key's assertion claiming RS256, and an RSA key claiming ES256
    refused(await with_assertion(oauth.client, make_assertion("ml-scorer", settings, alg="ES256",
                                                              key=ECKey.generate_key("P-256", private=True))))
    # the registered alg pins the algorithm: rl-trainer registered EdDSA, not Ed25519
    refused(await with_assertion(oauth.client, make_assertion("rl-trainer", settings, alg="Ed25519")))
    # a crit header nobody understands
    crit = es256({"alg": "ES256", "kid": kid_of("broker-gateway"), "crit": ["x-bsopt"], "x-bsopt": 1},
                 {"iss": "broker-gateway", "sub": "broker-gateway", "aud": settings.issuer, "exp": now + 60,
                  "jti": uuid.uuid4().hex}, KEYS["broker-gateway"][0])
    assert "crit" in refused(await with_assertion(oauth.client, crit))


def es256(header: dict[str, Any], claims: dict[str, Any], key: Key) -> str:
    """Sign by hand (joserfc will not produce a header it does not understand)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    private = key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    r, s = decode_dss_signature(private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


async def test_secret_for_a_private_key_jwt_client_is_refused(oauth) -> None:
    for method in ("basic", "post"):
        refused(await oauth.client_credentials("broker-gateway", method=method))
        refused(await oauth.client_credentials("broker-gateway", "", method=method))
    # client_id alone (as a public client would) is no authentication either
    refused(await oauth.client.post(TOKEN_PATH, data={"grant_type": "client_credentials",
                                                      "client_id": "broker-gateway"}))


async def test_secret_clients_keep_working_and_cannot_use_an_assertion(oauth, settings) -> None:
    resp = await oauth.client_credentials("digest-worker", scope="kafka:cluster")
    assert resp.status_code == 200, resp.text
    own = ECKey.generate_key("P-256", private=True)
    now = int(time.time())
    assertion = jwt.encode({"alg": "ES256", "kid": own.thumbprint()},
                           {"iss": "digest-worker", "sub": "digest-worker", "aud": settings.issuer,
                            "exp": now + 60, "jti": uuid.uuid4().hex}, own, algorithms=["ES256"])
    assert refused(await with_assertion(oauth.client, assertion)) == "client authentication failed"
    # the public client cannot either
    refused(await with_assertion(oauth.client, make_assertion("broker-gateway", settings, iss="bsopt-cli",
                                                              sub="bsopt-cli")))


async def test_two_methods_at_once_is_invalid_request(oauth, settings) -> None:
    basic = "Basic " + base64.b64encode(b"broker-gateway:dev-broker-gateway-secret").decode()
    refused(await with_assertion(oauth.client, make_assertion("broker-gateway", settings),
                                 headers={"Authorization": basic}), "invalid_request")
    refused(await with_assertion(oauth.client, make_assertion("broker-gateway", settings),
                                 client_secret="dev-broker-gateway-secret"), "invalid_request")
    resp = await oauth.client.post(TOKEN_PATH, data={"grant_type": "client_credentials",
                                                     "client_assertion": make_assertion("broker-gateway", settings)})
    refused(resp, "invalid_request")
    resp = await oauth.client.post(TOKEN_PATH, data={"grant_type": "client_credentials",
                                                     "client_assertion_type": ASSERTION_TYPE})
    refused(resp, "invalid_request")
    resp = await oauth.client.post(TOKEN_PATH, data={
        "grant_type": "client_credentials", "client_assertion": make_assertion("broker-gateway", settings),
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"})
    refused(resp)


NOT_UTF8 = bytes([0xFF, 0xFE])


@pytest.mark.parametrize("assertion", [
    "garbage", "a.b.c", "..", "a.b", "e30.e30.e30",
    f"{b64(b'[1]')}.{b64(b'{}')}.c2ln", f"{b64(b'null')}.{b64(b'{}')}.c2ln",
    f"{b64(json.dumps({'alg': 'ES256'}).encode())}.{b64(b'[]')}.c2ln",
    f"{b64(json.dumps({'alg': 'ES256', 'kid': 7}).encode())}.{b64(json.dumps({'sub': 'ml-scorer'}).encode())}.c2ln",
    f"{b64(json.dumps({'alg': 'ES256'}).encode())}.{b64(json.dumps({'sub': ['broker-gateway']}).encode())}.c2ln",
    f"{b64(json.dumps({'alg': 'ES256'}).encode())}.{b64(json.dumps({'sub': 'x' * 300}).encode())}.c2ln",
    f"{b64(json.dumps({'alg': 'ES256'}).encode())}.{b64(json.dumps({'sub': 'broker-gateway'}).encode())}.c2ln",
    f"{b64(json.dumps({'alg': 'ES256'}).encode())}.{b64(NOT_UTF8)}.c2ln",
    f"{b64(json.dumps({'alg': 'ES256'}).encode())}.{b64(json.dumps({'sub': 'broker-gateway'}).encode())}.%%%",
])
async def test_malformed_assertions_are_invalid_client_never_5xx(oauth, assertion) -> None:
    refused(await with_assertion(oauth.client, assertion))


async def test_nul_or_oversized_assertion_is_invalid_request(oauth, settings) -> None:
    refused(await with_assertion(oauth.client, "a\x00b.c.d"), "invalid_request")
    refused(await with_assertion(oauth.client, "a" * 5000), "invalid_request")


# --------------------------------------------------------------------------- JWKS endpoint


@pytest.mark.parametrize("client_id", sorted(KEYS))
async def test_client_jwks_serves_public_keys_with_max_age(oauth, settings, client_id) -> None:
    resp = await oauth.client.get(f"/oauth2/clients/{client_id}/jwks.json")
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == f"public, max-age={settings.client_jwks_max_age_seconds}"
    assert resp.headers["content-type"].startswith("application/jwk-set+json")
    keys = resp.json()["keys"]
    assert len(keys) == 1
    assert not PRIVATE_MEMBERS & set(keys[0])
    assert keys[0]["kid"] == kid_of(client_id) and keys[0]["use"] == "sig"
    expected = KEYS[client_id][0].as_dict(private=False)
    assert {k: keys[0][k] for k in expected} == expected
    # the keys verify what the client signs (what an event consumer does)
    from joserfc.jwk import KeySet

    token = make_assertion(client_id, settings)
    jwt.decode(token, KeySet.import_key_set(resp.json()), algorithms=[KEYS[client_id][1]])


async def test_client_jwks_url_is_what_consumers_build(oauth, settings) -> None:
    url = settings.client_jwks_endpoint_url("broker-gateway")
    assert url == f"{settings.issuer}/oauth2/clients/broker-gateway/jwks.json"
    assert (await oauth.client.get(url)).status_code == 200


@pytest.mark.parametrize("client_id", ["no-such-client", "digest-worker", "bsopt-cli", "a%00b", "%00", "x" * 300,
                                       "x" * 5000, "%FF%FE", "a%0Ab", quote("broker-gateway/../x", safe="")])
async def test_client_jwks_404_for_unknown_or_keyless_clients(oauth, client_id) -> None:
    resp = await oauth.client.get(f"/oauth2/clients/{client_id}/jwks.json")
    assert resp.status_code == 404, resp.text
    assert "keys" not in resp.json()
    if "%2F" not in client_id:  # (a decoded "/" makes it another path: the router's own 404)
        assert resp.json()["error"] == "not_found"
        assert resp.headers["cache-control"] == "no-store"


async def test_openapi_documents_the_client_jwks(oauth) -> None:
    document = (await oauth.client.get("/openapi.json")).json()
    operation = document["paths"]["/oauth2/clients/{client_id}/jwks.json"]["get"]
    assert set(operation["responses"]) == {"200", "404"}
    token = document["paths"]["/oauth2/token"]["post"]["requestBody"]["content"]
    fields = token["application/x-www-form-urlencoded"]["schema"]["properties"]
    assert fields["client_assertion_type"]["enum"] == [ASSERTION_TYPE]


async def test_database_refuses_private_members_and_mismatched_credentials(session_factory) -> None:
    from sqlalchemy.exc import IntegrityError

    key, _ = KEYS["broker-gateway"]
    bad_updates = [
        {"jwks": {"keys": [key.as_dict(private=True)]}},  # a private key
        {"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}},  # a symmetric key
        {"jwks": {"keys": []}},
        {"client_secret_hash": "$argon2id$x"},  # a secret beside the keys
        {"token_endpoint_auth_method": "client_secret_basic"},  # a secret method without a secret
    ]
    for values in bad_updates:
        with pytest.raises(IntegrityError), session_scope(session_factory) as s:
            client = s.get(Client, "broker-gateway")
            assert client is not None
            for name, value in values.items():
                setattr(client, name, value)
