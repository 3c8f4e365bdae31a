"""A trained agent paper-trades its job's test period through broker-gateway.

One decision per test bar, at that bar's close: the agent's target position (0 = flat,
1 = long) comes from :func:`paper_trading_positions`, the same greedy walk as the
evaluation. A change of position becomes a market order that the paper broker fills at
that bar's real close, after its balance guard: going long buys as many whole shares as
the cash covers (keeping a margin for commission), going flat sells every share held.
Orders carry ``client_order_id = <run_id>-<date>``, so a retried call never trades twice.

Every broker-gateway call carries a token acting for the job's owner, obtained by
exchanging the owner's delegated token that came with ``RunPaperTrading`` (RFC 8693;
:class:`~bsopt_common.security.token_exchange.TokenExchanger`): broker-gateway takes the
account's owner from that token, so a paper run can only trade its owner's account.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal

import grpc

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as bpb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as bpb_grpc
from bsopt_common import codec
from bsopt_common.grpc_server import raise_domain_error
from bsopt_common.marketdata import MarketDataProvider
from bsopt_common.money import Money, price_decimal
from bsopt_trainer.domain.job import TrainingSpec, paper_trading_positions

#: gRPC metadata of one call (``authorization`` with a token acting for the user).
CallMetadata = Callable[[], Awaitable[Sequence[tuple[str, str]]]]

#: Fraction of cash held back on each buy to cover commission and rounding.
CASH_MARGIN = Decimal("0.005")


@dataclass(frozen=True)
class PaperRunResult:
    run_id: str
    orders: int
    fills: int
    rejected: int
    final_equity: Money
    """Cash plus the position at the last test bar's close."""


async def run_paper_trading(
    *, stub: bpb_grpc.BrokerGatewayServiceStub, market_data: MarketDataProvider, spec: TrainingSpec,
    checkpoint_path: str, account_id: str, metadata: CallMetadata,
) -> PaperRunResult:
    """``metadata()`` gives each broker-gateway call its credentials (a delegated token
    for the account's owner, refreshed by the exchanger's cache as it nears expiry).

    Raises broker-gateway's named errors as ours (NotFound for an account that is not
    the user's, InvalidArgument, Unavailable; balance-guard rejections are counted, not
    raised), other grpc.aio.AioRpcError as they are, ValueError for a checkpoint that
    does not fit (an internal error: the checkpoint is the service's own)."""
    bars = market_data.fetch_history(spec.symbol)
    positions = await asyncio.to_thread(paper_trading_positions, checkpoint_path, bars, spec)
    close_on = {d: price_decimal(c) for d, c in zip(bars.index.date, bars["close"], strict=True)}
    try:
        account = await stub.GetAccount(bpb.GetAccountRequest(account_id=account_id), timeout=30,
                                       metadata=await metadata())
    except grpc.aio.AioRpcError as exc:
        raise_domain_error(exc)
    cash = codec.money_from_pb(account, "cash")
    shares = next((p.quantity for p in account.positions if p.symbol == spec.symbol), 0)
    run_id = str(uuid.uuid4())
    orders = fills = rejected = 0
    for day, target in positions:
        close = close_on[day]
        if target == 1 and shares == 0:
            side = bpb.SIDE_BUY
            qty = int((cash.amount * (1 - CASH_MARGIN) / close).to_integral_value(rounding=ROUND_FLOOR))
        elif target == 0 and shares > 0:
            side, qty = bpb.SIDE_SELL, shares
        else:
            continue
        if qty <= 0:
            continue
        as_of = codec.timestamp(datetime(day.year, day.month, day.day, tzinfo=UTC))
        orders += 1
        try:
            resp = await stub.PlaceOrder(bpb.PlaceOrderRequest(
                account_id=account_id, client_order_id=f"{run_id}-{day.isoformat()}",
                symbol=spec.symbol, side=side, quantity=qty, as_of=as_of), timeout=30, metadata=await metadata())
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                rejected += 1
                continue
            raise_domain_error(exc)
        fills += len(resp.fills)
        cash = codec.money_from_pb(resp.account, "cash")
        shares = next((p.quantity for p in resp.account.positions if p.symbol == spec.symbol), 0)
    last_close = price_decimal(bars.loc[bars.index.date <= spec.test_end, "close"].iloc[-1])
    return PaperRunResult(run_id, orders, fills, rejected, cash + Money(last_close * shares, cash.currency))
