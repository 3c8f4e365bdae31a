"""Users connect their own Alpaca account (issue 8 §1): real gRPC server, real Postgres,
the local Alpaca stand-in over real HTTP (Trading API + OAuth endpoints), alpaca-py and
authlib as the clients."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import psycopg
import pytest
import requests

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as pb_grpc
from bsopt_broker.bootstrap import BrokerGateway
from bsopt_broker.config import BrokerSettings
from bsopt_broker.connections.crypto import CredentialsCipher, CredentialsDecryptionError
from bsopt_common import codec
from bsopt_common.money import Money
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE
from bsopt_common.testing.grpc_calls import grpc_calls
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_common.testing.standins import alpaca_standin_module

USER_SCOPES = "broker:accounts broker:orders broker:import broker:connections broker:connections.read"
CLIENT_ID, CLIENT_SECRET = "bsopt-oauth-app", "standin-oauth-secret"
REDIRECT_URI = "http://127.0.0.1:8000/v1/brokers/alpaca/callback"
KEY = base64.b64encode(hashlib.sha256(b"test key of test_broker_connections").digest()).decode()


@pytest.fixture(scope="module")
def standin() -> Iterator[Any]:
    s = alpaca_standin_module().AlpacaStandin()
    s.add_account("PKOAUTHA", "secret-a", cash=50_000)
    s.add_account("PKKEYSB", "secret-b-very-secret", cash=30_000)
    s.add_account("PKKEYSC", "secret-c-very-secret", cash=30_000)
    s.oauth.add_client(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI)
    with s.serving():
        yield s


@pytest.fixture(scope="module")
def gateway(service_database_urls, kafka_bootstrap, test_issuer, standin) -> Iterator[str]:
    port = free_port()
    settings = BrokerSettings(
        database_url=service_database_urls["broker-gateway"], kafka_bootstrap_servers=kafka_bootstrap, port=port,
        credentials_key=KEY, alpaca_oauth_client_id=CLIENT_ID, alpaca_oauth_client_secret=CLIENT_SECRET,
        alpaca_oauth_authorize_url=f"{standin.base_url}/oauth/authorize",
        alpaca_oauth_token_url=f"{standin.base_url}/oauth/token", alpaca_oauth_redirect_uri=REDIRECT_URI,
        alpaca_trading_base_url=standin.base_url, **service_identity(test_issuer, "broker-gateway"))
    with ServiceThread(BrokerGateway(settings).run, port=port):
        yield f"127.0.0.1:{port}"


def user_token(issuer: Any, user: str, scope: str = USER_SCOPES) -> str:
    return issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope=scope, client_id="resource-api", sub=user,
                        act={"sub": "resource-api"})


def service_token(issuer: Any) -> str:
    """resource-api's own client-credentials token, as its OAuth callback presents it."""
    return issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope="broker:connections.complete", client_id="resource-api",
                        sub="resource-api")


call, refused = grpc_calls(pb_grpc.BrokerGatewayServiceStub)


