"""RFC 8693 token exchange at the token endpoint: a service trades a user's token, meant
for it, for a short-lived token for one callee that keeps the user as ``sub`` and names
the service in ``act``.

The user token comes from the real authorization code + PKCE flow; exchange requests are
built by hand (form body, HTTP Basic client authentication); issued tokens are checked by
the shared RFC 9068 verifier against the published JWKS, as a callee would check them.
Hand-signed subject tokens (with this server's active key, or a foreign one) cover what
the flows cannot produce: expired tokens, unknown keys, other issuers."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from joserfc.jwk import RSAKey

from bsopt_auth.rfc7517 import LoadedKey, get_active_key
from bsopt_auth.rfc9068 import issue_access_token
from bsopt_common.db import session_scope
from bsopt_common.security.jwt import AccessTokenClaims, AccessTokenVerifier, InvalidTokenError, JWKSCache
from bsopt_common.settings import (
    BROKER_GATEWAY_AUDIENCE,
    KAFKA_AUDIENCE,
    ML_SCORER_AUDIENCE,
    RESOURCE_API_AUDIENCE,
    RL_TRAINER_AUDIENCE,
)

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_PATH = "/oauth2/token"


# --------------------------------------------------------------------------- helpers


async def exchange(
    client: httpx.AsyncClient, client_id: str, subject_token: str | None, *,
    secret: str | None = None, resources: tuple[str, ...] = (), **params: str | None,
) -> httpx.Response:
    """A token exchange request built by hand: Basic client authentication, a form body."""
    fields: list[tuple[str, str]] = [("grant_type", GRANT)]
    if subject_token is not None:
        fields.append(("subject_token", subject_token))
    params.setdefault("subject_token_type", ACCESS_TOKEN_TYPE)
    fields += [(k, v) for k, v in params.items() if v is not None]
    fields += [("resource", r) for r in resources]
    raw = f"{client_id}:{secret if secret is not None else f'dev-{client_id}-secret'}".encode()
    return await client.post(
        TOKEN_PATH, content=urlencode(fields),
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "Authorization": "Basic " + base64.b64encode(raw).decode()},
    )


async def verify_for(client: httpx.AsyncClient, settings, audience: str, token: str) -> AccessTokenClaims:
    """Verify ``token`` as the callee ``audience`` would: shared verifier, published JWKS."""
    assert settings.issuer is not None
    jwks = JWKSCache(settings.issuer + "/.well-known/jwks.json", http_client=client,
                     min_refetch_interval_seconds=0)
    return await AccessTokenVerifier(settings.issuer, audience, jwks).verify(token)


async def user_token(oauth, scope: str = "trades:read") -> str:
    token: str = (await oauth.user_tokens(scope=scope))["access_token"]
    return token


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a token this test just received from the server (not a check)."""
    seg = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))
    return claims


def sign(session_factory, settings, *, key: LoadedKey | None = None, subject: str,
         audiences: list[str], client_id: str = "bsopt-cli", scope: str = "trades:read",
         ttl: int = 900, now: int | None = None, issuer: str | None = None,
         actor: dict[str, Any] | None = None) -> str:
    """An access token signed by hand (this server's active key unless ``key``)."""
    if key is None:
        with session_scope(session_factory) as s:
            key = get_active_key(s, settings.signing_alg)
    return issue_access_token(
        key, issuer=issuer or settings.issuer, subject=subject, audiences=audiences,
        client_id=client_id, scope=scope, ttl_seconds=ttl, now=now, actor=actor,
    ).token


def assert_error(resp: httpx.Response, error: str, status: int = 400) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["error"] == error, resp.text
    assert resp.headers["cache-control"] == "no-store"
    assert "access_token" not in resp.json()


@pytest.fixture
async def demo_user_id(oauth) -> str:
    return str(unverified_claims(await user_token(oauth))["sub"])


# --------------------------------------------------------------------------- issued tokens


