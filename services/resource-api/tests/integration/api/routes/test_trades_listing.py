"""``GET /v1/trades`` filters and pages (Link rel="next"), refuses unknown parameters, and
``GET /v1/trades/{id}`` reads one trade: resource-api over HTTP in front of a real
ml-scorer gRPC server, trades scored by the real TradeScorer into Postgres."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as bpb
from bsopt.broker_gateway.v1 import events_pb2 as broker_events
from bsopt_api.config import ApiSettings
from bsopt_common import codec
from bsopt_common.db import create_db_engine, make_session_factory, session_scope
from bsopt_common.events import Outbox
from bsopt_common.marketdata import bundled_provider
from bsopt_common.money import Money
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_scorer import models as scorer_models
from bsopt_scorer.bootstrap import serve
from bsopt_scorer.config import ScorerSettings
from bsopt_scorer.scoring import TradeScorer

DAYS = [d.to_pydatetime().replace(tzinfo=UTC, hour=15) for d in bundled_provider().fetch_history("GOOGL").index[-12:]]
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def scorer(service_database_urls, kafka_bootstrap, test_issuer) -> Iterator[str]:
    port = free_port()
    settings = ScorerSettings(
        database_url=service_database_urls["ml-scorer"], kafka_bootstrap_servers=kafka_bootstrap, port=port,
        **service_identity(test_issuer, "ml-scorer"))
    with ServiceThread(lambda stop: serve(settings, stop), port=port):
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def api_settings(settings_for: Callable[..., ApiSettings], scorer: str) -> ApiSettings:
    return settings_for(ml_scorer_target=scorer)


@pytest.fixture(scope="module")
def scored(service_database_urls, scorer) -> Callable[[str, int], list[str]]:
    engine = create_db_engine(service_database_urls["ml-scorer"])
    factory = make_session_factory(engine)

    def make(user: str, n: int) -> list[str]:
        ids = []
        for day in DAYS[:n]:
            trade_id = f"t-{uuid.uuid4().hex[:12]}"
            with session_scope(factory) as s:
                TradeScorer(bundled_provider(), Outbox(scorer_models.SCHEMA)).score(broker_events.TradeImported(
                    trade_id=trade_id, user_id=user, account_id="acct", symbol="GOOGL", side=bpb.SIDE_BUY,
                    quantity=1, price=codec.money_pb(Money.of(800, "USD")), executed_at=codec.timestamp(day)), s)
            ids.append(trade_id)
        return ids

    yield make
    engine.dispose()


def bearer(tokens: Any, user: str) -> dict[str, str]:
    return tokens.bearer(tokens.user("trades:read", sub=user))


async def test_pages_follow_the_link_header_and_filters_apply(client: httpx.AsyncClient, tokens, scored):
    user = f"rest-{uuid.uuid4().hex[:6]}"
    ids = scored(user, 10)
    headers = bearer(tokens, user)
    seen, url, pages = [], "/v1/trades?limit=4", 0
    while url:
        r = await client.get(url, headers=headers)
        assert r.status_code == 200, r.text
        seen.extend(t["trade_id"] for t in r.json())
        pages += 1
        link = r.headers.get("link")
        url = link[1:link.index(">")] if link else ""
        if link:
            assert link.endswith('rel="next"') and parse_qs(urlsplit(url).query)["limit"] == ["4"]
    assert pages == 3 and seen == list(reversed(ids))

    window = await client.get("/v1/trades", params={"since": DAYS[2].isoformat(), "until": DAYS[5].isoformat()},
                              headers=headers)
    assert [t["trade_id"] for t in window.json()] == list(reversed(ids[2:5]))
    label = window.json()[0]["label"]
    only = await client.get("/v1/trades", params={"label": label.lower()}, headers=headers)
    assert only.status_code == 200 and {t["label"] for t in only.json()} == {label}
    assert (await client.get("/v1/trades", params={"symbol": "AAPL"}, headers=headers)).json() == []

    one = await client.get(f"/v1/trades/{ids[0]}", headers=headers)
    assert one.status_code == 200 and one.json()["trade_id"] == ids[0] and one.json()["features"]["rsi_14"] > 0
    other = await client.get(f"/v1/trades/{ids[0]}", headers=bearer(tokens, "someone-else"))
    assert other.status_code == 404 and other.headers["content-type"].startswith(PROBLEM)


async def test_unknown_and_bad_parameters_are_422_or_400(client: httpx.AsyncClient, tokens, scored):
    user = f"bad-{uuid.uuid4().hex[:6]}"
    scored(user, 2)
    headers = bearer(tokens, user)
    for params in ({"limt": "5"}, {"labels": "FOMO"}, {"label": "GREED"}, {"limit": "0"}, {"cursor": "a b"},
                   {"since": "yesterday"}):
        r = await client.get("/v1/trades", params=params, headers=headers)
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"].startswith(PROBLEM)
    first = await client.get("/v1/trades", params={"limit": 1}, headers=headers)
    cursor = parse_qs(urlsplit(first.headers["link"][1:first.headers["link"].index(">")].replace(
        "/v1/trades", "http://x/v1/trades")).query)["cursor"][0]
    for params in ({"cursor": "bm90LWEtdG9rZW4"}, {"cursor": cursor, "symbol": "GOOGL"}):
        r = await client.get("/v1/trades", params=params, headers=headers)
        assert r.status_code == 400, (params, r.text)


async def test_a_note_on_a_trade_and_what_the_coach_socket_added(client: httpx.AsyncClient, tokens, scored,
                                                                 service_database_urls):
    user = f"note-{uuid.uuid4().hex[:6]}"
    [trade_id] = scored(user, 1)
    writer = tokens.bearer(tokens.user("trades:read trades:write", sub=user))
    r = await client.put(f"/v1/trades/{trade_id}/note", json={"text": "entered on the plan's level"}, headers=writer)
    assert r.status_code == 200, r.text
    assert r.json()["text"] == "entered on the plan's level" and r.json()["created_at"].endswith("Z")
    again = await client.put(f"/v1/trades/{trade_id}/note", json={"text": "entered on the plan's level"},
                             headers=writer)
    assert again.json() == r.json()  # idempotent: nothing added
    # what the coach socket stores (note.add, chat.feedback) shows on the trade too
    with psycopg.connect(service_database_urls["resource-api"].replace("postgresql+psycopg://", "postgresql://", 1)) \
            as conn:
        conn.execute("INSERT INTO api.coach_notes (user_id, trade_id, text) VALUES (%s, %s, 'from the socket')",
                     (user, trade_id))
        conn.execute("INSERT INTO api.coach_feedback (user_id, trade_id, rating) VALUES (%s, %s, 'up')",
                     (user, trade_id))
    got = (await client.get(f"/v1/trades/{trade_id}", headers=writer)).json()
    assert [n["text"] for n in got["notes"]] == ["entered on the plan's level", "from the socket"]
    assert got["note"] == "from the socket" and got["feedback"] == "up"

    for body, status in (({"text": ""}, 422), ({"text": "x" * 2001}, 422), ({"text": "ok", "extra": 1}, 422),
                         ({}, 422)):
        assert (await client.put(f"/v1/trades/{trade_id}/note", json=body, headers=writer)).status_code == status
    other = tokens.bearer(tokens.user("trades:read trades:write", sub="someone-else"))
    assert (await client.put(f"/v1/trades/{trade_id}/note", json={"text": "mine"}, headers=other)).status_code == 404
    reader = tokens.bearer(tokens.user("trades:read", sub=user))
    assert (await client.put(f"/v1/trades/{trade_id}/note", json={"text": "x"}, headers=reader)).status_code == 403
