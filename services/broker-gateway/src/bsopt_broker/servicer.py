"""gRPC entrypoint: decode with the codec, call the venue / importer in a worker thread,
encode. Errors are named (``bsopt_common.errors``) and mapped by the serve helper.

Every method acts for a user: the user is the ``sub`` of the call's delegated token
(RFC 8693 token exchange; :func:`~bsopt_common.security.grpc.acting_user`), never a request
field, and a service's own client-credentials token is refused with PERMISSION_DENIED.
The token's scopes were checked by the token interceptor (see ``METHOD_SCOPES``).
"""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from grpc import aio

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as pb_grpc
from bsopt_broker.adapters.router import ACCOUNTS_FILE_ENV, ALPACA, VenueRouter
from bsopt_broker.connections.rpc import CONNECTION_METHOD_SCOPES, ConnectionRpcs
from bsopt_broker.connections.service import ConnectionService
from bsopt_broker.domain.records import AccountKind, MarketOrder, OrderStatus
from bsopt_broker.domain.sell_rules import SellRules
from bsopt_broker.domain.venue import Broker
from bsopt_broker.import_jobs import ImportJobs, job_pb
from bsopt_broker.listing import ListedFill, ListedOrder, Listing, PageRequest
from bsopt_broker.sell import CloseAllRequest, SellModule
from bsopt_broker.trade_import import TradeImporter
from bsopt_common import codec
from bsopt_common.errors import FailedPrecondition, InvalidArgument, NotFound
from bsopt_common.events import Outbox
from bsopt_common.grpc_server import GrpcService
from bsopt_common.security.grpc import acting_user

METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    "CreateAccount": ("broker:accounts",),
    "GetAccount": ("broker:accounts",),
    "PlaceOrder": ("broker:orders",),
    "ImportTrades": ("broker:import",),
    "StartImport": ("broker:import",),
    "GetImport": ("broker:accounts",),
    **CONNECTION_METHOD_SCOPES,
    # the sell module: rules and close-all, never an arbitrary order (a user's
    # trades:write may grant it; broker:orders stays the trainer's)
    "SetSellRules": ("broker:sells",),
    "CloseAllPositions": ("broker:sells",),
    "GetCloseAllRequest": ("broker:accounts",),  # reading how far a request came
    "ListOrders": ("broker:accounts",),
    "ListFills": ("broker:accounts",),
}
ORDER_STATUS = codec.EnumCodec(pb.OrderStatus, OrderStatus, "ORDER_STATUS_")
ACCOUNT_KIND = codec.EnumCodec(pb.AccountKind, AccountKind, "ACCOUNT_KIND_")