async def test_resource_api_exchanges_a_user_token_for_broker_gateway(oauth, client, settings) -> None:
    subject = await user_token(oauth, "trades:read")
    user = unverified_claims(subject)
    before = int(time.time())
    resp = await exchange(client, "resource-api", subject, resources=(BROKER_GATEWAY_AUDIENCE,),
                          scope="broker:accounts")
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store" and resp.headers["pragma"] == "no-cache"
    body = resp.json()
    assert set(body) == {"access_token", "issued_token_type", "token_type", "expires_in", "scope"}
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "broker:accounts"
    assert body["expires_in"] == settings.token_exchange_ttl_seconds == 300

    claims = await verify_for(client, settings, BROKER_GATEWAY_AUDIENCE, body["access_token"])
    assert claims.subject == user["sub"]
    assert claims.client_id == "resource-api"
    assert claims.audience == (BROKER_GATEWAY_AUDIENCE,)
    assert claims.scopes == {"broker:accounts"}
    assert claims.actor == ("resource-api",) and claims.is_delegated
    assert claims.raw["act"] == {"sub": "resource-api"}
    assert claims.raw["auth_time"] == user["auth_time"]
    assert before - 1 <= claims.raw["iat"] and claims.expires_at - claims.raw["iat"] == 300
    assert claims.token_id != user["jti"]
    # only the callee accepts it: not resource-api, not another backend
    for other in (RESOURCE_API_AUDIENCE, ML_SCORER_AUDIENCE):
        with pytest.raises(InvalidTokenError):
            await verify_for(client, settings, other, body["access_token"])


async def test_audience_parameter_and_default_scope_for_the_callee(oauth, client, settings) -> None:
    subject = await user_token(oauth)
    resp = await exchange(client, "resource-api", subject, audience=ML_SCORER_AUDIENCE)
    assert resp.status_code == 200, resp.text
    assert resp.json()["scope"] == "scorer:read"  # only the scorer's scopes, not all of resource-api's
    claims = await verify_for(client, settings, ML_SCORER_AUDIENCE, resp.json()["access_token"])
    assert claims.scopes == {"scorer:read"}

    resp = await exchange(client, "resource-api", subject, resources=(BROKER_GATEWAY_AUDIENCE,),
                          audience=BROKER_GATEWAY_AUDIENCE)  # both, naming the same target
    assert resp.status_code == 200, resp.text
    # the default is what the client may have for the callee AND the user's trades:read allows
    assert resp.json()["scope"] == "broker:accounts broker:connections.read"


async def test_second_exchange_nests_act(oauth, client, settings) -> None:
    subject = await user_token(oauth, "training:write")
    user = unverified_claims(subject)
    first = await exchange(client, "resource-api", subject, resources=(RL_TRAINER_AUDIENCE,),
                           scope="trainer:jobs.write")
    assert first.status_code == 200, first.text
    for_trainer = first.json()["access_token"]
    trainer_view = await verify_for(client, settings, RL_TRAINER_AUDIENCE, for_trainer)
    assert trainer_view.actor == ("resource-api",)

    # rl-trainer, acting for the job's user, reaches the broker (its only exchange target)
    second = await exchange(client, "rl-trainer", for_trainer, scope="broker:orders")
    assert second.status_code == 200, second.text
    claims = await verify_for(client, settings, BROKER_GATEWAY_AUDIENCE, second.json()["access_token"])
    assert claims.subject == user["sub"]
    assert claims.client_id == "rl-trainer"
    assert claims.scopes == {"broker:orders"}
    assert claims.raw["act"] == {"sub": "rl-trainer", "act": {"sub": "resource-api"}}
    assert claims.actor == ("rl-trainer", "resource-api")
    assert claims.expires_at <= trainer_view.expires_at  # never outlives its subject token


async def test_lifetime_is_bounded_by_the_subject_token(client, session_factory, settings, demo_user_id) -> None:
    now = int(time.time())
    subject = sign(session_factory, settings, subject=demo_user_id, audiences=[RESOURCE_API_AUDIENCE],
                   ttl=900, now=now - 840)  # 60 s left
    resp = await exchange(client, "resource-api", subject, resources=(BROKER_GATEWAY_AUDIENCE,))
    assert resp.status_code == 200, resp.text
    assert 0 < resp.json()["expires_in"] <= 60
    claims = await verify_for(client, settings, BROKER_GATEWAY_AUDIENCE, resp.json()["access_token"])
    assert claims.expires_at == now - 840 + 900


