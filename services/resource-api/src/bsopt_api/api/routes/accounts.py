"""``/v1/accounts``: broker-gateway accounts and trade imports."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt_api import encoding
from bsopt_api.api.deps import Backends, TradesReader, TradesWriter
from bsopt_api.api.schemas import Account, AccountCreate, TradesImport, TradesImportCreate
from bsopt_api.clients import BROKER_GATEWAY
from bsopt_common import codec
from bsopt_common.money import Money

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])


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


@router.post("/{account_id}/imports", response_model=TradesImport)
async def import_trades(
    account_id: str, body: TradesImportCreate, principal: TradesWriter, backends: Backends
) -> dict[str, Any]:
    """Import the account's trades executed in ``[start, end)``; already imported
    trades are skipped by broker trade id, so a repeated import is harmless."""
    result = await backends.broker_gateway.ImportTrades(
        pb.ImportTradesRequest(account_id=account_id, start=codec.timestamp(body.start),
                               end=codec.timestamp(body.end)),
        timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, BROKER_GATEWAY, "broker:import"),
    )
    return encoding.trades_import(result)