def approve(authorize_url: str, key_id: str) -> tuple[str, str]:
    """The user's browser at the stand-in's authorize page, approving for ``key_id``:
    (code, state) from the redirect to the callback."""
    answer = requests.get(authorize_url, params={"approve_as": key_id}, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    q = parse_qs(urlsplit(location).query)
    return q["code"][0], q["state"][0]


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def rows(postgres_url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(_dsn(postgres_url)) as conn:
        return conn.execute(sql, args).fetchall()


async def oauth_connect(target: str, issuer: Any, user: str, key_id: str) -> pb.BrokerConnection:
    started = await call(target, "StartBrokerConnection", pb.StartBrokerConnectionRequest(broker="alpaca"),
                         user_token(issuer, user))
    code, state = approve(started.authorize_url, key_id)
    return await call(target, "CompleteBrokerConnection", pb.CompleteBrokerConnectionRequest(state=state, code=code),
                      service_token(issuer))


async def test_oauth_connect_then_account_and_order(gateway, test_issuer, standin, postgres_url):
    user = f"u-{uuid.uuid4().hex[:8]}"
    started = await call(gateway, "StartBrokerConnection", pb.StartBrokerConnectionRequest(broker="alpaca"),
                         user_token(test_issuer, user))
    q = parse_qs(urlsplit(started.authorize_url).query)
    assert started.authorize_url.startswith(f"{standin.base_url}/oauth/authorize?")
    assert q["response_type"] == ["code"] and q["client_id"] == [CLIENT_ID] and q["redirect_uri"] == [REDIRECT_URI]
    assert q["state"] == [started.state] and q["scope"] == ["account:write trading data"]
    assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) == 43
    assert len(started.state) >= 43

    code, state = approve(started.authorize_url, "PKOAUTHA")
    assert state == started.state
    conn = await call(gateway, "CompleteBrokerConnection", pb.CompleteBrokerConnectionRequest(state=state, code=code),
                      service_token(test_issuer))
    assert conn.status == pb.BROKER_CONNECTION_STATUS_ACTIVE and conn.method == pb.BROKER_CONNECTION_METHOD_OAUTH
    assert conn.account_kind == pb.ACCOUNT_KIND_PAPER and conn.broker == "alpaca"
    assert conn.scope == "account:write trading data"
    # the token request carried the PKCE verifier and the client's secret in the body
    form = standin.oauth.token_requests[-1]
    assert form["grant_type"] == "authorization_code" and form["redirect_uri"] == REDIRECT_URI
    assert form["client_id"] == CLIENT_ID and form["code_verifier"]

    tok = user_token(test_issuer, user)
    listed = await call(gateway, "ListBrokerConnections", pb.ListBrokerConnectionsRequest(), tok)
    assert [c.connection_id for c in listed.connections] == [conn.connection_id]

    account = await call(gateway, "GetAccount", pb.GetAccountRequest(account_id=conn.connection_id), tok)
    assert account.broker == "alpaca" and account.user_id == user and account.account_kind == pb.ACCOUNT_KIND_PAPER
    assert codec.money_from_pb(account, "cash") == Money.of(50_000, "USD")
    resp = await call(gateway, "PlaceOrder", pb.PlaceOrderRequest(
        account_id=conn.connection_id, client_order_id="oauth-1", symbol="AAPL", side=pb.SIDE_BUY, quantity=3), tok)
    assert resp.order.status == pb.ORDER_STATUS_FILLED
    assert codec.money_from_pb(resp.account, "cash") == Money.of(49_700, "USD")
    assert len(standin.accounts["PKOAUTHA"].orders) == 1

    # at rest: no token in clear, only ciphertext under the connection id
    stored = rows(postgres_url, "SELECT credentials, method, status FROM broker.broker_connections "
                                "WHERE connection_id = %s", conn.connection_id)
    (sealed, method, status), = stored
    token = next(t for t, k in standin.oauth.tokens.items() if k == "PKOAUTHA")
    assert method == "oauth" and status == "active" and token.encode() not in bytes(sealed)
    cipher = CredentialsCipher.from_base64(KEY)
    assert cipher.open(conn.connection_id, bytes(sealed)) == {"oauth_token": token}
    # the state and verifier are not stored in clear either
    (state_row,) = rows(postgres_url, "SELECT state_hash, code_verifier, used_at FROM broker.broker_oauth_states "
                                      "WHERE connection_id = %s", conn.connection_id)
    assert state_row[0] == hashlib.sha256(state.encode()).hexdigest() and state_row[2] is not None
    assert form["code_verifier"].encode() not in bytes(state_row[1])


async def test_replayed_unknown_and_foreign_states_are_refused(gateway, test_issuer, standin):
    alice, mallory = f"a-{uuid.uuid4().hex[:8]}", f"m-{uuid.uuid4().hex[:8]}"
    started = await call(gateway, "StartBrokerConnection", pb.StartBrokerConnectionRequest(),
                         user_token(test_issuer, alice))
    code, state = approve(started.authorize_url, "PKOAUTHA")

    # another user's delegated call cannot complete alice's state...
    foreign = await refused(gateway, "CompleteBrokerConnection",
                            pb.CompleteBrokerConnectionRequest(state=state, code=code),
                            user_token(test_issuer, mallory, "broker:connections.complete"))
    assert foreign.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown state" in foreign.details()
    # ...a made-up state is unknown...
    unknown = await refused(gateway, "CompleteBrokerConnection",
                            pb.CompleteBrokerConnectionRequest(state="x" * 48, code=code), service_token(test_issuer))
    assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown state" in unknown.details()
    # ...alice's own completes once (her delegated token works too)...
    conn = await call(gateway, "CompleteBrokerConnection", pb.CompleteBrokerConnectionRequest(state=state, code=code),
                      user_token(test_issuer, alice, "broker:connections.complete"))
    assert conn.status == pb.BROKER_CONNECTION_STATUS_ACTIVE
    # ...and never again
    replay = await refused(gateway, "CompleteBrokerConnection",
                           pb.CompleteBrokerConnectionRequest(state=state, code=code), service_token(test_issuer))
    assert replay.code() == grpc.StatusCode.INVALID_ARGUMENT and "used already" in replay.details()
    assert code not in replay.details() and state not in replay.details()
    # the user's own token for the other RPCs cannot complete (scope)
    scope = await refused(gateway, "CompleteBrokerConnection",
                          pb.CompleteBrokerConnectionRequest(state=state, code=code), user_token(test_issuer, alice))
    assert scope.code() == grpc.StatusCode.PERMISSION_DENIED
    # the service's own token cannot start, list or connect (no user)
    own = await refused(gateway, "ListBrokerConnections", pb.ListBrokerConnectionsRequest(),
                        test_issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope=USER_SCOPES, client_id="resource-api",
                                          sub="resource-api"))
    assert own.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_code_refused_by_alpaca_uses_up_the_state(gateway, test_issuer, standin):
    user = f"u-{uuid.uuid4().hex[:8]}"
    started = await call(gateway, "StartBrokerConnection", pb.StartBrokerConnectionRequest(),
                         user_token(test_issuer, user))
    _, state = approve(started.authorize_url, "PKOAUTHA")
    err = await refused(gateway, "CompleteBrokerConnection",
                        pb.CompleteBrokerConnectionRequest(state=state, code="not-the-code"),
                        service_token(test_issuer))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "invalid_grant" in err.details()
    listed = await call(gateway, "ListBrokerConnections", pb.ListBrokerConnectionsRequest(),
                        user_token(test_issuer, user))
    assert list(listed.connections) == []