async def test_client_credentials_tokens_have_no_actor(oauth, client, settings) -> None:
    resp = await oauth.client_credentials("resource-api", resource=BROKER_GATEWAY_AUDIENCE)
    claims = await verify_for(client, settings, BROKER_GATEWAY_AUDIENCE, resp.json()["access_token"])
    assert claims.actor == () and not claims.is_delegated


async def test_verifier_refuses_a_malformed_act_claim(client, session_factory, settings, demo_user_id) -> None:
    for act in ({"sub": 7}, {"act": {"sub": "x"}}, {"sub": "a", "act": "b"}):
        token = sign(session_factory, settings, subject=demo_user_id, audiences=[BROKER_GATEWAY_AUDIENCE],
                     client_id="resource-api", actor=act)
        with pytest.raises(InvalidTokenError, match="act"):
            await verify_for(client, settings, BROKER_GATEWAY_AUDIENCE, token)


# --------------------------------------------------------------------------- refusals: the subject token


@pytest.mark.parametrize("case", ["expired", "expired-within-leeway", "unknown-kid", "published-kid-other-key",
                                  "other-issuer", "unknown-user", "not-a-jwt"])
async def test_bad_subject_token_is_invalid_grant(client, session_factory, settings, demo_user_id,
                                                  case: str) -> None:
    now = int(time.time())
    common: dict[str, Any] = {"subject": demo_user_id, "audiences": [RESOURCE_API_AUDIENCE]}
    if case == "expired":
        token = sign(session_factory, settings, now=now - 2000, **common)
    elif case == "expired-within-leeway":  # the verifier's leeway accepts it; the exchange does not
        token = sign(session_factory, settings, now=now - 905, **common)
    elif case in ("unknown-kid", "published-kid-other-key"):
        with session_scope(session_factory) as s:
            active_kid = get_active_key(s, settings.signing_alg).kid
        kid = active_kid if case == "published-kid-other-key" else "forged-" + uuid.uuid4().hex
        foreign = LoadedKey(kid=kid, alg="RS256", status="active", key=RSAKey.generate_key(2048))
        token = sign(session_factory, settings, key=foreign, **common)
    elif case == "other-issuer":
        token = sign(session_factory, settings, issuer="https://evil.example", **common)
    elif case == "unknown-user":
        token = sign(session_factory, settings, subject=str(uuid.uuid4()), audiences=[RESOURCE_API_AUDIENCE])
    else:
        token = "not.a.jwt"
    resp = await exchange(client, "resource-api", token, resources=(BROKER_GATEWAY_AUDIENCE,))
    assert_error(resp, "invalid_grant")


async def test_token_meant_for_another_service_is_refused(oauth, client) -> None:
    subject = await user_token(oauth)  # aud resource-api
    resp = await exchange(client, "rl-trainer", subject, resources=(BROKER_GATEWAY_AUDIENCE,))
    assert_error(resp, "invalid_grant")
    assert "aud" in resp.json()["error_description"]


async def test_token_for_a_callee_cannot_be_exchanged_by_its_caller_again(oauth, client) -> None:
    # resource-api's exchanged token for the broker is the broker's, not resource-api's
    subject = await user_token(oauth)
    first = await exchange(client, "resource-api", subject, resources=(BROKER_GATEWAY_AUDIENCE,))
    assert first.status_code == 200
    resp = await exchange(client, "resource-api", first.json()["access_token"],
                          resources=(BROKER_GATEWAY_AUDIENCE,))
    assert_error(resp, "invalid_grant")


async def test_delegated_token_must_be_for_the_exchanging_client_only(
    client, session_factory, settings, demo_user_id
) -> None:
    token = sign(session_factory, settings, subject=demo_user_id, client_id="resource-api",
                 audiences=[RL_TRAINER_AUDIENCE, BROKER_GATEWAY_AUDIENCE], scope="trainer:jobs.read",
                 actor={"sub": "resource-api"})
    assert_error(await exchange(client, "rl-trainer", token), "invalid_grant")
    inconsistent = sign(session_factory, settings, subject=demo_user_id, client_id="resource-api",
                        audiences=[RL_TRAINER_AUDIENCE], scope="trainer:jobs.read", actor={"sub": "ml-scorer"})
    assert_error(await exchange(client, "rl-trainer", inconsistent), "invalid_grant")


