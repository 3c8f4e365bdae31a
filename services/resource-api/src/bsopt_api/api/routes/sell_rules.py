"""The sell module of an Alpaca account, set per user through the API (issue 8 §4):
``PUT /v1/accounts/{account_id}/sell-rules`` (stop-loss / take-profit) and
``POST /v1/accounts/{account_id}:close-all-positions``.

broker-gateway does the work off the request path (its per-account sell worker); these
routes only record the rules or the request there (``SetSellRules``,
``CloseAllPositions``), acting for the user with a delegated token (RFC 8693) with scope
``broker:orders``, like every other call. The account is an entry of broker-gateway's
accounts file or a broker connection the user made (``/v1/brokers/alpaca/connect``).
Errors are problem details: 404 for an account that is not the caller's (or a paper
account), 422 for out-of-range values, 409 for a read-only account or a paused
connection (FAILED_PRECONDITION), never a 5xx for the caller's input.

Open: auth-server's token exchange (``bsopt_auth.rfc8693.DELEGATED_SCOPES``) does not yet
derive ``broker:orders`` from the user's ``trades:write``, so against the real
auth-server the exchange for these calls is refused (``invalid_scope``); the tests' issuer
grants it. Adding it there (or a narrower scope for the two RPCs) is the other half.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt_api.api.deps import Backends, TradesWriter
from bsopt_api.clients import BROKER_GATEWAY

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])
SCOPE = "broker:orders"


class SellRulesUpdate(BaseModel):
    """The account's rules, replacing the ones set before (null or absent: no such rule).
    Percent from a position's average entry price."""

    model_config = ConfigDict(extra="forbid")

    #: Sell a position whose price fell this many percent below its average entry price (0 < x < 100).
    stop_loss_pct: float | None = Field(default=None, gt=0, lt=100, allow_inf_nan=False, strict=True)
    #: Sell a position whose price rose this many percent above its average entry price (> 0).
    take_profit_pct: float | None = Field(default=None, gt=0, le=1_000_000, allow_inf_nan=False, strict=True)


class SellRules(BaseModel):
    """The rules in force, as broker-gateway stored them."""

    account_id: str
    stop_loss_pct: float | None
    take_profit_pct: float | None
    #: Seconds between two evaluations of the account's positions.
    check_interval_s: float


class CloseAllAccepted(BaseModel):
    """The close-all request is recorded (it survives a restart of broker-gateway); the
    account's sell worker sells every position, each once."""

    request_id: str
    account_id: str
    status: str


def _rules_json(rules: pb.SellRules) -> dict[str, Any]:
    return {"account_id": rules.account_id,
            "stop_loss_pct": rules.stop_loss_pct if rules.HasField("stop_loss_pct") else None,
            "take_profit_pct": rules.take_profit_pct if rules.HasField("take_profit_pct") else None,
            "check_interval_s": rules.check_interval_s}


@router.put("/{account_id}/sell-rules", response_model=SellRules, responses={
    404: {"description": "not an Alpaca account (or connection) of the caller"},
    422: {"description": "a threshold out of range"}})
async def put_sell_rules(account_id: str, body: SellRulesUpdate, principal: TradesWriter,
                         backends: Backends) -> dict[str, Any]:
    """Set your stop-loss / take-profit of an Alpaca account; its sell worker applies
    them from its next pass. Returns the rules stored."""
    request = pb.SetSellRulesRequest(account_id=account_id)
    if body.stop_loss_pct is not None:
        request.stop_loss_pct = body.stop_loss_pct
    if body.take_profit_pct is not None:
        request.take_profit_pct = body.take_profit_pct
    rules = await backends.broker_gateway.SetSellRules(
        request, timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, BROKER_GATEWAY, SCOPE))
    return _rules_json(rules)


@router.post("/{account_id}:close-all-positions", status_code=status.HTTP_202_ACCEPTED,
             response_model=CloseAllAccepted, responses={
                 404: {"description": "not an Alpaca account (or connection) of the caller"},
                 409: {"description": "a read-only account, or a paused connection"}})
async def close_all_positions(account_id: str, principal: TradesWriter, backends: Backends) -> dict[str, Any]:
    """Sell every position of an Alpaca account: 202 with the request id as soon as the
    request is recorded; the account's sell worker does the selling."""
    accepted = await backends.broker_gateway.CloseAllPositions(
        pb.CloseAllPositionsRequest(account_id=account_id), timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, BROKER_GATEWAY, SCOPE))
    return {"request_id": accepted.request_id, "account_id": account_id, "status": "queued"}
