"""The sell module of an Alpaca account, set per user through the API (issue 8 §4):
``PUT /v1/accounts/{account_id}/sell-rules`` (stop-loss / take-profit) and
``POST /v1/accounts/{account_id}:close-all-positions``.

broker-gateway does the work off the request path (its per-account sell worker); these
routes only record the rules or the request there (``SetSellRules``,
``CloseAllPositions``), acting for the user with a delegated token (RFC 8693) with scope
``broker:sells``, which auth-server derives from the user's ``trades:write``: the sell
module only sells what the account holds, so the user's token never reaches
``broker:orders`` (arbitrary orders). ``GET .../close-all-requests/{request_id}`` reads how
far a request came (``GetCloseAllRequest``, ``broker:accounts`` from ``trades:read``). The
account is an entry of broker-gateway's accounts file or a broker connection the user made
(``/v1/brokers/alpaca/connect``). Errors are problem details: 404 for an account or
request that is not the caller's (or a paper account), 422 for out-of-range values, 409
for a read-only account or a paused connection (FAILED_PRECONDITION), never a 5xx for the
caller's input.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt_api.api.deps import Backends, TradesReader, TradesWriter
from bsopt_api.clients import BROKER_GATEWAY
from bsopt_common import codec

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])
SCOPE = "broker:sells"


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


class CloseAllStatus(BaseModel):
    """How far a close-all request came (``queued``, ``running``, ``done``, ``failed``)."""

    request_id: str
    account_id: str
    status: str
    positions_sold: int
    positions_refused: int
    #: Why a failed request failed ("" otherwise).
    error: str
    requested_at: str
    started_at: str | None
    finished_at: str | None


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
async def close_all_positions(account_id: str, principal: TradesWriter, backends: Backends,
                              response: Response) -> dict[str, Any]:
    """Sell every position of an Alpaca account: 202 with the request id (and its status
    resource in ``Location``) as soon as the request is recorded; the account's sell
    worker does the selling."""
    accepted = await backends.broker_gateway.CloseAllPositions(
        pb.CloseAllPositionsRequest(account_id=account_id), timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, BROKER_GATEWAY, SCOPE))
    response.headers["Location"] = f"{router.prefix}/{account_id}/close-all-requests/{accepted.request_id}"
    return {"request_id": accepted.request_id, "account_id": account_id, "status": "queued"}


_STATUS_NAMES = {pb.CloseAllRequest.STATUS_QUEUED: "queued", pb.CloseAllRequest.STATUS_RUNNING: "running",
                 pb.CloseAllRequest.STATUS_DONE: "done", pb.CloseAllRequest.STATUS_FAILED: "failed"}


@router.get("/{account_id}/close-all-requests/{request_id}", response_model=CloseAllStatus, responses={
    404: {"description": "not a close-all request of the caller on this account"}})
async def get_close_all_request(
        account_id: str, principal: TradesReader, backends: Backends,
        request_id: str = Path(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z-]+$")) -> dict[str, Any]:
    """How far a close-all request came: status, positions sold and refused, times."""
    found = await backends.broker_gateway.GetCloseAllRequest(
        pb.GetCloseAllRequestRequest(request_id=request_id), timeout=backends.timeout_seconds,
        metadata=await backends.acting_for(principal, BROKER_GATEWAY, "broker:accounts"))
    if found.account_id != account_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no close-all request {request_id!r} on account {account_id!r}")
    return {"request_id": found.request_id, "account_id": found.account_id,
            "status": _STATUS_NAMES.get(found.status, "unknown"), "positions_sold": found.positions_sold,
            "positions_refused": found.positions_refused, "error": found.error,
            "requested_at": codec.rfc3339_field(found, "requested_at"),
            "started_at": codec.rfc3339_field(found, "started_at"),
            "finished_at": codec.rfc3339_field(found, "finished_at")}
