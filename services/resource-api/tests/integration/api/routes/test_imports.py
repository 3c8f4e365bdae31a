"""Background trade imports through the REST API (issue 8 §5), over real components: this
API on uvicorn, broker-gateway over real gRPC (real Postgres, the session's Kafka broker),
an Alpaca account of its accounts file served by the local Alpaca stand-in over real HTTP
(slowed with ``delay_s``)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]

from bsopt_api.api.routes.accounts import wants_async
from bsopt_api.config import ApiSettings
from bsopt_broker.bootstrap import BrokerGateway
from bsopt_broker.config import BrokerSettings
from bsopt_broker.trade_import import import_id_of
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_common.testing.standins import alpaca_standin_module

PROBLEM = "application/problem+json"
OWNER = "rest-importer"
KEY = "PKRESTIMPORT"
SECRET_ENV = "REST_IMPORTS_TEST_SECRET"
END = datetime(2026, 11, 30, tzinfo=UTC)
START = END - timedelta(days=30)
WINDOW = {"start": START.isoformat(), "end": END.isoformat()}
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(scope="module")
def standin() -> Iterator[Any]:
    s = alpaca_standin_module().AlpacaStandin()
    s.add_account(KEY, "rest-import-secret", cash=10_000)
    s.seed_fills(KEY, 150, START + timedelta(hours=1), END - timedelta(hours=1))  # 2 pages
    with s.serving():
        yield s


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, service_database_urls, kafka_bootstrap, test_issuer, standin) -> Iterator[str]:
    path = tmp_path_factory.mktemp("accounts") / "accounts.yaml"
    path.write_text(yaml.safe_dump({"accounts": [
        {"name": "rest-alpaca", "broker": "alpaca", "owner": OWNER, "api_key_id": KEY,
         "api_secret_key_env": SECRET_ENV, "base_url": standin.base_url}]}), encoding="utf-8")
    os.environ[SECRET_ENV] = "rest-import-secret"
    port = free_port()
    settings = BrokerSettings(database_url=service_database_urls["broker-gateway"],
                              kafka_bootstrap_servers=kafka_bootstrap, port=port, accounts_file=path,
                              **service_identity(test_issuer, "broker-gateway"))
    try:
        with ServiceThread(BrokerGateway(settings).run, port=port):
            yield f"127.0.0.1:{port}"
    finally:
        os.environ.pop(SECRET_ENV, None)


@pytest.fixture(scope="module")
def api_settings(settings_for: Callable[..., ApiSettings], gateway: str) -> ApiSettings:
    return settings_for(broker_gateway_target=gateway)


def bearer(tokens: Any, user: str, scope: str = "trades:read trades:write") -> dict[str, str]:
    return tokens.bearer(tokens.user(scope, sub=user))


def test_prefer_header_parsing():
    assert wants_async(["respond-async"]) and wants_async(["wait=10, Respond-Async"])
    assert wants_async(["return=minimal", "respond-async; x=1"])
    assert not wants_async(None) and not wants_async([]) and not wants_async(["return=representation"])
    assert not wants_async(["respond-asynchronously"])


async def test_async_import_202_location_and_polling(client: httpx.AsyncClient, tokens, standin):
    await client.get("/v1/accounts/rest-alpaca", headers=bearer(tokens, OWNER))  # client made, kind detected
    standin.accounts[KEY].delay_s = 0.5
    try:
        started = await client.post("/v1/accounts/rest-alpaca/imports", json=WINDOW,
                                    headers={**bearer(tokens, OWNER), **ASYNC})
        assert started.status_code == 202, started.text
        job = started.json()
        import_id = import_id_of(OWNER, "alpaca", "rest-alpaca", START, END)
        assert job["import_id"] == import_id
        assert started.headers["location"] == f"/v1/imports/{import_id}"
        assert started.headers["preference-applied"] == "respond-async"
        assert job["status"] in ("queued", "running") and job["trades_imported"] == 0 and job["error"] is None
        assert (job["account_id"], job["broker"], job["attempts"]) == ("rest-alpaca", "alpaca", 1)
        assert job["start"] == "2026-10-31T00:00:00Z" and job["end"] == "2026-11-30T00:00:00Z"

        # polled with read access only
        seen = []
        deadline = time.monotonic() + 60
        while True:
            polled = await client.get(started.headers["location"], headers=bearer(tokens, OWNER, "trades:read"))
            assert polled.status_code == 200, polled.text
            seen.append(polled.json())
            if seen[-1]["status"] in ("done", "failed") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        standin.accounts[KEY].delay_s = 0.0
    done = seen[-1]
    assert done["status"] == "done", done
    assert (done["pages_fetched"], done["fills_seen"], done["trades_imported"], done["duplicates_skipped"]) == (
        2, 150, 150, 0)
    assert done["account_kind"] == "paper" and done["finished_at"] and done["error"] is None
    assert seen[0]["status"] in ("queued", "running")

    # the same window again: the same job, nothing runs twice
    again = await client.post("/v1/accounts/rest-alpaca/imports", json=WINDOW,
                              headers={**bearer(tokens, OWNER), **ASYNC})
    assert again.status_code == 202 and again.json()["status"] == "done" and again.json()["attempts"] == 1

    # without the preference: the synchronous answer, as before (same import id)
    sync = await client.post("/v1/accounts/rest-alpaca/imports", json=WINDOW, headers=bearer(tokens, OWNER))
    assert sync.status_code == 200
    assert sync.json() == {"import_id": import_id, "trades_imported": 0, "duplicates_skipped": 150}


async def test_other_users_and_bad_requests(client: httpx.AsyncClient, tokens):
    import_id = import_id_of(OWNER, "alpaca", "rest-alpaca", START, END)
    other = tokens.new_user()
    for path in (f"/v1/imports/{import_id}", "/v1/imports/no-such-import"):
        r = await client.get(path, headers=bearer(tokens, other))
        assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM), r.text
    r = await client.post("/v1/accounts/rest-alpaca/imports", json=WINDOW, headers={**bearer(tokens, other), **ASYNC})
    assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM), r.text
    r = await client.post("/v1/accounts/rest-alpaca/imports", json={"start": WINDOW["end"], "end": WINDOW["start"]},
                          headers={**bearer(tokens, OWNER), **ASYNC})
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM)
    r = await client.post("/v1/accounts/rest-alpaca/imports", json=WINDOW,
                          headers={**bearer(tokens, OWNER, "trades:read"), **ASYNC})
    assert r.status_code == 403
    r = await client.get(f"/v1/imports/{import_id}", headers=bearer(tokens, OWNER, "training:read"))
    assert r.status_code == 403
