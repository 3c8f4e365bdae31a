"""Per-user calibration of the tag thresholds with real Postgres and ``TradeScorer.score``
(issue 9 §1): a user with 40 trades on a volatile name gets calibrated thresholds from the
31st trade on, and fewer FOMO tags on the next trades than the population thresholds give
on the same features; the explanation and the stored audit record say which thresholds
were used; a user with 10 trades keeps the population thresholds; a redelivered trade
changes nothing; the incremental statistics equal the one-query rebuild."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from alembic import command
from sqlalchemy import select

from bsopt.broker_gateway.v1 import events_pb2 as broker_events
from bsopt_common import codec, migrations
from bsopt_common.db import create_db_engine, make_session_factory, session_scope
from bsopt_common.events import Outbox
from bsopt_common.marketdata import UnknownSymbolError
from bsopt_common.money import Money
from bsopt_common.vocabulary import Side
from bsopt_scorer import models
from bsopt_scorer.domain.calibration import Calibration, calibrate
from bsopt_scorer.domain.tags import tag_trade
from bsopt_scorer.scoring import TradeScorer, recalibrate, user_calibration


class VolatileBars:
    """One synthetic daily series, ``VOLT``: a seeded random walk with 3% daily moves and
    wide ranges (ATR/close about 4.5%, 2.5 times the population's 1.8%: after 40 trades the
    user's scale is k = 1.68, FOMO's run-up threshold +8.4%)."""

    def __init__(self) -> None:
        rng = np.random.default_rng(20261201)
        n = 400
        close = 50.0 * np.exp(np.cumsum(rng.normal(0.002, 0.03, n)))
        opens = close * np.exp(rng.normal(0.0, 0.01, n))
        high = np.maximum(opens, close) * (1 + np.abs(rng.normal(0.0, 0.015, n)))
        low = np.minimum(opens, close) * (1 - np.abs(rng.normal(0.0, 0.015, n)))
        index = pd.DatetimeIndex(pd.bdate_range("2021-01-04", periods=n), name="time")
        self.bars = pd.DataFrame({"open": opens, "high": high, "low": low, "close": close,
                                  "volume": np.full(n, 1e6)}, index=index)

    def symbols(self) -> list[str]:
        return ["VOLT"]

    def fetch_history(self, symbol: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
        if symbol != "VOLT":
            raise UnknownSymbolError(symbol)
        dates = self.bars.index.normalize()
        mask = np.ones(len(dates), dtype=bool)
        if start is not None:
            mask &= dates >= pd.Timestamp(start)
        if end is not None:
            mask &= dates <= pd.Timestamp(end)
        return self.bars.loc[mask].copy()


@pytest.fixture(scope="module")
def session_factory(postgres_url: str) -> Iterator[Any]:
    engine = create_db_engine(postgres_url)
    migrations.upgrade("bsopt_scorer", engine, models.SCHEMA)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def market() -> VolatileBars:
    return VolatileBars()


def imported(trade_id: str, user_id: str, day: pd.Timestamp, side: Side = Side.BUY) -> broker_events.TradeImported:
    return broker_events.TradeImported(
        trade_id=trade_id, user_id=user_id, account_id="acct-1", broker="paper", symbol="VOLT",
        side=codec.SIDE.to_pb(side), quantity=1, price=codec.money_pb(Money("50.00", "USD")),
        executed_at=codec.timestamp(datetime.combine(day.date(), datetime.min.time(), tzinfo=UTC)))


def stored_thresholds(session_factory: Any, trade_id: str) -> Calibration:
    with session_scope(session_factory) as session:
        rec = session.execute(select(models.scored_trades.c.thresholds)
                              .where(models.scored_trades.c.trade_id == trade_id)).scalar_one()
    return Calibration.from_record(rec)


def test_volatile_user_is_calibrated_after_30_trades_and_tagged_fomo_less(
        session_factory: Any, market: VolatileBars) -> None:
    scorer = TradeScorer(market, Outbox(models.SCHEMA))
    days = market.bars.index[30:]
    user = "user-volatile"
    first = []
    with session_scope(session_factory) as session:
        for i in range(40):
            first.append(scorer.score(imported(f"v-{i}", user, days[i], Side.BUY if i % 2 else Side.SELL), session))
    # trades 1..30 were tagged with the population thresholds, the 31st on with the
    # user's, calibrated on the trades before it
    for i, scored in enumerate(first):
        audit = stored_thresholds(session_factory, f"v-{i}")
        if i < 30:
            assert "calibrated" not in scored.explanation, i
            assert audit.source == "population" and audit.scale == 1.0
        else:
            assert f"Used calibrated thresholds ({i} trades)" in scored.explanation, i
            assert audit.source == "calibrated" and audit.trades == i and audit.scale > 1.3

    with session_scope(session_factory) as session:
        cal = user_calibration(session, user)
    assert cal.calibrated and cal.trades == 40
    assert 1.5 < cal.scale < 2.0  # names 2.5x as volatile as the population's, not clamped
    assert cal.thresholds.fomo_change_5d > 0.075 and cal.thresholds.panic_change_1d < -0.045

    # the next 120 buys: fewer FOMO tags with the user's thresholds than with the population's
    calibrated_fomo = population_fomo = 0
    with session_scope(session_factory) as session:
        for i in range(40, 160):
            scored = scorer.score(imported(f"v-{i}", user, days[i]), session)
            assert f"Used calibrated thresholds ({i} trades)" in scored.explanation
            calibrated_fomo += scored.label.value == "FOMO"
            population_fomo += tag_trade("BUY", scored.features).label == "FOMO"
            # the rules are the same; only the return thresholds moved
            if scored.label.value == "FOMO":
                assert tag_trade("BUY", scored.features).label == "FOMO"
    assert population_fomo >= 30  # 38 of the 120 buys
    assert calibrated_fomo < population_fomo * 0.75, (calibrated_fomo, population_fomo)  # 19

    # the increments equal the one-query rebuild
    with session_scope(session_factory) as session:
        row = session.execute(select(models.user_calibration).where(
            models.user_calibration.c.user_id == user)).mappings().one()
        rebuilt = recalibrate(session, user)
    assert row["trades"] == 160 == rebuilt.trades
    assert rebuilt == calibrate(row["trades"], row["sum_log_atr_pct"])
    assert Calibration.from_record(row["thresholds"]) == calibrate(160, row["sum_log_atr_pct"])


def test_user_with_10_trades_keeps_population_thresholds(session_factory: Any, market: VolatileBars) -> None:
    scorer = TradeScorer(market, Outbox(models.SCHEMA))
    days = market.bars.index[30:]
    user = "user-new"
    with session_scope(session_factory) as session:
        scored = [scorer.score(imported(f"n-{i}", user, days[i]), session) for i in range(10)]
    for i, s in enumerate(scored):
        assert "calibrated" not in s.explanation
        assert s.label.value == tag_trade("BUY", s.features).label
        assert s.explanation == tag_trade("BUY", s.features).explanation
        assert stored_thresholds(session_factory, f"n-{i}").source == "population"
    with session_scope(session_factory) as session:
        assert not user_calibration(session, user).calibrated
        row = session.execute(select(models.user_calibration).where(
            models.user_calibration.c.user_id == user)).mappings().one()
    assert row["trades"] == 10 and row["thresholds"] is None

    # a redelivered trade is not counted twice
    with session_scope(session_factory) as session:
        scorer.score(imported("n-3", user, days[3]), session)
        assert session.execute(select(models.user_calibration.c.trades).where(
            models.user_calibration.c.user_id == user)).scalar_one() == 10


def test_migration_backfills_the_statistics_of_users_already_scored(session_factory: Any) -> None:
    """Runs last in this module: back to revision 0003 (no calibration) with the trades the
    tests above scored still stored, then up again; 0004's one aggregate query gives every
    user the statistics the increments gave; the thresholds column is filled at the user's
    next scored trade, and until then scoring calibrates from the statistics."""
    engine = session_factory.kw["bind"]
    with session_scope(session_factory) as session:
        before = {r["user_id"]: (r["trades"], r["sum_log_atr_pct"])
                  for r in session.execute(select(models.user_calibration)).mappings()}
    assert set(before) == {"user-volatile", "user-new"}
    command.downgrade(migrations.alembic_config("bsopt_scorer", engine, models.SCHEMA), "0003")
    migrations.upgrade("bsopt_scorer", engine, models.SCHEMA)
    with session_scope(session_factory) as session:
        rows = list(session.execute(select(models.user_calibration)).mappings())
        assert user_calibration(session, "user-volatile") == calibrate(*before["user-volatile"])
        assert not user_calibration(session, "user-new").calibrated
    assert {r["user_id"]: r["trades"] for r in rows} == {u: n for u, (n, _) in before.items()}
    for r in rows:
        assert r["sum_log_atr_pct"] == pytest.approx(before[r["user_id"]][1], rel=1e-12)
        assert r["thresholds"] is None