async def test_api_keys_connect_and_wrong_keys_store_nothing(gateway, test_issuer, standin, postgres_url):
    user = f"u-{uuid.uuid4().hex[:8]}"
    tok = user_token(test_issuer, user)
    before = rows(postgres_url, "SELECT count(*) FROM broker.broker_connections")[0][0]
    err = await refused(gateway, "ConnectBrokerWithKeys", pb.ConnectBrokerWithKeysRequest(
        broker="alpaca", api_key_id="PKKEYSB", api_secret_key="wrong-secret"), tok)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "refused these credentials" in err.details()
    assert "wrong-secret" not in err.details()
    assert rows(postgres_url, "SELECT count(*) FROM broker.broker_connections")[0][0] == before
    for bad, field in ((pb.ConnectBrokerWithKeysRequest(api_secret_key="s"), "api_key_id"),
                       (pb.ConnectBrokerWithKeysRequest(api_key_id="PK", api_secret_key="a\x00b"), "api_secret_key"),
                       (pb.ConnectBrokerWithKeysRequest(broker="ibkr", api_key_id="k", api_secret_key="s"), "broker")):
        err = await refused(gateway, "ConnectBrokerWithKeys", bad, tok)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.details()

    conn = await call(gateway, "ConnectBrokerWithKeys", pb.ConnectBrokerWithKeysRequest(
        api_key_id="PKKEYSB", api_secret_key="secret-b-very-secret"), tok)
    assert conn.method == pb.BROKER_CONNECTION_METHOD_API_KEY and conn.account_kind == pb.ACCOUNT_KIND_PAPER
    (sealed,) = rows(postgres_url, "SELECT credentials FROM broker.broker_connections WHERE connection_id = %s",
                     conn.connection_id)[0]
    assert b"secret-b-very-secret" not in bytes(sealed) and b"PKKEYSB" not in bytes(sealed)
    account = await call(gateway, "GetAccount", pb.GetAccountRequest(account_id=conn.connection_id), tok)
    assert codec.money_from_pb(account, "cash") == Money.of(30_000, "USD")

    # a paper flag that contradicts the evidence is refused, nothing stored
    err = await refused(gateway, "ConnectBrokerWithKeys", pb.ConnectBrokerWithKeysRequest(
        api_key_id="PKKEYSB", api_secret_key="secret-b-very-secret", paper=False), tok)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_ciphertext_moved_to_another_row_does_not_decrypt(gateway, test_issuer, postgres_url):
    user = f"u-{uuid.uuid4().hex[:8]}"
    tok = user_token(test_issuer, user)
    one = await call(gateway, "ConnectBrokerWithKeys", pb.ConnectBrokerWithKeysRequest(
        api_key_id="PKKEYSB", api_secret_key="secret-b-very-secret"), tok)
    two = await call(gateway, "ConnectBrokerWithKeys", pb.ConnectBrokerWithKeysRequest(
        api_key_id="PKKEYSC", api_secret_key="secret-c-very-secret"), tok)
    cipher = CredentialsCipher.from_base64(KEY)
    (sealed_one,) = rows(postgres_url, "SELECT credentials FROM broker.broker_connections WHERE connection_id = %s",
                         one.connection_id)[0]
    with pytest.raises(CredentialsDecryptionError):
        cipher.open(two.connection_id, bytes(sealed_one))
    with pytest.raises(CredentialsDecryptionError):
        CredentialsCipher.dev_only().open(one.connection_id, bytes(sealed_one))
    # moved in the database, the gateway refuses to use it (no plaintext, no other account)
    with psycopg.connect(_dsn(postgres_url)) as conn:
        conn.execute("UPDATE broker.broker_connections SET credentials = %s, updated_at = now() "
                     "WHERE connection_id = %s", (sealed_one, two.connection_id))
    err = await refused(gateway, "GetAccount", pb.GetAccountRequest(account_id=two.connection_id), tok)
    assert err.code() == grpc.StatusCode.INTERNAL and "secret" not in err.details()
    # a fresh nonce per record: the same credentials seal differently
    assert cipher.seal("c", {"k": "v"}) != cipher.seal("c", {"k": "v"})