async def test_client_credentials_token_has_no_user_to_act_for(oauth, client) -> None:
    cc = await oauth.client_credentials("resource-api", resource=RL_TRAINER_AUDIENCE)
    assert cc.status_code == 200
    resp = await exchange(client, "rl-trainer", cc.json()["access_token"])
    assert_error(resp, "invalid_grant")
    assert "user" in resp.json()["error_description"]


# --------------------------------------------------------------------------- refusals: client, target, scope


async def test_client_without_the_grant_is_unauthorized(oauth, client) -> None:
    subject = await user_token(oauth)
    assert_error(await exchange(client, "broker-gateway", subject, resources=(KAFKA_AUDIENCE,)),
                 "unauthorized_client")
    public = await client.post(TOKEN_PATH, data={
        "grant_type": GRANT, "client_id": "bsopt-cli", "subject_token": subject,
        "subject_token_type": ACCESS_TOKEN_TYPE, "resource": BROKER_GATEWAY_AUDIENCE})
    assert_error(public, "unauthorized_client")
    assert_error(await exchange(client, "resource-api", subject, secret="wrong",
                                resources=(BROKER_GATEWAY_AUDIENCE,)), "invalid_client", 401)


@pytest.mark.parametrize(("client_id", "scope", "resource"), [
    ("resource-api", "broker:accounts kafka:cluster", BROKER_GATEWAY_AUDIENCE),  # not resource-api's
    ("resource-api", "scorer:read", BROKER_GATEWAY_AUDIENCE),  # resource-api's, but for another callee
    ("resource-api", "openid", BROKER_GATEWAY_AUDIENCE),
    ("rl-trainer", "broker:import", BROKER_GATEWAY_AUDIENCE),  # the broker's, but not rl-trainer's
    # completing an OAuth connection: resource-api's own token only, never a user's
    ("resource-api", "broker:connections.complete", BROKER_GATEWAY_AUDIENCE),
])
async def test_scope_is_never_broadened(oauth, client, client_id: str, scope: str, resource: str) -> None:
    subject = await user_token(oauth, "trades:read trades:write training:write")
    if client_id == "rl-trainer":
        first = await exchange(client, "resource-api", subject, resources=(RL_TRAINER_AUDIENCE,))
        assert first.status_code == 200, first.text
        subject = first.json()["access_token"]
    assert_error(await exchange(client, client_id, subject, resources=(resource,), scope=scope), "invalid_scope")


# --------------------------------------------------------------------------- the user's consent bounds the scope

ALL_USER_SCOPES = "trades:read trades:write training:read training:write"


@pytest.mark.parametrize(("user_scope", "resource", "scope"), [
    ("trades:read", BROKER_GATEWAY_AUDIENCE, "broker:orders"),  # the widening this policy exists for
    ("trades:read", BROKER_GATEWAY_AUDIENCE, "broker:import"),  # importing is trades:write
    ("trades:read", BROKER_GATEWAY_AUDIENCE, "broker:connections"),  # connecting a broker is trades:write
    ("trades:read", RL_TRAINER_AUDIENCE, None),  # no training scope at all
    ("trades:write", ML_SCORER_AUDIENCE, "scorer:read"),  # reading scored trades is trades:read
    ("training:read", RL_TRAINER_AUDIENCE, "trainer:jobs.write"),
    ("training:write", BROKER_GATEWAY_AUDIENCE, None),  # paper trading goes through rl-trainer
    (ALL_USER_SCOPES, BROKER_GATEWAY_AUDIENCE, "broker:orders"),  # no user scope reaches PlaceOrder directly
    ("openid profile", ML_SCORER_AUDIENCE, None),
])
async def test_exchange_never_widens_the_users_scope(oauth, client, user_scope: str, resource: str,
                                                     scope: str | None) -> None:
    subject = await user_token(oauth, user_scope)
    resp = await exchange(client, "resource-api", subject, resources=(resource,), scope=scope)
    assert_error(resp, "invalid_scope")
    assert "subject_token" in resp.json()["error_description"]


