"""Protobuf -> JSON for the REST API and the coach WebSocket.

Conventions: enum values become short strings (job status lower-case ``"queued"``,
order side ``"buy"``/``"sell"``, bias label upper-case ``"FOMO"`` as the label names of
the contract); timestamps become RFC 3339 strings in UTC (``...Z``) or ``null`` when
unset; money is ``{"amount": "<decimal string>", "currency": "USD"}`` (a string, so no
JSON parser turns it into a binary float). Conversions come from
:mod:`bsopt_common.codec`; messages without enums, money or times go through protobuf's
own ``json_format`` with their proto field names.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as broker_pb
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as scorer_pb
from bsopt.rl_trainer.v1 import rl_trainer_pb2 as trainer_pb
from bsopt_common import codec
from bsopt_common.money import Money, decimal_str

COACH_MESSAGE_TYPE = "coach.reflect"


def fields(message: Message) -> dict[str, Any]:
    """A plain message as a JSON object with its proto field names, every field present."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def money(value: Money) -> dict[str, str]:
    return {"amount": decimal_str(value.amount), "currency": value.currency}


def money_field(message: Message, field: str) -> dict[str, str] | None:
    return money(codec.money_from_pb(message, field)) if message.HasField(field) else None


def side(value: int) -> str:
    """``SIDE_BUY`` -> ``"buy"``."""
    return codec.SIDE.short_name(value).lower()


def bias_label(value: int) -> str:
    """``BIAS_LABEL_FOMO`` -> ``"FOMO"``; an unspecified label reads as ``"NONE"``."""
    return "NONE" if value == scorer_pb.BIAS_LABEL_UNSPECIFIED else codec.BIAS_LABEL.short_name(value)


# --- rl-trainer ----------------------------------------------------------------------


def job_status(value: int) -> str:
    """``JOB_STATUS_QUEUED`` -> ``"queued"``."""
    return codec.JOB_STATUS.short_name(value).lower()


def training_results(r: trainer_pb.TrainingResults) -> dict[str, Any]:
    """Results; a metric's ``sharpe`` and ``sharpe_undefined_reason`` are null unless set."""
    out = fields(r)
    for model in ("agent", "mlp_baseline", "buy_and_hold"):
        metrics = getattr(r, model)
        out[model]["sharpe"] = metrics.sharpe if metrics.HasField("sharpe") else None
        out[model]["sharpe_undefined_reason"] = metrics.sharpe_undefined_reason or None
    return out


def training_job(job: trainer_pb.TrainingJob) -> dict[str, Any]:
    """A job; ``results`` is null until the job has them, ``error`` null unless failed."""
    return {
        "job_id": job.job_id,
        "status": job_status(job.status),
        "progress": job.progress,
        "cancel_requested": job.cancel_requested,
        "spec": fields(job.spec),
        "results": training_results(job.results) if job.HasField("results") else None,
        "error": job.error or None,
        "created_at": codec.rfc3339_field(job, "created_at"),
        "started_at": codec.rfc3339_field(job, "started_at"),
        "finished_at": codec.rfc3339_field(job, "finished_at"),
    }


def paper_trading(resp: trainer_pb.RunPaperTradingResponse) -> dict[str, Any]:
    return {"orders": resp.orders, "fills": resp.fills, "rejected": resp.rejected,
            "final_equity": money_field(resp, "final_equity")}


# --- broker-gateway --------------------------------------------------------------------


def account_kind(value: int) -> str | None:
    """``ACCOUNT_KIND_PAPER`` -> ``"paper"``, ``ACCOUNT_KIND_LIVE`` -> ``"live"`` (real money);
    unspecified (a broker-gateway that does not say) -> null."""
    if value == broker_pb.ACCOUNT_KIND_UNSPECIFIED:
        return None
    try:
        return str(broker_pb.AccountKind.Name(value)).removeprefix("ACCOUNT_KIND_").lower()
    except ValueError:
        return str(value)


