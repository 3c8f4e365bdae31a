"""gRPC entrypoint: decode, call the paper broker / importer in a worker thread, encode.

The caller's user id arrives as an explicit request field; the caller's own identity
and scopes were checked by the token interceptor (see ``METHOD_SCOPES``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as pb_grpc
from bsopt_broker.adapters.paper import OrderRequest, PaperBroker
from bsopt_broker.domain.balance_guard import OrderRejected, Side
from bsopt_broker.imports import TradeImporter
from bsopt_common.events import Outbox
from bsopt_common.grpc_server import FailedPrecondition, InvalidArgument, abort_with

_SERVICE = "/bsopt.broker_gateway.v1.BrokerGatewayService/"
METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    _SERVICE + "CreateAccount": ("broker:accounts",),
    _SERVICE + "GetAccount": ("broker:accounts",),
    _SERVICE + "PlaceOrder": ("broker:orders",),
    _SERVICE + "ImportTrades": ("broker:import",),
}

_SIDES = {pb.SIDE_BUY: Side.BUY, pb.SIDE_SELL: Side.SELL}


def _ts(dt: datetime | None) -> Timestamp | None:
    if dt is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(dt if dt.tzinfo else dt.replace(tzinfo=UTC))
    return ts


def _dt(ts: Timestamp, field: str) -> datetime:
    if ts.seconds == 0 and ts.nanos == 0:
        raise InvalidArgument(f"{field} is required")
    return ts.ToDatetime(tzinfo=UTC)


def account_pb(account: dict, positions: list[dict]) -> pb.Account:
    return pb.Account(
        account_id=account["account_id"], user_id=account["user_id"], broker=account["broker"],
        currency=account["currency"], cash_usd=float(account["cash_usd"]),
        positions=[pb.Position(symbol=p["symbol"], quantity=int(p["quantity"]),
                               average_price_usd=float(p["average_price_usd"])) for p in positions],
        created_at=_ts(account.get("created_at")),
    )


def order_pb(o: dict) -> pb.Order:
    return pb.Order(
        order_id=o["order_id"], client_order_id=o["client_order_id"], account_id=o["account_id"], symbol=o["symbol"],
        side=pb.SIDE_BUY if o["side"] == "BUY" else pb.SIDE_SELL, quantity=int(o["quantity"]),
        status=pb.ORDER_STATUS_FILLED if o["status"] == "FILLED" else pb.ORDER_STATUS_REJECTED,
        submitted_at=_ts(o["submitted_at"]), filled_at=_ts(o.get("filled_at")),
        fill_latency_ms=float(o.get("fill_latency_ms") or 0.0), reject_reason=o.get("reject_reason") or "",
    )


def fill_pb(f: dict) -> pb.Fill:
    return pb.Fill(
        trade_id=f["trade_id"], order_id=f["order_id"], account_id=f["account_id"], symbol=f["symbol"],
        side=pb.SIDE_BUY if f["side"] == "BUY" else pb.SIDE_SELL, quantity=int(f["quantity"]),
        price_usd=float(f["price_usd"]), fee_usd=float(f["fee_usd"]), executed_at=_ts(f["executed_at"]),
    )


class BrokerGatewayServicer(pb_grpc.BrokerGatewayServiceServicer):
    def __init__(self, broker: PaperBroker, importer: TradeImporter, outbox: Outbox):
        self.broker = broker
        self.importer = importer
        self.outbox = outbox

    async def CreateAccount(self, request: pb.CreateAccountRequest, context: aio.ServicerContext) -> pb.Account:
        try:
            if request.broker not in ("", "paper"):
                raise InvalidArgument(f"broker {request.broker!r} is not available; use 'paper'")
            account, positions = await asyncio.to_thread(
                self.broker.create_account, request.user_id, request.initial_cash_usd)
            return account_pb(account, positions)
        except Exception as exc:  # mapped by one table in grpc_server.status_for
            await abort_with(context, exc)

    async def GetAccount(self, request: pb.GetAccountRequest, context: aio.ServicerContext) -> pb.Account:
        try:
            account, positions = await asyncio.to_thread(self.broker.get_account, request.account_id, request.user_id)
            return account_pb(account, positions)
        except Exception as exc:
            await abort_with(context, exc)

    async def PlaceOrder(self, request: pb.PlaceOrderRequest, context: aio.ServicerContext) -> pb.PlaceOrderResponse:
        try:
            if request.side not in _SIDES:
                raise InvalidArgument("side must be SIDE_BUY or SIDE_SELL")
            req = OrderRequest(
                account_id=request.account_id, user_id=request.user_id, client_order_id=request.client_order_id,
                symbol=request.symbol, side=_SIDES[request.side], quantity=request.quantity,
                as_of=_dt(request.as_of, "as_of"),
            )
            try:
                result = await asyncio.to_thread(self.broker.place_market_order, req)
            except OrderRejected as exc:
                raise FailedPrecondition(str(exc)) from None
            return pb.PlaceOrderResponse(order=order_pb(result.order), fills=[fill_pb(f) for f in result.fills],
                                         account=account_pb(result.account, result.positions))
        except Exception as exc:
            await abort_with(context, exc)

    async def ImportTrades(self, request: pb.ImportTradesRequest,
                           context: aio.ServicerContext) -> pb.ImportTradesResponse:
        try:
            result = await asyncio.to_thread(
                self.importer.import_trades, request.account_id, request.user_id,
                _dt(request.start, "start"), _dt(request.end, "end"))
            self.outbox.notify()
            return pb.ImportTradesResponse(import_id=result.import_id, trades_imported=result.trades_imported,
                                           duplicates_skipped=result.duplicates_skipped)
        except Exception as exc:
            await abort_with(context, exc)
