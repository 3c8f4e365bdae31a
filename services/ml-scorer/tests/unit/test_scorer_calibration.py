"""Per-user calibration of the tag thresholds (issue 9 §1): the conjugate normal update
computed by hand for a few trades, the 30-trade boundary, the clamp, the stored record, and
tag_trade's explanation with calibrated thresholds."""

from __future__ import annotations

import dataclasses
import math

import pytest

from bsopt_scorer.domain import calibration as cal
from bsopt_scorer.domain.features import TradeFeatures
from bsopt_scorer.domain.tags import BiasThresholds, tag_trade

MU0 = math.log(0.018)
NEUTRAL = TradeFeatures(
    rsi_14=52.0, atr_14=2.5, bollinger_position=0.55, change_1d=0.002, change_5d=0.01, close_usd=100.0
)


def stats(atr_pcts: list[float]) -> tuple[int, float]:
    """(n, S) of trades whose ATR/close are ``atr_pcts``, through log_atr_pct."""
    ys = [cal.log_atr_pct(dataclasses.replace(NEUTRAL, atr_14=p * 100.0, close_usd=100.0)) for p in atr_pcts]
    assert all(y is not None for y in ys)
    return len(ys), math.fsum(y for y in ys if y is not None)


def test_no_trades_is_the_prior() -> None:
    post = cal.posterior(0, 0.0)
    assert post.mean == pytest.approx(MU0)
    assert post.sd == pytest.approx(0.26 / math.sqrt(30))


def test_update_by_hand_three_trades() -> None:
    # y_i - mu0 = 0.3, 0.6, 0.9: S = 3 mu0 + 1.8, so
    # mu_n = (30 mu0 + 3 mu0 + 1.8) / 33 = mu0 + 1.8/33 = mu0 + 0.054545...
    # s_n = 0.26 / sqrt(33) = 0.045260...
    n, s = stats([0.018 * math.exp(d) for d in (0.3, 0.6, 0.9)])
    post = cal.posterior(n, s)
    assert post.mean - MU0 == pytest.approx(0.0545454545, abs=1e-9)
    assert post.sd == pytest.approx(0.0452602, abs=1e-7)
    # the scale is what it would be, but below 30 trades it is not used
    assert cal.user_scale(n, s) == pytest.approx(math.exp(0.0545454545), abs=1e-9)
    assert cal.calibrate(n, s) == cal.POPULATION_CALIBRATION


def test_forty_trades_at_twice_the_population_atr() -> None:
    # every y_i - mu0 = ln 2: mu_n - mu0 = 40 ln 2 / 70, k = 2 ** (4/7) = 1.4859943...
    n, s = stats([0.036] * 40)
    c = cal.calibrate(n, s)
    assert c.source == "calibrated" and c.calibrated and c.trades == 40
    assert c.scale == pytest.approx(1.4859943, abs=1e-6)
    th = c.thresholds
    assert th.fomo_change_5d == pytest.approx(0.0742997, abs=1e-6)
    assert th.panic_change_1d == pytest.approx(-0.0445798, abs=1e-6)
    assert th.panic_change_5d == pytest.approx(-0.1040196, abs=1e-6)
    # the scale-free levels stay at the population's
    pop = BiasThresholds()
    for name in ("fomo_rsi", "fomo_band_position", "panic_rsi", "panic_band_position", "pullback_rsi_max",
                 "pullback_band_max", "strength_rsi_min", "strength_change_5d_min"):
        assert getattr(th, name) == getattr(pop, name), name


def test_the_30_trade_boundary() -> None:
    n, s = stats([0.036] * 29)
    assert cal.calibrate(n, s) is cal.POPULATION_CALIBRATION
    n, s = stats([0.036] * 30)
    c = cal.calibrate(n, s)
    # n = kappa0: half prior, half data: k = exp(ln 2 / 2) = sqrt 2
    assert c.calibrated and c.trades == 30 and c.scale == pytest.approx(math.sqrt(2))
    assert cal.MIN_TRADES == 30