class BrokerGatewayServicer(ConnectionRpcs, pb_grpc.BrokerGatewayServiceServicer):
    def __init__(self, broker: Broker, importer: TradeImporter, outbox: Outbox, *,
                 alpaca_importer: TradeImporter | None = None, sells: SellModule | None = None,
                 connections: ConnectionService | None = None, jobs: ImportJobs | None = None):
        """``alpaca_importer`` imports the Alpaca accounts of a :class:`VenueRouter` broker
        (recorded as broker ``"alpaca"``); ``importer`` every other account."""
        self.broker = broker
        self.importer = importer
        self.alpaca_importer = alpaca_importer
        self.connections = connections  # the broker-connection RPCs (ConnectionRpcs)
        self.outbox = outbox
        self.sells = sells
        self.jobs = jobs
        self.listing = Listing(importer.session_factory, broker)

    def importer_for(self, account_id: str) -> TradeImporter:
        """The importer of an account (Alpaca accounts: the one recording ``"alpaca"``)."""
        return self._importer_for(account_id)

    def _importer_for(self, account_id: str) -> TradeImporter:
        if (self.alpaca_importer is not None and isinstance(self.broker, VenueRouter)
                and self.broker.is_alpaca(account_id)):
            return self.alpaca_importer
        return self.importer

    async def CreateAccount(self, request: pb.CreateAccountRequest, context: aio.ServicerContext) -> pb.Account:
        """A new paper account. INVALID_ARGUMENT for broker "alpaca" (Alpaca accounts come
        from the accounts file or are connected by their owner) or any other broker than
        "paper"/empty."""
        if request.broker == ALPACA:
            raise InvalidArgument(f"Alpaca accounts cannot be created through the API: they are listed in the "
                                  f"accounts file ({ACCOUNTS_FILE_ENV}) and used by their name, or connected "
                                  f"(StartBrokerConnection, ConnectBrokerWithKeys) and used by their connection "
                                  f"id; CreateAccount opens {self.broker.name!r} accounts only")
        if request.broker not in ("", self.broker.name):
            raise InvalidArgument(f"broker {request.broker!r} is not available; use {self.broker.name!r}")
        initial_cash = codec.money_from_pb(request, "initial_cash")
        account = await asyncio.to_thread(self.broker.create_account, acting_user(), initial_cash)
        return codec.to_message(account, pb.Account)

    async def GetAccount(self, request: pb.GetAccountRequest, context: aio.ServicerContext) -> pb.Account:
        account = await asyncio.to_thread(self.broker.get_account, request.account_id, acting_user())
        return codec.to_message(account, pb.Account)

    async def PlaceOrder(self, request: pb.PlaceOrderRequest, context: aio.ServicerContext) -> pb.PlaceOrderResponse:
        """``as_of`` is required for paper accounts, optional (ignored) for Alpaca ones."""
        live_venue = isinstance(self.broker, VenueRouter) and self.broker.is_alpaca(request.account_id)
        as_of = codec.from_timestamp(request, "as_of")
        if as_of is None:
            if not live_venue:
                raise InvalidArgument("as_of is required")
            as_of = datetime.now(UTC)
        order = MarketOrder(
            account_id=request.account_id, user_id=acting_user(), client_order_id=request.client_order_id,
            symbol=request.symbol, side=codec.SIDE.from_pb(request.side, "side"), quantity=request.quantity,
            as_of=as_of,
        )
        result = await asyncio.to_thread(self.broker.submit_market_order, order)
        return pb.PlaceOrderResponse(order=codec.to_message(result.order, pb.Order),
                                     fills=[codec.to_message(f, pb.Fill) for f in result.fills],
                                     account=codec.to_message(result.account, pb.Account))

    async def ImportTrades(self, request: pb.ImportTradesRequest,
                           context: aio.ServicerContext) -> pb.ImportTradesResponse:
        """Import the window now and answer with the counts; recorded as the window's import
        job (``GetImport`` knows ``import_id``) where background imports run."""
        start, end = codec.required_timestamp(request, "start"), codec.required_timestamp(request, "end")
        if self.jobs is not None:
            result = await asyncio.to_thread(self.jobs.import_now, request.account_id, acting_user(), start, end)
        else:
            result = await asyncio.to_thread(
                self._importer_for(request.account_id).import_trades, request.account_id, acting_user(), start, end)
        self.outbox.notify()
        return codec.to_message(result, pb.ImportTradesResponse)

    def _jobs(self) -> ImportJobs:
        if self.jobs is None:
            raise FailedPrecondition("background imports are not running in this broker-gateway")
        return self.jobs

    async def StartImport(self, request: pb.StartImportRequest, context: aio.ServicerContext) -> pb.ImportJob:
        """Record the window's import job and return at once (QUEUED; or the job as it is
        when the same window was started before and did not fail). INVALID_ARGUMENT (no
        account id, missing or empty window), NOT_FOUND (not the caller's account)."""
        job = await asyncio.to_thread(
            self._jobs().start_import, request.account_id, acting_user(),
            codec.required_timestamp(request, "start"), codec.required_timestamp(request, "end"))
        self.outbox.notify()
        return job_pb(job)

    async def GetImport(self, request: pb.GetImportRequest, context: aio.ServicerContext) -> pb.ImportJob:
        """The caller's import job: status, counts so far, pages fetched, error.
        NOT_FOUND for an unknown or another user's import."""
        if not request.import_id:
            raise InvalidArgument("import_id is required")
        return job_pb(await asyncio.to_thread(self._jobs().get, request.import_id, acting_user()))

    def _sell_module(self) -> SellModule:
        if self.sells is None:
            raise FailedPrecondition("the sell module is not running in this broker-gateway")
        return self.sells

    async def SetSellRules(self, request: pb.SetSellRulesRequest, context: aio.ServicerContext) -> pb.SellRules:
        """Store the caller's stop-loss / take-profit (percent from the average entry price;
        unset: none) of an Alpaca account and return; the account's sell worker applies them.
        NOT_FOUND (not an Alpaca account of the caller), INVALID_ARGUMENT (out of range)."""
        sl = _pct(request, "stop_loss_pct")
        tp = _pct(request, "take_profit_pct")
        rules = await asyncio.to_thread(self._sell_module().set_rules, request.account_id, acting_user(), sl, tp)
        return _rules_pb(request.account_id, rules)

    async def CloseAllPositions(self, request: pb.CloseAllPositionsRequest,
                                context: aio.ServicerContext) -> pb.CloseAllPositionsResponse:
        """Queue the sale of every position of an Alpaca account; returns at once with the
        request id (no venue call here). NOT_FOUND, FAILED_PRECONDITION (read-only)."""
        request_id = await asyncio.to_thread(self._sell_module().close_all, request.account_id, acting_user())
        return pb.CloseAllPositionsResponse(request_id=request_id)

    async def GetCloseAllRequest(self, request: pb.GetCloseAllRequestRequest,
                                 context: aio.ServicerContext) -> pb.CloseAllRequest:
        """The caller's close-all request and how far it came. NOT_FOUND for an unknown or
        another user's id (a malformed id included: nothing to look up)."""
        try:
            request_id = str(uuid.UUID(request.request_id))
        except ValueError:
            raise NotFound(f"no close-all request {request.request_id[:64]!r} for this user") from None
        found = await asyncio.to_thread(self._sell_module().close_all_request, request_id, acting_user())
        return _close_all_pb(found)


    async def ListOrders(self, request: pb.ListOrdersRequest, context: aio.ServicerContext) -> pb.ListOrdersResponse:
        """The caller's account's orders, newest first, keyset-paged, each with the
        account's kind. NOT_FOUND (not the caller's account), INVALID_ARGUMENT (page_size,
        page_token, window)."""
        page = await asyncio.to_thread(self.listing.orders, _page_request(request))
        return pb.ListOrdersResponse(orders=[_order_pb(o) for o in page.items],
                                     next_page_token=page.next_page_token)

    async def ListFills(self, request: pb.ListFillsRequest, context: aio.ServicerContext) -> pb.ListFillsResponse:
        """The caller's account's fills, newest first; errors as ListOrders."""
        page = await asyncio.to_thread(self.listing.fills, _page_request(request))
        return pb.ListFillsResponse(fills=[_fill_pb(f) for f in page.items], next_page_token=page.next_page_token)