async def test_pause_refuses_orders_and_revoke_deletes_credentials(gateway, test_issuer, standin, postgres_url):
    user = f"u-{uuid.uuid4().hex[:8]}"
    tok = user_token(test_issuer, user)
    conn = await oauth_connect(gateway, test_issuer, user, "PKOAUTHA")
    cid = conn.connection_id
    paused = await call(gateway, "PauseBrokerConnection", pb.PauseBrokerConnectionRequest(connection_id=cid), tok)
    assert paused.status == pb.BROKER_CONNECTION_STATUS_PAUSED
    orders = len(standin.accounts["PKOAUTHA"].orders)
    err = await refused(gateway, "PlaceOrder", pb.PlaceOrderRequest(
        account_id=cid, client_order_id="paused-1", symbol="AAPL", side=pb.SIDE_BUY, quantity=1), tok)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "paused" in err.details()
    assert len(standin.accounts["PKOAUTHA"].orders) == orders
    # reading and importing stay allowed while paused
    await call(gateway, "GetAccount", pb.GetAccountRequest(account_id=cid), tok)
    # resumed, it trades again
    resumed = await call(gateway, "ResumeBrokerConnection", pb.ResumeBrokerConnectionRequest(connection_id=cid), tok)
    assert resumed.status == pb.BROKER_CONNECTION_STATUS_ACTIVE
    done = await call(gateway, "PlaceOrder", pb.PlaceOrderRequest(
        account_id=cid, client_order_id="resumed-1", symbol="AAPL", side=pb.SIDE_BUY, quantity=1), tok)
    assert done.order.status == pb.ORDER_STATUS_FILLED

    revoked = await call(gateway, "RevokeBrokerConnection", pb.RevokeBrokerConnectionRequest(connection_id=cid), tok)
    assert revoked.status == pb.BROKER_CONNECTION_STATUS_REVOKED
    assert rows(postgres_url, "SELECT credentials, credentials_key_id, status FROM broker.broker_connections "
                              "WHERE connection_id = %s", cid) == [(None, None, "revoked")]
    for method, request in (("GetAccount", pb.GetAccountRequest(account_id=cid)),
                            ("PlaceOrder", pb.PlaceOrderRequest(account_id=cid, client_order_id="r-1", symbol="AAPL",
                                                                side=pb.SIDE_BUY, quantity=1)),
                            ("PauseBrokerConnection", pb.PauseBrokerConnectionRequest(connection_id=cid)),
                            ("ResumeBrokerConnection", pb.ResumeBrokerConnectionRequest(connection_id=cid)),
                            ("RevokeBrokerConnection", pb.RevokeBrokerConnectionRequest(connection_id=cid))):
        err = await refused(gateway, method, request, tok)
        assert err.code() == grpc.StatusCode.NOT_FOUND, method
    listed = await call(gateway, "ListBrokerConnections", pb.ListBrokerConnectionsRequest(), tok)
    assert list(listed.connections) == []


