"""Rotating the key that seals stored broker credentials: a new current key with the old
one as previous keeps every connection working, ``reseal-credentials`` moves the rows to
the new key (through the real command), and then the old key can go. A gateway without
the sealing key answers UNAVAILABLE naming the key id, never a key. Real gRPC, Postgres,
the Alpaca stand-in through alpaca-py."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
import pytest

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as pb_grpc
from bsopt_broker.bootstrap import BrokerGateway
from bsopt_broker.config import BrokerSettings
from bsopt_broker.connections.crypto import CredentialsCipher
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE
from bsopt_common.testing.grpc_calls import grpc_calls
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_common.testing.standins import alpaca_standin_module

OLD, NEW, OTHER = (base64.b64encode(os.urandom(32)).decode() for _ in range(3))
SCOPES = "broker:accounts broker:connections broker:connections.read"


@pytest.fixture(scope="module")
def standin() -> Iterator[Any]:
    s = alpaca_standin_module().AlpacaStandin()
    s.add_account("PKROTATE1", "rotate-secret-1", cash=20_000)
    s.add_account("PKROTATE2", "rotate-secret-2", cash=30_000)
    with s.serving():
        yield s


def settings_for(urls: dict[str, str], kafka: str, issuer: Any, standin: Any, key: str,
                 previous: str | None = None) -> BrokerSettings:
    return BrokerSettings(
        database_url=urls["broker-gateway"], kafka_bootstrap_servers=kafka, port=free_port(), credentials_key=key,
        credentials_previous_keys=previous, alpaca_trading_base_url=standin.base_url,
        **service_identity(issuer, "broker-gateway"))


call, refused = grpc_calls(pb_grpc.BrokerGatewayServiceStub)


def token(issuer: Any, user: str) -> str:
    return issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope=SCOPES, client_id="resource-api", sub=user,
                        act={"sub": "resource-api"})


def key_ids(url: str, connection_ids: list[str]) -> set[str]:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        return {r[0] for r in conn.execute(
            "SELECT credentials_key_id FROM broker.broker_connections WHERE connection_id = ANY(%s)",
            (connection_ids,)).fetchall()}


async def test_rotate_reseal_then_drop_the_old_key(service_database_urls, kafka_bootstrap, test_issuer, standin):
    user = f"rot-{uuid.uuid4().hex[:8]}"
    tok = token(test_issuer, user)
    url = service_database_urls["broker-gateway"]

    def gateway(key: str, previous: str | None = None) -> tuple[ServiceThread, str]:
        s = settings_for(service_database_urls, kafka_bootstrap, test_issuer, standin, key, previous)
        return ServiceThread(BrokerGateway(s).run, port=s.port), f"127.0.0.1:{s.port}"

    async def balances(target: str, ids: list[str]) -> list[str]:
        return [(await call(target, "GetAccount", pb.GetAccountRequest(account_id=i), tok)).cash.units
                for i in ids]

    # connected under the old key
    thread, target = gateway(OLD)
    with thread:
        ids = []
        for key_id, secret in (("PKROTATE1", "rotate-secret-1"), ("PKROTATE2", "rotate-secret-2")):
            made = await call(target, "ConnectBrokerWithKeys", pb.ConnectBrokerWithKeysRequest(
                broker="alpaca", api_key_id=key_id, api_secret_key=secret, paper=True), tok)
            ids.append(made.connection_id)
        before = await balances(target, ids)
    old_id, new_id = CredentialsCipher.from_base64(OLD).key_id, CredentialsCipher.from_base64(NEW).key_id
    assert key_ids(url, ids) == {old_id}

    # a gateway with only another key: UNAVAILABLE naming the key id, never key material
    thread, target = gateway(OTHER)
    with thread:
        err = await refused(target, "GetAccount", pb.GetAccountRequest(account_id=ids[0]), tok)
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert old_id in (err.details() or "") and OLD not in (err.details() or "")

    # new current key, old as previous: everything still works, rows still on the old key
    thread, target = gateway(NEW, previous=OLD)
    with thread:
        assert await balances(target, ids) == before
        made = await call(target, "ConnectBrokerWithKeys", pb.ConnectBrokerWithKeysRequest(
            broker="alpaca", api_key_id="PKROTATE1", api_secret_key="rotate-secret-1", paper=True),
            token(test_issuer, f"{user}-2"))
    assert key_ids(url, ids) == {old_id} and key_ids(url, [made.connection_id]) == {new_id}

    # the operator's command re-seals the old rows under the new key
    env = {**os.environ, "DATABASE_URL": url, "BSOPT_BROKER_CREDENTIALS_KEY": NEW,
           "BSOPT_BROKER_CREDENTIALS_PREVIOUS_KEYS": f"{OTHER}, {OLD}", "BSOPT_BROKER_ENVIRONMENT": "test",
           "OTEL_SDK_DISABLED": "true"}
    done = subprocess.run([sys.executable, "-m", "bsopt_broker", "reseal-credentials"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "resealed 2 connection(s)" in done.stdout and "0 could not be opened" in done.stdout
    assert OLD not in done.stdout + done.stderr and NEW not in done.stdout + done.stderr
    assert key_ids(url, ids) == {new_id}

    # the old key dropped: still every connection opens
    thread, target = gateway(NEW)
    with thread:
        assert await balances(target, ids) == before