def test_population_like_user_keeps_population_numbers() -> None:
    n, s = stats([0.018] * 50)
    c = cal.calibrate(n, s)
    assert c.calibrated and c.scale == pytest.approx(1.0)
    assert c.thresholds.fomo_change_5d == pytest.approx(0.05)


@pytest.mark.parametrize(("atr_pct", "k"), [(0.18, 2.0), (0.0018, 0.5), (0.001, 0.5), (5.0, 2.0)])
def test_scale_is_clamped(atr_pct: float, k: float) -> None:
    n, s = stats([atr_pct] * 1000)
    c = cal.calibrate(n, s)
    assert c.scale == k
    assert c.thresholds.fomo_change_5d == pytest.approx(0.05 * k)
    assert c.thresholds.panic_change_1d == pytest.approx(-0.03 * k)
    assert c.thresholds.panic_change_5d == pytest.approx(-0.07 * k)
    assert 0.025 <= c.thresholds.fomo_change_5d <= 0.10
    assert -0.06 <= c.thresholds.panic_change_1d <= -0.015
    assert -0.14 <= c.thresholds.panic_change_5d <= -0.035


def test_bad_statistics_raise_and_flat_trades_do_not_count() -> None:
    with pytest.raises(ValueError, match="trades"):
        cal.posterior(-1, 0.0)
    with pytest.raises(ValueError, match="finite"):
        cal.calibrate(40, math.nan)
    assert cal.log_atr_pct(dataclasses.replace(NEUTRAL, atr_14=0.0)) is None
    assert cal.log_atr_pct(dataclasses.replace(NEUTRAL, close_usd=0.0)) is None


def test_record_round_trip() -> None:
    c = cal.calibrate(*stats([0.05] * 45))
    rec = c.record()
    assert rec["source"] == "calibrated" and rec["trades"] == 45
    assert set(rec["thresholds"]) == {f.name for f in dataclasses.fields(BiasThresholds)}
    assert cal.Calibration.from_record(rec) == c
    assert cal.Calibration.from_record(cal.POPULATION_CALIBRATION.record()) == cal.POPULATION_CALIBRATION
    with pytest.raises(ValueError, match="source"):
        cal.Calibration.from_record({**rec, "source": "guess"})


def test_tag_trade_explanation_says_calibrated_and_default_is_unchanged() -> None:
    run_up = dataclasses.replace(NEUTRAL, change_5d=0.062)
    default = tag_trade("BUY", run_up)
    assert default.label == "FOMO" and default.rule == "fomo.run_up_5d"
    assert tag_trade("BUY", run_up, BiasThresholds()) == default
    assert "calibrated" not in default.explanation
    c = cal.calibrate(*stats([0.036] * 42))
    t = tag_trade("BUY", run_up, c.thresholds, calibrated_trades=c.trades)
    assert t.label == "NONE"  # +6.2% is an ordinary week on names twice as volatile
    assert t.explanation.endswith("Used calibrated thresholds (42 trades): 5-day run-up >= +7.5%, "
                                  "1-day drop <= -4.5%, 5-day slide <= -10.5%.")
    big = tag_trade("BUY", dataclasses.replace(NEUTRAL, change_5d=0.09), c.thresholds, calibrated_trades=42)
    assert big.label == "FOMO" and "(rule: 5-day >= +7.5%)" in big.explanation
    assert "calibrated thresholds (42 trades)" in big.explanation
    drop = tag_trade("SELL", dataclasses.replace(NEUTRAL, change_1d=-0.05), c.thresholds, calibrated_trades=42)
    assert drop.label == "PANIC" and "calibrated thresholds (42 trades)" in drop.explanation
    with pytest.raises(ValueError, match="calibrated_trades"):
        tag_trade("BUY", run_up, c.thresholds, calibrated_trades=-1)
