"""The contract layer between domain and wire: the topic registry, the codec, Money, and
the one error table of the gRPC serve helper (over a real grpc.aio server)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import grpc
import pytest

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as pb_grpc
from bsopt.broker_gateway.v1 import events_pb2 as broker_events
from bsopt.ml_scorer.v1 import events_pb2 as scorer_events
from bsopt_common import codec, topics
from bsopt_common.errors import InvalidArgument, NotFound
from bsopt_common.events import Outbox
from bsopt_common.grpc_server import GrpcServer, GrpcService, status_for
from bsopt_common.money import CurrencyMismatch, Money
from bsopt_common.security.jwt import AccessTokenVerifier, JWKSCache
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE
from bsopt_common.testing.services import free_port
from bsopt_common.vocabulary import BiasLabel, JobStatus, Side

# --- topic registry ------------------------------------------------------------------------


def test_every_topic_is_named_by_convention_and_keyed_by_a_payload_field():
    for name, topic in topics.TOPICS.items():
        domain, event, version = name.split(".")
        assert version == "v1" and domain and event
        assert topic.producers, f"{name} has no producer"
        assert topic.key(topic.payload()) == ""  # the key is read from the payload, not invented


def test_key_and_subject_come_from_the_payload():
    event = broker_events.TradeImported(trade_id="t1", user_id="u1")
    assert topics.TRADES_IMPORTED.key(event) == "u1"
    assert topics.TRADES_IMPORTED.subject(event) == "trades/t1"
    assert topics.TRADES_IMPORTED.dlq == "trades.imported.v1.dlq"


def test_outbox_refuses_a_payload_of_another_type_and_stages_nothing():
    class Session:
        def __init__(self) -> None:
            self.executed: list[object] = []

        def execute(self, stmt: object) -> None:
            self.executed.append(stmt)

    session = Session()
    with pytest.raises(TypeError, match=r"trades\.imported\.v1 carries bsopt\.broker_gateway\.v1\.TradeImported"):
        Outbox("broker").add(session, topics.TRADES_IMPORTED, scorer_events.TradeScored())  # type: ignore[arg-type]
    assert session.executed == []


def test_producer_acls_list_one_producer_per_topic():
    assert topics.producer_acls() == {
        "training.requested.v1": ["rl-trainer"], "training.progress.v1": ["rl-trainer"],
        "training.completed.v1": ["rl-trainer"], "trades.imported.v1": ["broker-gateway"],
        "trades.scored.v1": ["ml-scorer"], "digests.ready.v1": ["digest-worker"],
        "auth.audit.v1": ["auth-server"], "sells.decided.v1": ["broker-gateway"],
        "imports.progress.v1": ["broker-gateway"],
    }


# --- codec ----------------------------------------------------------------------------------


def test_timestamps_round_trip_and_naive_means_utc():
    aware = datetime(2024, 3, 1, 9, 30, 0, 123000, tzinfo=timezone(timedelta(hours=2)))
    assert codec.timestamp(aware).ToDatetime(tzinfo=UTC) == aware
    assert codec.timestamp(datetime(2024, 3, 1)).ToDatetime(tzinfo=UTC) == datetime(2024, 3, 1, tzinfo=UTC)
    assert codec.rfc3339(aware, "milliseconds") == "2024-03-01T07:30:00.123Z"
    assert codec.parse_rfc3339("2024-03-01T07:30:00.123Z") == aware


def test_required_timestamp_names_the_missing_field():
    with pytest.raises(InvalidArgument, match="as_of is required"):
        codec.required_timestamp(pb.PlaceOrderRequest(), "as_of")


@pytest.mark.parametrize(("codec_", "py_enum"), [
    (codec.SIDE, Side), (codec.BIAS_LABEL, BiasLabel), (codec.JOB_STATUS, JobStatus),
])
def test_enum_codecs_cover_every_member_both_ways(codec_, py_enum):
    for member in py_enum:
        assert codec_.from_pb(codec_.to_pb(member)) is member
    with pytest.raises(InvalidArgument):
        codec_.from_pb(0)  # *_UNSPECIFIED is the caller's mistake
    assert codec_.short_name(999) == "999"


@pytest.mark.parametrize("amount", ["0", "1.5", "-1.5", "-0.25", "0.000000001", "123456789012.123456789",
                                    "-999999999999999999", "999999999999999998.999999999"])
def test_money_round_trips_exactly_through_units_and_nanos(amount):
    money = Money.of(amount, "USD")
    wire = codec.money_pb(money)
    assert wire.nanos == 0 or (wire.nanos > 0) == (money.amount > 0)
    holder = pb.Fill(price=wire)
    assert codec.money_from_pb(holder, "price") == money


def test_money_is_exact_and_keeps_its_currency():
    assert Money.of("0.1", "USD") + Money.of("0.2", "USD") == Money.of("0.3", "USD")
    with pytest.raises(CurrencyMismatch):
        Money.of("1", "USD") + Money.of("1", "EUR")
    with pytest.raises(InvalidArgument):
        Money.of(0.1, "USD")  # type: ignore[arg-type] - a float is never an amount
    for bad in ("NaN", "Infinity", "1e30"):
        with pytest.raises(InvalidArgument):
            Money.of(bad, "USD")
    with pytest.raises(InvalidArgument, match="ISO 4217"):
        Money.of("1", "usd")


@dataclasses.dataclass(frozen=True)
class _Spec:
    symbol: str
    start: date
    window_size: int = 16
    cost_bps: float = 10.0


def test_records_map_to_messages_by_field_name():
    fill = pb.Fill(trade_id="t", side=pb.SIDE_SELL, price=codec.money_pb(Money.of("10.5", "USD")),
                   executed_at=codec.timestamp(datetime(2024, 1, 2, tzinfo=UTC)))

    @dataclasses.dataclass(frozen=True)
    class FillRecord:
        trade_id: str
        side: Side
        price: Money
        executed_at: datetime

    record = codec.from_message(fill, FillRecord)
    assert record == FillRecord("t", Side.SELL, Money.of("10.5", "USD"), datetime(2024, 1, 2, tzinfo=UTC))
    assert codec.to_message(record, pb.Fill) == fill


def test_record_from_dict_reads_iso_dates_and_refuses_unknown_keys():
    assert codec.record_from_dict(_Spec, {"symbol": "X", "start": "2020-01-02"}) == _Spec("X", date(2020, 1, 2))
    with pytest.raises(InvalidArgument, match="unknown _Spec fields"):
        codec.record_from_dict(_Spec, {"symbol": "X", "start": "2020-01-02", "typo": 1})


# --- the one error table --------------------------------------------------------------------


def test_only_named_errors_reach_callers():
    assert status_for(NotFound("account a1 not found")) == (grpc.StatusCode.NOT_FOUND, "account a1 not found")
    assert status_for(InvalidArgument("bad")) == (grpc.StatusCode.INVALID_ARGUMENT, "bad")
    # stray built-in errors are bugs: INTERNAL with a fixed message, never "NOT_FOUND: checkpoint_path"
    for exc in (KeyError("checkpoint_path"), ValueError("x"), AttributeError("y")):
        assert status_for(exc) == (grpc.StatusCode.INTERNAL, "internal error")


class _Faulty(pb_grpc.BrokerGatewayServiceServicer):
    async def GetAccount(self, request, context):
        if request.account_id == "missing":
            raise NotFound("account missing not found for this user")
        return {}["checkpoint_path"]  # a stray KeyError from a dict lookup


def test_a_service_without_a_scope_for_every_method_does_not_start():
    service = GrpcService(pb.DESCRIPTOR.services_by_name["BrokerGatewayService"],
                          pb_grpc.add_BrokerGatewayServiceServicer_to_server, _Faulty(),
                          {"GetAccount": ("broker:accounts",)})
    with pytest.raises(ValueError, match="methods without a scope policy"):
        service.scope_table()


async def test_stray_key_error_is_internal_and_logged_named_error_keeps_its_status(test_issuer, caplog):
    scopes = {m.name: ("broker:accounts",) for m in pb.DESCRIPTOR.services_by_name["BrokerGatewayService"].methods}
    service = GrpcService(pb.DESCRIPTOR.services_by_name["BrokerGatewayService"],
                          pb_grpc.add_BrokerGatewayServiceServicer_to_server, _Faulty(), scopes)
    verifier = AccessTokenVerifier(test_issuer.issuer, BROKER_GATEWAY_AUDIENCE, JWKSCache(test_issuer.jwks_url))
    server = GrpcServer(host="127.0.0.1", port=free_port(), services=[service], verifier=verifier)
    await server.start()
    token = test_issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope="broker:accounts")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.BrokerGatewayServiceStub(channel)
            md = (("authorization", f"Bearer {token}"),)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetAccount(pb.GetAccountRequest(account_id="a1"), metadata=md, timeout=10)
            assert (err.value.code(), err.value.details()) == (grpc.StatusCode.INTERNAL, "internal error")
            assert any("KeyError" in (r.exc_text or "") or "checkpoint_path" in str(r.exc_info)
                       for r in caplog.records)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetAccount(pb.GetAccountRequest(account_id="missing"), metadata=md, timeout=10)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await server.stop(0)
        await verifier.jwks.aclose()
    await asyncio.sleep(0)


def test_decimal_amounts_never_need_an_epsilon():
    cash = Money(Decimal("1000.99"), "USD")
    assert not cash >= Money(Decimal("1001"), "USD")