def _page_request(request: pb.ListOrdersRequest | pb.ListFillsRequest) -> PageRequest:
    return PageRequest(account_id=request.account_id, user_id=acting_user(), page_size=request.page_size,
                       page_token=request.page_token, since=codec.from_timestamp(request, "since"),
                       until=codec.from_timestamp(request, "until"))


def _order_pb(listed: ListedOrder) -> pb.Order:
    """Orders rebuilt from Alpaca's fills leave ``submitted_at`` unset (not known here)."""
    unknown: dict[str, object] = {"submitted_at": None} if listed.rebuilt else {}
    message = codec.to_message(listed.order, pb.Order, filled_quantity=listed.filled_quantity,
                               average_price=listed.average_price, fee=listed.fee, **unknown)
    if (t := listed.timing) is not None:
        message.timing.received_at.CopyFrom(codec.timestamp(t.received_at))
        for name in ("balance_checked_ms", "sent_ms", "acknowledged_ms", "filled_ms"):
            if (value := getattr(t, name)) is not None:
                setattr(message.timing, name, value)
    return message


def _fill_pb(listed: ListedFill) -> pb.Fill:
    return codec.to_message(listed.fill, pb.Fill, client_order_id=listed.client_order_id)


def _close_all_pb(r: CloseAllRequest) -> pb.CloseAllRequest:
    message = pb.CloseAllRequest(
        request_id=r.request_id, account_id=r.account_id, positions_sold=r.positions_sold,
        positions_refused=r.positions_refused, error=r.error, requested_at=codec.timestamp(r.requested_at),
        status=pb.CloseAllRequest.Status.Value(f"STATUS_{r.status.value.upper()}"))
    if r.started_at is not None:
        message.started_at.CopyFrom(codec.timestamp(r.started_at))
    if r.finished_at is not None:
        message.finished_at.CopyFrom(codec.timestamp(r.finished_at))
    return message


def _pct(request: pb.SetSellRulesRequest, field: str) -> Decimal | None:
    if not request.HasField(field):
        return None
    value = getattr(request, field)
    if not math.isfinite(value):
        raise InvalidArgument(f"{field} must be a finite number of percent, got {value}")
    return Decimal(str(value))


def _rules_pb(account_id: str, rules: SellRules) -> pb.SellRules:
    message = pb.SellRules(account_id=account_id, check_interval_s=rules.check_interval_s)
    if rules.stop_loss_pct is not None:
        message.stop_loss_pct = float(rules.stop_loss_pct)
    if rules.take_profit_pct is not None:
        message.take_profit_pct = float(rules.take_profit_pct)
    return message


def grpc_service(servicer: BrokerGatewayServicer) -> GrpcService:
    return GrpcService(pb.DESCRIPTOR.services_by_name["BrokerGatewayService"],
                       pb_grpc.add_BrokerGatewayServiceServicer_to_server, servicer, METHOD_SCOPES)