@pytest.mark.parametrize(("user_scope", "resource", "granted"), [
    ("trades:read", BROKER_GATEWAY_AUDIENCE, {"broker:accounts", "broker:connections.read"}),  # GET account, list
    ("trades:read", ML_SCORER_AUDIENCE, {"scorer:read"}),  # GET /v1/trades
    ("trades:write", BROKER_GATEWAY_AUDIENCE, {"broker:accounts", "broker:import", "broker:connections",
                                               "broker:sells"}),  # never broker:orders
    ("training:read", RL_TRAINER_AUDIENCE, {"trainer:jobs.read"}),
    ("training:write", RL_TRAINER_AUDIENCE, {"trainer:jobs.write"}),  # submit, cancel, paper trading
    (ALL_USER_SCOPES, BROKER_GATEWAY_AUDIENCE, {"broker:accounts", "broker:import", "broker:connections",
                                                "broker:connections.read", "broker:sells"}),
    (ALL_USER_SCOPES, ML_SCORER_AUDIENCE, {"scorer:read"}),
    (ALL_USER_SCOPES, RL_TRAINER_AUDIENCE, {"trainer:jobs.read", "trainer:jobs.write"}),
])
async def test_each_user_scope_grants_its_backend_scopes(oauth, client, settings, user_scope: str,
                                                         resource: str, granted: set[str]) -> None:
    subject = await user_token(oauth, user_scope)
    resp = await exchange(client, "resource-api", subject, resources=(resource,))  # the default scope
    assert resp.status_code == 200, resp.text
    assert set(resp.json()["scope"].split()) == granted
    claims = await verify_for(client, settings, resource, resp.json()["access_token"])
    assert claims.scopes == granted
    for scope in sorted(granted):  # each one alone, asked for explicitly
        one = await exchange(client, "resource-api", subject, resources=(resource,), scope=scope)
        assert one.status_code == 200, one.text
        assert one.json()["scope"] == scope


async def test_requested_scope_is_narrowed_to_what_the_user_allows(oauth, client, settings) -> None:
    # resource-api asks for every broker scope it has; a trades:read user gets only accounts
    subject = await user_token(oauth, "trades:read")
    resp = await exchange(client, "resource-api", subject, resources=(BROKER_GATEWAY_AUDIENCE,),
                          scope="broker:accounts broker:orders broker:import")
    assert resp.status_code == 200, resp.text
    assert resp.json()["scope"] == "broker:accounts"
    claims = await verify_for(client, settings, BROKER_GATEWAY_AUDIENCE, resp.json()["access_token"])
    assert claims.scopes == {"broker:accounts"}


async def test_re_exchange_derives_from_the_delegated_tokens_scope(oauth, client, settings) -> None:
    subject = await user_token(oauth, "training:write")
    first = await exchange(client, "resource-api", subject, resources=(RL_TRAINER_AUDIENCE,))
    assert first.status_code == 200, first.text
    assert first.json()["scope"] == "trainer:jobs.write"
    # rl-trainer, holding trainer:jobs.write for the user, may place paper orders for them
    second = await exchange(client, "rl-trainer", first.json()["access_token"])
    assert second.status_code == 200, second.text
    assert set(second.json()["scope"].split()) == {"broker:accounts", "broker:orders"}
    claims = await verify_for(client, settings, BROKER_GATEWAY_AUDIENCE, second.json()["access_token"])
    assert claims.scopes == {"broker:accounts", "broker:orders"}
    assert claims.actor == ("rl-trainer", "resource-api")


@pytest.mark.parametrize(("user_scope", "first_scope"), [
    ("training:read", None),  # the user may only read jobs: trainer:jobs.read
    (ALL_USER_SCOPES, "trainer:jobs.read"),  # the user allows more, but resource-api delegated only reading
])
async def test_re_exchange_of_a_read_only_delegated_token_reaches_no_broker_scope(
    oauth, client, user_scope: str, first_scope: str | None
) -> None:
    subject = await user_token(oauth, user_scope)
    first = await exchange(client, "resource-api", subject, resources=(RL_TRAINER_AUDIENCE,), scope=first_scope)
    assert first.status_code == 200, first.text
    assert first.json()["scope"] == "trainer:jobs.read"
    for scope in (None, "broker:accounts", "broker:orders"):
        assert_error(await exchange(client, "rl-trainer", first.json()["access_token"], scope=scope),
                     "invalid_scope")