def account(a: broker_pb.Account) -> dict[str, Any]:
    return {
        "account_id": a.account_id,
        "broker": a.broker,
        "account_kind": account_kind(a.account_kind),
        "cash": money_field(a, "cash"),
        "positions": [{"symbol": p.symbol, "quantity": p.quantity,
                       "average_price": money_field(p, "average_price")} for p in a.positions],
        "created_at": codec.rfc3339_field(a, "created_at"),
    }


def trades_import(resp: broker_pb.ImportTradesResponse) -> dict[str, Any]:
    return fields(resp)


def import_job(job: broker_pb.ImportJob) -> dict[str, Any]:
    """A background import; status lower-case (``"queued"``, ``"running"``, ``"done"``,
    ``"failed"``), ``error`` and ``account_kind`` null unless set."""
    return {
        "import_id": job.import_id,
        "account_id": job.account_id,
        "broker": job.broker,
        "status": _short(broker_pb.ImportStatus, job.status, "IMPORT_STATUS_"),
        "start": codec.rfc3339_field(job, "start"),
        "end": codec.rfc3339_field(job, "end"),
        "pages_fetched": job.pages_fetched,
        "fills_seen": job.fills_seen,
        "trades_imported": job.trades_imported,
        "duplicates_skipped": job.duplicates_skipped,
        "error": job.error or None,
        "attempts": job.attempts,
        "account_kind": account_kind(job.account_kind),
        "created_at": codec.rfc3339_field(job, "created_at"),
        "started_at": codec.rfc3339_field(job, "started_at"),
        "finished_at": codec.rfc3339_field(job, "finished_at"),
    }


# --- ml-scorer -------------------------------------------------------------------------


def scored_trade(t: scorer_pb.ScoredTrade) -> dict[str, Any]:
    return {
        "trade_id": t.trade_id,
        "account_id": t.account_id,
        "symbol": t.symbol,
        "side": side(t.side),
        "quantity": t.quantity,
        "price": money_field(t, "price"),
        "executed_at": codec.rfc3339_field(t, "executed_at"),
        "label": bias_label(t.label),
        "explanation": t.explanation,
        "reflection": t.reflection,
        "features": fields(t.features),
        "scored_at": codec.rfc3339_field(t, "scored_at"),
    }


def coach_message(t: scorer_pb.ScoredTrade) -> dict[str, Any]:
    """The ``coach.reflect`` WebSocket message of a scored trade, without its ``seq``
    (assigned when stored)."""
    return {
        "type": COACH_MESSAGE_TYPE,
        "trade_id": t.trade_id,
        "label": bias_label(t.label),
        "explanation": t.explanation,
        "reflection": t.reflection,
        "symbol": t.symbol,
        "side": side(t.side),
        "executed_at": codec.rfc3339_field(t, "executed_at"),
    }


# --- broker connections ----------------------------------------------------------------


def _short(enum: Any, value: int, prefix: str) -> str:
    try:
        return str(enum.Name(value)).removeprefix(prefix).lower()
    except ValueError:
        return str(value)


def broker_connection(c: broker_pb.BrokerConnection) -> dict[str, Any]:
    """A connection (never its credentials); ``account_id`` = ``connection_id``, the id
    ``/v1/accounts/{account_id}`` takes."""
    return {
        "connection_id": c.connection_id,
        "account_id": c.connection_id,
        "broker": c.broker,
        "method": _short(broker_pb.BrokerConnectionMethod, c.method, "BROKER_CONNECTION_METHOD_"),
        "status": _short(broker_pb.BrokerConnectionStatus, c.status, "BROKER_CONNECTION_STATUS_"),
        "account_kind": account_kind(c.account_kind),
        "allow_live": c.allow_live,
        "scope": c.scope,
        "created_at": codec.rfc3339_field(c, "created_at"),
        "updated_at": codec.rfc3339_field(c, "updated_at"),
    }


def broker_connection_start(s: broker_pb.StartBrokerConnectionResponse) -> dict[str, Any]:
    return {"authorize_url": s.authorize_url, "state": s.state, "expires_at": codec.rfc3339_field(s, "expires_at")}
