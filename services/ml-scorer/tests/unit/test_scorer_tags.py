"""Rule-based bias tags: each rule, explanations with numbers, precedence, boundaries,
reflections, and label rates on real GOOGL bars."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path

import pytest

from bsopt_common.marketdata import bundled_provider
from bsopt_scorer.domain.features import TradeFeatures, indicator_frame
from bsopt_scorer.domain.tags import LABELS, BiasThresholds, tag_trade

REPO = Path(__file__).resolve().parents[4]

# A quiet day: no rule fires for either side.
NEUTRAL = TradeFeatures(
    rsi_14=52.0, atr_14=2.5, bollinger_position=0.55, change_1d=0.002, change_5d=0.01, close_usd=100.0
)


def feat(**kw: float) -> TradeFeatures:
    return dataclasses.replace(NEUTRAL, **kw)


def test_neutral_is_none_for_both_sides() -> None:
    for side in ("BUY", "SELL"):
        t = tag_trade(side, NEUTRAL)
        assert t.label == "NONE" and t.rule == "none"
        assert "52.0" in t.explanation and "NONE" in t.explanation


def test_labels_match_proto_enum() -> None:
    proto = REPO / "proto" / "bsopt" / "ml_scorer" / "v1" / "ml_scorer.proto"
    if not proto.exists():
        pytest.skip(f"contract file not found at {proto}")
    names = re.findall(r"BIAS_LABEL_(\w+) = [1-9]", proto.read_text())
    assert sorted(names) == sorted(LABELS)


# --------------------------------------------------------------------- each rule fires


@pytest.mark.parametrize(
    ("features", "rule", "numbers"),
    [
        (feat(change_5d=0.062), "fomo.run_up_5d", ["+6.2%", "5-day run-up", "+5.0%"]),
        (feat(rsi_14=72.4), "fomo.rsi_overbought", ["RSI 72.4", "overbought", ">= 70"]),
        (feat(bollinger_position=1.08), "fomo.above_upper_band", ["1.08", "above the upper band"]),
    ],
)
def test_each_fomo_rule(features: TradeFeatures, rule: str, numbers: list[str]) -> None:
    t = tag_trade("BUY", features)
    assert (t.label, t.rule) == ("FOMO", rule)
    assert t.explanation.startswith("FOMO: bought")
    for n in numbers:
        assert n in t.explanation
    assert "also" not in t.explanation  # only one rule fired


@pytest.mark.parametrize(
    ("features", "rule", "numbers"),
    [
        (feat(change_1d=-0.041, change_5d=-0.02), "panic.drop_1d", ["-4.1%", "one-day drop", "-3.0%"]),
        (feat(change_5d=-0.083), "panic.drop_5d", ["-8.3%", "5-day slide", "-7.0%"]),
        (feat(rsi_14=27.6), "panic.rsi_oversold", ["RSI 27.6", "oversold", "<= 30"]),
        (feat(bollinger_position=-0.15), "panic.below_lower_band", ["-0.15", "below the lower band"]),
    ],
)
def test_each_panic_rule(features: TradeFeatures, rule: str, numbers: list[str]) -> None:
    t = tag_trade("SELL", features)
    assert (t.label, t.rule) == ("PANIC", rule)
    assert t.explanation.startswith("PANIC: sold")
    for n in numbers:
        assert n in t.explanation
    assert "also" not in t.explanation


def test_discipline_buy_pullback() -> None:
    f = feat(rsi_14=41.3, bollinger_position=0.22, change_1d=-0.012, change_5d=-0.025)
    t = tag_trade("BUY", f)
    assert (t.label, t.rule) == ("DISCIPLINE", "discipline.buy_pullback")
    for n in ("RSI 41.3", "0.22", "-1.2%", "-2.5%", "pullback"):
        assert n in t.explanation


def test_discipline_sell_into_strength() -> None:
    t = tag_trade("SELL", feat(rsi_14=67.8, change_5d=0.034))
    assert (t.label, t.rule) == ("DISCIPLINE", "discipline.sell_strength")
    for n in ("RSI 67.8", "+3.4%", "strength"):
        assert n in t.explanation


def test_explanation_example_from_the_brief() -> None:
    t = tag_trade("BUY", feat(change_5d=0.062, rsi_14=72.4, bollinger_position=1.08))
    assert t.rule == "fomo.run_up_5d"  # first rule in precedence order
    assert t.explanation.startswith("FOMO: bought after a +6.2% 5-day run-up")
    # the other rules that fired are listed too, with their numbers
    assert "also bought with RSI 72.4" in t.explanation
    assert "also bought at Bollinger position 1.08, above the upper band" in t.explanation
    assert "close $100.00" in t.explanation


# --------------------------------------------------------------------- side-specificity and precedence


def test_fomo_only_for_buys_and_panic_only_for_sells() -> None:
    hot = feat(rsi_14=80.0, change_5d=0.09, bollinger_position=1.3)
    crash = feat(rsi_14=20.0, change_1d=-0.06, change_5d=-0.12, bollinger_position=-0.4)
    assert tag_trade("SELL", hot).label == "DISCIPLINE"  # selling into strength, not FOMO
    assert tag_trade("BUY", crash).label == "NONE"  # buying a crash: not a pullback, not PANIC
    assert tag_trade("BUY", hot).label == "FOMO"
    assert tag_trade("SELL", crash).label == "PANIC"


def test_panic_beats_discipline_on_sell() -> None:
    # strong week, RSI still high, but sold on a -4% day
    f = feat(rsi_14=68.0, change_5d=0.02, change_1d=-0.04)
    t = tag_trade("SELL", f)
    assert (t.label, t.rule) == ("PANIC", "panic.drop_1d")
    assert tag_trade("SELL", dataclasses.replace(f, change_1d=-0.01)).label == "DISCIPLINE"


def test_fomo_beats_discipline_on_buy() -> None:
    # pullback-looking RSI/band but a +6% week (V-shaped rebound): chasing wins
    f = feat(rsi_14=44.0, bollinger_position=0.30, change_5d=0.06)
    assert tag_trade("BUY", f).label == "FOMO"
    assert tag_trade("BUY", dataclasses.replace(f, change_5d=0.01)).label == "DISCIPLINE"


def test_rule_order_within_panic() -> None:
    f = feat(change_1d=-0.05, change_5d=-0.09, rsi_14=25.0, bollinger_position=-0.2)
    t = tag_trade("SELL", f)
    assert t.rule == "panic.drop_1d"
    assert t.explanation.count("; also ") == 3
    t2 = tag_trade("SELL", dataclasses.replace(f, change_1d=-0.01))
    assert t2.rule == "panic.drop_5d"
    t3 = tag_trade("SELL", dataclasses.replace(f, change_1d=-0.01, change_5d=-0.02))
    assert t3.rule == "panic.rsi_oversold"


@pytest.mark.parametrize("crash", [{"change_1d": -0.03}, {"change_5d": -0.07}, {"change_1d": -0.05}])
def test_crash_disqualifies_pullback(crash: dict[str, float]) -> None:
    f = feat(rsi_14=38.0, bollinger_position=0.10, **crash)
    assert tag_trade("BUY", f).label == "NONE"


# --------------------------------------------------------------------- threshold boundaries (inclusive)


@pytest.mark.parametrize(
    ("side", "field", "at", "just_inside", "label"),
    [
        ("BUY", "change_5d", 0.05, 0.0499, "FOMO"),
        ("BUY", "rsi_14", 70.0, 69.99, "FOMO"),
        ("BUY", "bollinger_position", 1.0, 0.999, "FOMO"),
        ("SELL", "change_1d", -0.03, -0.0299, "PANIC"),
        ("SELL", "change_5d", -0.07, -0.0699, "PANIC"),
        ("SELL", "rsi_14", 30.0, 30.01, "PANIC"),
        ("SELL", "bollinger_position", 0.0, 0.001, "PANIC"),
    ],
)
def test_fomo_panic_boundaries(side: str, field: str, at: float, just_inside: float, label: str) -> None:
    assert tag_trade(side, feat(**{field: at})).label == label  # type: ignore[arg-type]
    assert tag_trade(side, feat(**{field: just_inside})).label == "NONE"  # type: ignore[arg-type]


def test_pullback_boundaries() -> None:
    base = feat(rsi_14=45.0, bollinger_position=0.35, change_1d=-0.0299, change_5d=-0.0699)
    assert tag_trade("BUY", base).label == "DISCIPLINE"  # every bound exactly met
    assert tag_trade("BUY", dataclasses.replace(base, rsi_14=45.01)).label == "NONE"
    assert tag_trade("BUY", dataclasses.replace(base, bollinger_position=0.3501)).label == "NONE"
    assert tag_trade("BUY", dataclasses.replace(base, change_1d=-0.03)).label == "NONE"
    assert tag_trade("BUY", dataclasses.replace(base, change_5d=-0.07)).label == "NONE"


def test_strength_boundaries() -> None:
    assert tag_trade("SELL", feat(rsi_14=65.0, change_5d=0.0001)).label == "DISCIPLINE"
    assert tag_trade("SELL", feat(rsi_14=64.99, change_5d=0.02)).label == "NONE"
    assert tag_trade("SELL", feat(rsi_14=66.0, change_5d=0.0)).label == "NONE"  # strictly up on the week


def test_custom_thresholds() -> None:
    th = BiasThresholds(fomo_rsi=80.0, fomo_change_5d=0.10, panic_change_1d=-0.05)
    assert tag_trade("BUY", feat(rsi_14=75.0), th).label == "NONE"
    assert tag_trade("BUY", feat(rsi_14=80.0), th).label == "FOMO"
    assert tag_trade("SELL", feat(change_1d=-0.04), th).label == "NONE"
    t = tag_trade("BUY", feat(change_5d=0.11), th)
    assert "+10.0%" in t.explanation  # the threshold shown is the one used


def test_default_thresholds_documented_values() -> None:
    th = BiasThresholds()
    assert (th.fomo_change_5d, th.fomo_rsi, th.fomo_band_position) == (0.05, 70.0, 1.0)
    panic = (th.panic_change_1d, th.panic_change_5d, th.panic_rsi, th.panic_band_position)
    assert panic == (-0.03, -0.07, 30.0, 0.0)
    assert (th.pullback_rsi_max, th.pullback_band_max) == (45.0, 0.35)
    assert (th.strength_rsi_min, th.strength_change_5d_min) == (65.0, 0.0)


@pytest.mark.parametrize(
    "kw",
    [
        {"fomo_rsi": 120.0},
        {"panic_rsi": -1.0},
        {"fomo_change_5d": 0.0},
        {"panic_change_1d": 0.01},
        {"panic_change_5d": float("nan")},
        {"panic_rsi": 75.0},
        {"pullback_band_max": float("inf")},
    ],
)
def test_invalid_thresholds(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BiasThresholds(**kw)


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="side"):
        tag_trade("buy", NEUTRAL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="side"):
        tag_trade("HOLD", NEUTRAL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        tag_trade("BUY", feat(rsi_14=float("nan")))
    with pytest.raises(TypeError):
        tag_trade("BUY", {"rsi_14": 50})  # type: ignore[arg-type]


# --------------------------------------------------------------------- real data


def test_label_rates_on_real_googl_bars() -> None:
    """A trade on every GOOGL day, both sides: every label occurs, and the biased ones
    stay the exception (guards against a threshold typo making a label fire always or
    never)."""
    frame = indicator_frame(bundled_provider().fetch_history("GOOGL")).dropna()
    rows = [TradeFeatures(*r) for r in frame.itertuples(index=False)]
    buys = Counter(tag_trade("BUY", f).label for f in rows)
    sells = Counter(tag_trade("SELL", f).label for f in rows)
    n = len(rows)
    assert set(buys) == {"FOMO", "DISCIPLINE", "NONE"}
    assert set(sells) == {"PANIC", "DISCIPLINE", "NONE"}
    assert 0.10 < buys["FOMO"] / n < 0.30
    assert 0.03 < sells["PANIC"] / n < 0.15
    assert 0.10 < buys["DISCIPLINE"] / n < 0.30
    assert 0.10 < sells["DISCIPLINE"] / n < 0.30
    assert buys["NONE"] / n > 0.4 and sells["NONE"] / n > 0.4
    for f in rows[:: max(1, n // 50)]:
        for side in ("BUY", "SELL"):
            t = tag_trade(side, f)  # type: ignore[arg-type]
            assert f"{f.rsi_14:.1f}" in t.explanation
