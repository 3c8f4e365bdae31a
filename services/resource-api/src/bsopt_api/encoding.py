"""Protobuf -> JSON for the REST API and the coach WebSocket: one function per message.

Conventions: enum values become short strings (job status lower-case ``"queued"``,
order side ``"buy"``/``"sell"``, bias label upper-case ``"FOMO"`` as the label names
of the contract); timestamps become RFC 3339 strings in UTC (``...Z``) or ``null`` when
unset; money stays float USD with ``_usd`` in the key.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as broker_pb
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as scorer_pb
from bsopt.rl_trainer.v1 import rl_trainer_pb2 as trainer_pb

COACH_MESSAGE_TYPE = "coach.reflect"


def timestamp(msg: Message, field: str) -> str | None:
    """``msg.<field>`` (a Timestamp) as RFC 3339 UTC, or None when the field is unset."""
    if not msg.HasField(field):
        return None
    ts: Timestamp = getattr(msg, field)
    return ts.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def _enum_name(enum_type: Any, value: int, prefix: str) -> str:
    try:
        return enum_type.Name(value).removeprefix(prefix)
    except ValueError:  # a value newer than our contract copy
        return str(value)


def job_status(value: int) -> str:
    """``JOB_STATUS_QUEUED`` -> ``"queued"``."""
    return _enum_name(trainer_pb.JobStatus, value, "JOB_STATUS_").lower()


def side(value: int) -> str:
    """``SIDE_BUY`` -> ``"buy"``."""
    return _enum_name(broker_pb.Side, value, "SIDE_").lower()


def bias_label(value: int) -> str:
    """``BIAS_LABEL_FOMO`` -> ``"FOMO"``; an unspecified label reads as ``"NONE"``."""
    if value == scorer_pb.BIAS_LABEL_UNSPECIFIED:
        return "NONE"
    return _enum_name(scorer_pb.BiasLabel, value, "BIAS_LABEL_")


# --- rl-trainer ----------------------------------------------------------------------


def training_spec(spec: trainer_pb.TrainingJobSpec) -> dict[str, Any]:
    return {
        "symbol": spec.symbol,
        "train_start": spec.train_start,
        "train_end": spec.train_end,
        "test_start": spec.test_start,
        "test_end": spec.test_end,
        "window_size": spec.window_size,
        "total_timesteps": spec.total_timesteps,
        "transaction_cost_bps": spec.transaction_cost_bps,
        "seed": spec.seed,
    }


def evaluation_metrics(m: trainer_pb.EvaluationMetrics) -> dict[str, Any]:
    return {
        "total_return": m.total_return,
        "sharpe": m.sharpe,
        "max_drawdown": m.max_drawdown,
        "trades": m.trades,
    }


def training_results(r: trainer_pb.TrainingResults) -> dict[str, Any]:
    return {
        "model": r.model,
        "window": r.window,
        "timesteps": r.timesteps,
        "seconds": r.seconds,
        "agent": evaluation_metrics(r.agent),
        "mlp_baseline": evaluation_metrics(r.mlp_baseline),
        "buy_and_hold": evaluation_metrics(r.buy_and_hold),
        "checkpoint_uri": r.checkpoint_uri,
    }


def training_job(job: trainer_pb.TrainingJob) -> dict[str, Any]:
    """A job; ``results`` is null until the job has them, ``error`` null unless failed."""
    return {
        "job_id": job.job_id,
        "status": job_status(job.status),
        "progress": job.progress,
        "spec": training_spec(job.spec),
        "results": training_results(job.results) if job.HasField("results") else None,
        "error": job.error or None,
        "created_at": timestamp(job, "created_at"),
        "started_at": timestamp(job, "started_at"),
        "finished_at": timestamp(job, "finished_at"),
    }


def paper_trading(resp: trainer_pb.RunPaperTradingResponse) -> dict[str, Any]:
    return {
        "orders": resp.orders,
        "fills": resp.fills,
        "rejected": resp.rejected,
        "final_equity_usd": resp.final_equity_usd,
    }


# --- broker-gateway --------------------------------------------------------------------


def account(a: broker_pb.Account) -> dict[str, Any]:
    return {
        "account_id": a.account_id,
        "broker": a.broker,
        "currency": a.currency,
        "cash_usd": a.cash_usd,
        "positions": [
            {"symbol": p.symbol, "quantity": p.quantity, "average_price_usd": p.average_price_usd}
            for p in a.positions
        ],
        "created_at": timestamp(a, "created_at"),
    }


def trades_import(resp: broker_pb.ImportTradesResponse) -> dict[str, Any]:
    return {
        "import_id": resp.import_id,
        "trades_imported": resp.trades_imported,
        "duplicates_skipped": resp.duplicates_skipped,
    }


# --- ml-scorer -------------------------------------------------------------------------


def trade_features(f: scorer_pb.TradeFeatures) -> dict[str, float]:
    return {
        "rsi_14": f.rsi_14,
        "atr_14": f.atr_14,
        "bollinger_position": f.bollinger_position,
        "change_1d": f.change_1d,
        "change_5d": f.change_5d,
        "close_usd": f.close_usd,
    }


def scored_trade(t: scorer_pb.ScoredTrade) -> dict[str, Any]:
    return {
        "trade_id": t.trade_id,
        "account_id": t.account_id,
        "symbol": t.symbol,
        "side": side(t.side),
        "quantity": t.quantity,
        "price_usd": t.price_usd,
        "executed_at": timestamp(t, "executed_at"),
        "label": bias_label(t.label),
        "explanation": t.explanation,
        "reflection": t.reflection,
        "features": trade_features(t.features),
        "scored_at": timestamp(t, "scored_at"),
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
        "executed_at": timestamp(t, "executed_at"),
    }
