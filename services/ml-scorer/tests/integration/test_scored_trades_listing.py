"""ListScoredTrades with filters and keyset pages, and GetScoredTrade, over real gRPC with
delegated tokens; trades scored by the real TradeScorer into Postgres."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import pytest

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as bpb
from bsopt.broker_gateway.v1 import events_pb2 as broker_events
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as pb
from bsopt.ml_scorer.v1 import ml_scorer_pb2_grpc as pb_grpc
from bsopt_common import codec
from bsopt_common.db import create_db_engine, make_session_factory, session_scope
from bsopt_common.events import Outbox
from bsopt_common.marketdata import bundled_provider
from bsopt_common.money import Money
from bsopt_common.settings import ML_SCORER_AUDIENCE
from bsopt_common.testing.delegation import delegated_token
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_scorer import models
from bsopt_scorer.bootstrap import serve
from bsopt_scorer.config import ScorerSettings
from bsopt_scorer.scoring import TradeScorer

DAYS = [d.to_pydatetime().replace(tzinfo=UTC, hour=15) for d in bundled_provider().fetch_history("GOOGL").index[-40:]]


@pytest.fixture(scope="module")
def scorer(service_database_urls, kafka_bootstrap, test_issuer) -> Iterator[str]:
    port = free_port()
    settings = ScorerSettings(
        database_url=service_database_urls["ml-scorer"], kafka_bootstrap_servers=kafka_bootstrap, port=port,
        **service_identity(test_issuer, "ml-scorer"))
    with ServiceThread(lambda stop: serve(settings, stop), port=port):
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def session_factory(service_database_urls, scorer) -> Iterator[object]:
    engine = create_db_engine(service_database_urls["ml-scorer"])
    yield make_session_factory(engine)
    engine.dispose()


def score(session_factory, user: str, when: datetime, side: int = bpb.SIDE_BUY) -> str:
    trade_id = f"t-{uuid.uuid4().hex[:12]}"
    event = broker_events.TradeImported(
        trade_id=trade_id, user_id=user, account_id="acct", symbol="GOOGL", side=side, quantity=1,
        price=codec.money_pb(Money.of(800, "USD")), executed_at=codec.timestamp(when))
    with session_scope(session_factory) as s:
        TradeScorer(bundled_provider(), Outbox(models.SCHEMA)).score(event, s)
    return trade_id


def stub_call(target: str, method: str, request, token: str):
    with grpc.insecure_channel(target) as ch:
        return getattr(pb_grpc.MlScorerServiceStub(ch), method)(
            request, metadata=(("authorization", f"Bearer {token}"),), timeout=10)


def token(issuer, user: str) -> str:
    return delegated_token(issuer, user=user, aud=ML_SCORER_AUDIENCE, scope="scorer:read")


def test_pages_filters_and_one_trade(scorer, session_factory, test_issuer):
    user, other = f"lister-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
    ids = [score(session_factory, user, d) for d in DAYS[:25]]
    foreign = score(session_factory, other, DAYS[3])
    tok = token(test_issuer, user)

    seen, request, pages = [], pb.ListScoredTradesRequest(page_size=7), 0
    while True:
        resp = stub_call(scorer, "ListScoredTrades", request, tok)
        seen.extend(resp.trades)
        pages += 1
        if pages == 1:  # a newer trade scored meanwhile: the later pages do not move
            newest = score(session_factory, user, DAYS[-1])
        if not resp.next_page_token:
            break
        request.page_token = resp.next_page_token
    assert pages == 4 and [t.trade_id for t in seen] == list(reversed(ids))  # each once, newest first
    assert newest not in {t.trade_id for t in seen} and foreign not in {t.trade_id for t in seen}

    window = pb.ListScoredTradesRequest(since=codec.timestamp(DAYS[5]), until=codec.timestamp(DAYS[10]))
    got = stub_call(scorer, "ListScoredTrades", window, tok).trades
    assert [t.trade_id for t in got] == list(reversed(ids[5:10]))
    labels = {t.label for t in seen}
    for label in labels:
        only = stub_call(scorer, "ListScoredTrades", pb.ListScoredTradesRequest(label=label), tok).trades
        assert only and {t.label for t in only} == {label}
    assert stub_call(scorer, "ListScoredTrades", pb.ListScoredTradesRequest(symbol="AAPL"), tok).trades == []

    one = stub_call(scorer, "GetScoredTrade", pb.GetScoredTradeRequest(trade_id=ids[0]), tok)
    assert one.trade_id == ids[0] and one.explanation and one.features.rsi_14 > 0
    for trade_id in (foreign, "no-such-trade", ""):
        with pytest.raises(grpc.RpcError) as err:
            stub_call(scorer, "GetScoredTrade", pb.GetScoredTradeRequest(trade_id=trade_id), tok)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_bad_tokens_and_windows_are_invalid_argument(scorer, session_factory, test_issuer):
    user = f"bad-{uuid.uuid4().hex[:6]}"
    for d in DAYS[:3]:
        score(session_factory, user, d)
    tok = token(test_issuer, user)
    first = stub_call(scorer, "ListScoredTrades", pb.ListScoredTradesRequest(page_size=1), tok)
    assert first.next_page_token
    bad = [pb.ListScoredTradesRequest(page_token="not-a-token"),
           pb.ListScoredTradesRequest(page_token=first.next_page_token, symbol="GOOGL"),  # other filters
           pb.ListScoredTradesRequest(page_token="x" * 600),
           pb.ListScoredTradesRequest(since=codec.timestamp(DAYS[2]), until=codec.timestamp(DAYS[1])),
           pb.ListScoredTradesRequest(page_size=-1),
           pb.ListScoredTradesRequest(symbol="S" * 40)]
    for request in bad:
        with pytest.raises(grpc.RpcError) as err:
            stub_call(scorer, "ListScoredTrades", request, tok)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
