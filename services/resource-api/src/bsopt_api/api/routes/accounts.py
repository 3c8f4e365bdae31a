"""``/v1/accounts``: broker-gateway accounts, their orders and fills, and trade imports;
``/v1/imports``: background imports (``Prefer: respond-async``, RFC 7240)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt_api import encoding
from bsopt_api.api.deps import Backends, TradesReader, TradesWriter
from bsopt_api.api.schemas import (
    PRINTABLE,
    Account,
    AccountCreate,
    FillPage,
    Instant,
    OrderPage,
    TradesImport,
    TradesImportCreate,
    TradesImportJob,
)
from bsopt_api.clients import BROKER_GATEWAY
from bsopt_common import codec
from bsopt_common.money import Money

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])
imports_router = APIRouter(prefix="/v1/imports", tags=["accounts"])

RESPOND_ASYNC = "respond-async"
_LOCATION = {"Location": {"description": "the import: GET it for its status", "schema": {"type": "string"}}}


def wants_async(prefer: list[str] | None) -> bool:
    """Does a ``Prefer`` header (RFC 7240; any number of them, comma-separated
    preferences, each maybe with ``=value`` and ``;`` parameters, names case-insensitive)
    ask for ``respond-async``? Other preferences are ignored, as RFC 7240 §2 says."""
    for header in prefer or ():
        for preference in header.split(","):
            name = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
            if name == RESPOND_ASYNC:
                return True
    return False


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Account)
async def create_account(
    body: AccountCreate, principal: TradesWriter, backends: Backends, response: Response
) -> dict[str, Any]:
    account = await backends.broker_gateway.CreateAccount(
        pb.CreateAccountRequest(broker=body.broker, initial_cash=codec.money_pb(
            Money(body.initial_cash.amount, body.initial_cash.currency))),
        timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, BROKER_GATEWAY, "broker:accounts"),
    )
    response.headers["Location"] = f"{router.prefix}/{account.account_id}"
    return encoding.account(account)


@router.get("/{account_id}", response_model=Account)
async def get_account(account_id: str, principal: TradesReader, backends: Backends) -> dict[str, Any]:
    account = await backends.broker_gateway.GetAccount(
        pb.GetAccountRequest(account_id=account_id),
        timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, BROKER_GATEWAY, "broker:accounts"),
    )
    return encoding.account(account)


PageSize = Annotated[int, Query(ge=1, le=500, description="Items per page (at most 500)")]
PageToken = Annotated[str | None, Query(min_length=1, max_length=1024, pattern=PRINTABLE,
                                        description="`next_page_token` of the previous page")]
Since = Annotated[Instant | None, Query(description="Only from this instant on (ISO date or RFC 3339)")]
Until = Annotated[Instant | None, Query(description="Only before this instant (ISO date or RFC 3339)")]


def _order_status(value: int) -> str:
    try:
        return str(pb.OrderStatus.Name(value)).removeprefix("ORDER_STATUS_").lower()
    except ValueError:
        return str(value)


def order_json(o: pb.Order) -> dict[str, Any]:
    return {
        "order_id": o.order_id,
        "client_order_id": o.client_order_id or None,
        "account_id": o.account_id,
        "account_kind": encoding.account_kind(o.account_kind),
        "symbol": o.symbol,
        "side": encoding.side(o.side),
        "quantity": o.quantity,
        "status": _order_status(o.status),
        "reject_reason": o.reject_reason or None,
        "filled_quantity": o.filled_quantity,
        "average_price": encoding.money_field(o, "average_price"),
        "fee": encoding.money_field(o, "fee"),
        "submitted_at": codec.rfc3339_field(o, "submitted_at"),
        "filled_at": codec.rfc3339_field(o, "filled_at"),
        "fill_latency_ms": o.fill_latency_ms if o.HasField("filled_at") and o.HasField("submitted_at") else None,
        "timing": _timing_json(o.timing) if o.HasField("timing") else None,
    }


def _timing_json(t: pb.OrderTiming) -> dict[str, Any]:
    return {"received_at": codec.rfc3339_field(t, "received_at"),
            **{name: getattr(t, name) if t.HasField(name) else None
               for name in ("balance_checked_ms", "sent_ms", "acknowledged_ms", "filled_ms")}}


def fill_json(f: pb.Fill) -> dict[str, Any]:
    return {
        "trade_id": f.trade_id,
        "order_id": f.order_id,
        "client_order_id": f.client_order_id or None,
        "account_id": f.account_id,
        "account_kind": encoding.account_kind(f.account_kind),
        "symbol": f.symbol,
        "side": encoding.side(f.side),
        "quantity": f.quantity,
        "price": encoding.money_field(f, "price"),
        "fee": encoding.money_field(f, "fee"),
        "executed_at": codec.rfc3339_field(f, "executed_at"),
    }


def _window(since: Any, until: Any) -> dict[str, Any]:
    return {**({"since": codec.timestamp(since)} if since is not None else {}),
            **({"until": codec.timestamp(until)} if until is not None else {})}


@router.get("/{account_id}/orders", response_model=OrderPage)
async def list_orders(account_id: str, principal: TradesReader, backends: Backends, page_size: PageSize = 50,
                      page_token: PageToken = None, since: Since = None, until: Until = None) -> dict[str, Any]:
    """The account's orders, newest first, each saying whether the account is paper or
    live. Follow ``next_page_token`` for the next page (null on the last). 404 for an
    account that is not yours; 400 for a page token that is not this listing's or an
    empty window ``[since, until)``."""
    resp = await backends.broker_gateway.ListOrders(
        pb.ListOrdersRequest(account_id=account_id, page_size=page_size, page_token=page_token or "",
                             **_window(since, until)),
        timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, BROKER_GATEWAY, "broker:accounts"),
    )
    return {"orders": [order_json(o) for o in resp.orders], "next_page_token": resp.next_page_token or None}


@router.get("/{account_id}/fills", response_model=FillPage)
async def list_fills(account_id: str, principal: TradesReader, backends: Backends, page_size: PageSize = 50,
                     page_token: PageToken = None, since: Since = None, until: Until = None) -> dict[str, Any]:
    """The account's fills (executions), newest first, each saying whether the account is
    paper or live; paging and errors as for orders."""
    resp = await backends.broker_gateway.ListFills(
        pb.ListFillsRequest(account_id=account_id, page_size=page_size, page_token=page_token or "",
                            **_window(since, until)),
        timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, BROKER_GATEWAY, "broker:accounts"),
    )
    return {"fills": [fill_json(f) for f in resp.fills], "next_page_token": resp.next_page_token or None}


@router.post("/{account_id}/imports", response_model=None, responses={
    200: {"model": TradesImport, "description": "Imported (synchronous, the default)"},
    202: {"model": TradesImportJob, "headers": _LOCATION,
          "description": "Prefer: respond-async: the import runs in the background; poll Location"}})
async def import_trades(
    account_id: str, body: TradesImportCreate, principal: TradesWriter, backends: Backends, response: Response,
    prefer: Annotated[list[str] | None, Header(
        description="RFC 7240: `respond-async` runs the import in the background (202 + Location)")] = None,
) -> dict[str, Any]:
    """Import the account's trades executed in ``[start, end)``; already imported
    trades are skipped by broker trade id, so a repeated import is harmless.

    By default the answer waits for the import (200: import id and counts). With
    ``Prefer: respond-async`` (RFC 7240) it answers at once: 202, ``Location:
    /v1/imports/{import_id}``, ``Preference-Applied: respond-async`` and the job
    (``queued``/``running``, or the job as it is when the same window was started before
    and did not fail: the same window is one job and is imported once; a ``failed`` one
    is started again). 404 for an account that is not yours."""
    if wants_async(prefer):
        job = await backends.broker_gateway.StartImport(
            pb.StartImportRequest(account_id=account_id, start=codec.timestamp(body.start),
                                  end=codec.timestamp(body.end)),
            timeout=backends.timeout_seconds,
            metadata=await backends.acting_for(principal, BROKER_GATEWAY, "broker:import"),
        )
        response.status_code = status.HTTP_202_ACCEPTED
        response.headers["Location"] = f"{imports_router.prefix}/{job.import_id}"
        response.headers["Preference-Applied"] = RESPOND_ASYNC
        return encoding.import_job(job)
    result = await backends.broker_gateway.ImportTrades(
        pb.ImportTradesRequest(account_id=account_id, start=codec.timestamp(body.start),
                               end=codec.timestamp(body.end)),
        timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, BROKER_GATEWAY, "broker:import"),
    )
    return encoding.trades_import(result)


@imports_router.get("/{import_id}", response_model=TradesImportJob)
async def get_import(import_id: str, principal: TradesReader, backends: Backends) -> dict[str, Any]:
    """A background import of yours: status, pages read, counts so far, error.
    404 for an unknown import or another user's."""
    job = await backends.broker_gateway.GetImport(
        pb.GetImportRequest(import_id=import_id), timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, BROKER_GATEWAY, "broker:accounts"),
    )
    return encoding.import_job(job)