async def test_hand_signed_delegated_token_is_bounded_by_its_own_scope(
    client, session_factory, settings, demo_user_id
) -> None:
    # hand-signed: what resource-api would hold for rl-trainer with only a write scope
    token = sign(session_factory, settings, subject=demo_user_id, client_id="resource-api",
                 audiences=[RL_TRAINER_AUDIENCE], scope="trainer:jobs.write", actor={"sub": "resource-api"})
    resp = await exchange(client, "rl-trainer", token, scope="broker:orders")
    assert resp.status_code == 200, resp.text
    assert resp.json()["scope"] == "broker:orders"
    assert_error(await exchange(client, "rl-trainer", token, scope="broker:import"), "invalid_scope")


@pytest.mark.parametrize(("client_id", "resources", "audience"), [
    ("resource-api", ("urn:bsopt:nope",), None),  # unknown
    ("resource-api", (KAFKA_AUDIENCE,), None),  # not one resource-api may reach
    ("resource-api", (RESOURCE_API_AUDIENCE,), None),  # itself
    ("resource-api", (), "urn:bsopt:nope"),
    ("resource-api", (), None),  # several possible callees: one must be named
    ("resource-api", (BROKER_GATEWAY_AUDIENCE, ML_SCORER_AUDIENCE), None),  # one callee per token
    ("resource-api", ("relative/path",), None),
    ("rl-trainer", (KAFKA_AUDIENCE,), None),  # a client-credentials target, not an exchange one
])
async def test_invalid_target(oauth, client, client_id: str, resources: tuple[str, ...],
                              audience: str | None) -> None:
    subject = await user_token(oauth)
    resp = await exchange(client, client_id, subject, resources=resources, audience=audience)
    assert_error(resp, "invalid_target")


@pytest.mark.parametrize("params", [
    {"subject_token": None},
    {"subject_token": ""},
    {"subject_token_type": None},
    {"subject_token_type": "urn:ietf:params:oauth:token-type:id_token"},
    {"subject_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
    {"audience": ML_SCORER_AUDIENCE},  # conflicts with resource=broker-gateway
    {"actor_token": "x", "actor_token_type": ACCESS_TOKEN_TYPE},
    {"actor_token": "x"},
    {"requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
])
async def test_malformed_request_is_invalid_request(oauth, client, params: dict[str, str | None]) -> None:
    subject: str | None = await user_token(oauth)
    if "subject_token" in params:
        subject = params.pop("subject_token")
    resp = await exchange(client, "resource-api", subject, resources=(BROKER_GATEWAY_AUDIENCE,), **params)
    assert_error(resp, "invalid_request")


async def test_repeated_subject_token_is_invalid_request(oauth, client) -> None:
    subject = await user_token(oauth)
    raw = base64.b64encode(b"resource-api:dev-resource-api-secret").decode()
    body = urlencode([("grant_type", GRANT), ("subject_token", subject), ("subject_token", subject),
                      ("subject_token_type", ACCESS_TOKEN_TYPE), ("resource", BROKER_GATEWAY_AUDIENCE)])
    resp = await client.post(TOKEN_PATH, content=body, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Authorization": "Basic " + raw})
    assert_error(resp, "invalid_request")


async def test_delegation_chain_is_bounded(client, session_factory, settings, demo_user_id) -> None:
    act: dict[str, Any] = {"sub": "resource-api"}
    for _ in range(3):  # four actors already: one more exchange would make five
        act = {"sub": "resource-api", "act": act}
    token = sign(session_factory, settings, subject=demo_user_id, client_id="resource-api",
                 audiences=[RL_TRAINER_AUDIENCE], scope="trainer:jobs.read", actor=act)
    resp = await exchange(client, "rl-trainer", token)
    assert_error(resp, "invalid_grant")
    assert "chain" in resp.json()["error_description"]
