"""Request validation (each failure is a 422 problem at the HTTP level)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from bsopt_api.api.schemas import AccountCreate, TradesImportCreate, TrainingJobCreate

JOB = {"symbol": "GOOGL", "train_start": "2020-01-01", "train_end": "2021-12-31",
       "test_start": "2022-02-01", "test_end": "2022-12-31", "total_timesteps": 2048}


def test_training_job_defaults():
    job = TrainingJobCreate.model_validate(JOB)
    assert (job.window_size, job.transaction_cost_bps, job.seed) == (16, 10.0, 0)


@pytest.mark.parametrize("change", [
    {"train_end": "2019-12-31"},                      # train window backwards
    {"test_start": "2021-12-31"},                     # test overlaps train
    {"test_end": "2022-01-01"},                       # test window backwards
    {"window_size": 1}, {"total_timesteps": -1}, {"transaction_cost_bps": -1}, {"seed": -1},
    {"symbol": ""}, {"symbol": "A" * 17}, {"symbol": "GO OG"},
    {"unknown": 1},
])
def test_training_job_rejects(change):
    with pytest.raises(ValidationError):
        TrainingJobCreate.model_validate({**JOB, **change})


def test_import_window_accepts_dates_and_datetimes_in_utc():
    w = TradesImportCreate.model_validate({"start": "2024-01-01", "end": "2024-01-31T15:30:00+02:00"})
    assert w.start == datetime(2024, 1, 1, tzinfo=UTC)
    assert w.end == datetime(2024, 1, 31, 13, 30, tzinfo=UTC)
    naive = TradesImportCreate.model_validate({"start": "2024-01-01T00:00:00", "end": "2024-01-02"})
    assert naive.start.tzinfo is UTC


@pytest.mark.parametrize("window", [
    {"start": "2024-01-02", "end": "2024-01-01"}, {"start": "2024-01-01", "end": "2024-01-01"},
    {"start": "2024-02-30", "end": "2024-03-01"}, {"start": "yesterday", "end": "2024-03-01"},
])
def test_import_window_rejects(window):
    with pytest.raises(ValidationError):
        TradesImportCreate.model_validate(window)


def test_account_is_paper_with_positive_cash():
    assert AccountCreate.model_validate({"initial_cash": {"amount": "5000", "currency": "USD"}}).broker == "paper"
    for bad in ({"broker": "alpaca", "initial_cash": {"amount": "1", "currency": "USD"}},
                {"initial_cash": {"amount": "0", "currency": "USD"}},
                {"initial_cash": {"amount": "1", "currency": "usd"}},
                {"initial_cash": {"amount": "NaN", "currency": "USD"}}, {"initial_cash": 5000}, {}):
        with pytest.raises(ValidationError):
            AccountCreate.model_validate(bad)