async def test_another_user_cannot_see_pause_or_revoke(gateway, test_issuer, standin):
    owner, other = f"o-{uuid.uuid4().hex[:8]}", f"x-{uuid.uuid4().hex[:8]}"
    conn = await call(gateway, "ConnectBrokerWithKeys", pb.ConnectBrokerWithKeysRequest(
        api_key_id="PKKEYSC", api_secret_key="secret-c-very-secret"), user_token(test_issuer, owner))
    tok = user_token(test_issuer, other)
    listed = await call(gateway, "ListBrokerConnections", pb.ListBrokerConnectionsRequest(), tok)
    assert conn.connection_id not in [c.connection_id for c in listed.connections]
    cid = conn.connection_id
    for method, request in (("GetAccount", pb.GetAccountRequest(account_id=cid)),
                            ("PlaceOrder", pb.PlaceOrderRequest(account_id=cid, client_order_id="x-1", symbol="AAPL",
                                                                side=pb.SIDE_BUY, quantity=1)),
                            ("PauseBrokerConnection", pb.PauseBrokerConnectionRequest(connection_id=cid)),
                            ("ResumeBrokerConnection", pb.ResumeBrokerConnectionRequest(connection_id=cid)),
                            ("RevokeBrokerConnection", pb.RevokeBrokerConnectionRequest(connection_id=cid))):
        err = await refused(gateway, method, request, tok)
        assert err.code() == grpc.StatusCode.NOT_FOUND, method
    still = await call(gateway, "ListBrokerConnections", pb.ListBrokerConnectionsRequest(),
                       user_token(test_issuer, owner))
    assert [(c.connection_id, c.status) for c in still.connections] == [(cid, pb.BROKER_CONNECTION_STATUS_ACTIVE)]


def test_credentials_key_settings(tmp_path):
    with pytest.raises(ValueError, match="needs a key for the stored broker credentials"):
        BrokerSettings(environment="prod", **_prod())
    dev_key = base64.b64encode(hashlib.sha256(
        b"bsopt DEV-ONLY broker credentials key; never protects real credentials").digest()).decode()
    with pytest.raises(ValueError, match="dev-only key"):
        BrokerSettings(environment="prod", credentials_key=dev_key, **_prod())
    with pytest.raises(ValueError, match="32 bytes, got 5"):
        BrokerSettings(environment="prod", credentials_key="c2hvcnQ=", **_prod())
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    settings = BrokerSettings(environment="prod", credentials_key_file=path, **_prod())
    assert settings.credentials_cipher().key_id == CredentialsCipher.from_base64(KEY).key_id
    assert KEY not in repr(settings) and KEY not in repr(settings.credentials_cipher())
    assert BrokerSettings(environment="test").credentials_cipher().key_id.startswith("dev-only:")


def _prod() -> dict[str, str]:
    return {"database_url": "postgresql://u@db.example:5432/d", "kafka_bootstrap_servers": "k.example:9092",
            "issuer": "https://auth.example", "client_secret": "real-secret"}


@pytest.fixture(autouse=True)
def _no_env_key() -> Iterator[None]:
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("BSOPT_BROKER_CREDENTIALS")}
    yield
    os.environ.update(saved)


async def test_an_expired_state_is_refused(gateway, test_issuer, postgres_url):
    user = f"u-{uuid.uuid4().hex[:8]}"
    started = await call(gateway, "StartBrokerConnection", pb.StartBrokerConnectionRequest(),
                         user_token(test_issuer, user))
    code, state = approve(started.authorize_url, "PKOAUTHA")
    with psycopg.connect(_dsn(postgres_url)) as conn:
        conn.execute("UPDATE broker.broker_oauth_states SET expires_at = now() - interval '1 second' "
                     "WHERE state_hash = %s", (hashlib.sha256(state.encode()).hexdigest(),))
    err = await refused(gateway, "CompleteBrokerConnection", pb.CompleteBrokerConnectionRequest(state=state, code=code),
                        service_token(test_issuer))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "expired" in err.details()


async def test_trades_of_a_paused_connection_import_as_alpaca(gateway, test_issuer, standin):
    user = f"u-{uuid.uuid4().hex[:8]}"
    tok = user_token(test_issuer, user)
    conn = await call(gateway, "ConnectBrokerWithKeys", pb.ConnectBrokerWithKeysRequest(
        api_key_id="PKKEYSC", api_secret_key="secret-c-very-secret"), tok)
    await call(gateway, "PlaceOrder", pb.PlaceOrderRequest(account_id=conn.connection_id, client_order_id="imp-1",
                                                           symbol="AAPL", side=pb.SIDE_BUY, quantity=1), tok)
    await call(gateway, "PauseBrokerConnection", pb.PauseBrokerConnectionRequest(connection_id=conn.connection_id), tok)
    now = datetime.now(UTC)
    window = pb.ImportTradesRequest(account_id=conn.connection_id, start=codec.timestamp(now - timedelta(days=1)),
                                    end=codec.timestamp(now + timedelta(minutes=1)))
    imported = await call(gateway, "ImportTrades", window, tok)
    assert imported.trades_imported >= 1
    again = await call(gateway, "ImportTrades", window, tok)
    assert again.trades_imported == 0 and again.duplicates_skipped == imported.trades_imported
