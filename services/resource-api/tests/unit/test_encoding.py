"""Protobuf -> JSON conventions of the API."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as broker_pb
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as scorer_pb
from bsopt.rl_trainer.v1 import rl_trainer_pb2 as trainer_pb
from bsopt_api import encoding
from bsopt_common import codec
from bsopt_common.money import Money


@pytest.mark.parametrize(("value", "name"), [
    (trainer_pb.JOB_STATUS_QUEUED, "queued"), (trainer_pb.JOB_STATUS_RUNNING, "running"),
    (trainer_pb.JOB_STATUS_SUCCEEDED, "succeeded"), (trainer_pb.JOB_STATUS_FAILED, "failed"),
])
def test_job_status_is_lower_case(value, name):
    assert encoding.job_status(value) == name


@pytest.mark.parametrize(("value", "name"), [
    (scorer_pb.BIAS_LABEL_FOMO, "FOMO"), (scorer_pb.BIAS_LABEL_PANIC, "PANIC"),
    (scorer_pb.BIAS_LABEL_DISCIPLINE, "DISCIPLINE"), (scorer_pb.BIAS_LABEL_NONE, "NONE"),
    (scorer_pb.BIAS_LABEL_UNSPECIFIED, "NONE"),
])
def test_bias_label_names(value, name):
    assert encoding.bias_label(value) == name


def test_unknown_enum_value_does_not_crash():
    assert encoding.job_status(99) == "99"


def test_queued_job_has_null_results_and_error():
    created = Timestamp()
    created.FromJsonString("2024-05-01T12:30:00.250Z")
    job = trainer_pb.TrainingJob(
        job_id="j1", user_id="u1", status=trainer_pb.JOB_STATUS_QUEUED, created_at=created,
        spec=trainer_pb.TrainingJobSpec(symbol="GOOGL", train_start="2020-01-01", train_end="2021-12-31",
                                        test_start="2022-02-01", test_end="2022-12-31", window_size=16,
                                        total_timesteps=2048, transaction_cost_bps=10, seed=0),
    )
    out = encoding.training_job(job)
    assert out["status"] == "queued"
    assert out["results"] is None and out["error"] is None
    assert out["created_at"] == "2024-05-01T12:30:00.250000Z"
    assert out["started_at"] is None
    assert out["spec"]["symbol"] == "GOOGL"
    assert "user_id" not in out


def test_finished_job_has_all_three_evaluations():
    m = trainer_pb.EvaluationMetrics(total_return=0.12, sharpe=1.3, max_drawdown=0.08, trades=14)
    job = trainer_pb.TrainingJob(job_id="j1", status=trainer_pb.JOB_STATUS_SUCCEEDED, progress=1.0,
                                 results=trainer_pb.TrainingResults(model="ppo-transformer", window=16,
                                                                    timesteps=2048, seconds=12.5, agent=m,
                                                                    mlp_baseline=m, buy_and_hold=m,
                                                                    checkpoint_uri="file:///ckpt/j1.pt"))
    results = encoding.training_job(job)["results"]
    assert set(results) == {
        "model", "window", "timesteps", "seconds", "agent", "mlp_baseline", "buy_and_hold", "checkpoint_uri",
    }
    assert results["agent"] == {"total_return": 0.12, "sharpe": 1.3, "max_drawdown": 0.08, "trades": 14,
                                "sharpe_undefined_reason": None}


def test_undefined_sharpe_is_null_with_its_reason():
    flat = trainer_pb.EvaluationMetrics(total_return=0.0, max_drawdown=0.0, trades=0,
                                        sharpe_undefined_reason="returns have zero variance")
    results = encoding.training_results(trainer_pb.TrainingResults(agent=flat, mlp_baseline=flat, buy_and_hold=flat))
    assert results["agent"]["sharpe"] is None
    assert results["agent"]["sharpe_undefined_reason"] == "returns have zero variance"


def test_scored_trade_json():
    t = scorer_pb.ScoredTrade(trade_id="t1", user_id="u1", symbol="GOOGL", side=broker_pb.SIDE_BUY,
                              quantity=3, price=codec.money_pb(Money.of("140", "USD")), label=scorer_pb.BIAS_LABEL_FOMO,
                              features=scorer_pb.TradeFeatures(rsi_14=71.2, close_usd=140.0))
    out = encoding.scored_trade(t)
    assert (out["side"], out["label"], out["executed_at"]) == ("buy", "FOMO", None)
    assert set(out["features"]) == {
        "rsi_14", "atr_14", "bollinger_position", "change_1d", "change_5d", "close_usd",
    }
    assert "user_id" not in out


@pytest.mark.parametrize(("value", "name"), [
    (broker_pb.ACCOUNT_KIND_PAPER, "paper"), (broker_pb.ACCOUNT_KIND_LIVE, "live"),
    (broker_pb.ACCOUNT_KIND_UNSPECIFIED, None), (99, "99"),
])
def test_account_kind_names(value, name):
    assert encoding.account_kind(value) == name


def test_account_carries_its_kind():
    a = broker_pb.Account(account_id="demo-alpaca", broker="alpaca", account_kind=broker_pb.ACCOUNT_KIND_PAPER,
                          cash=codec.money_pb(Money.of("100000", "USD")))
    out = encoding.account(a)
    assert out["account_kind"] == "paper"
    assert out["broker"] == "alpaca" and out["cash"] == {"amount": "100000", "currency": "USD"}
