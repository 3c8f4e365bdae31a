"""Explainable, rule-based behavioural-bias tags for a single trade.

A trade is tagged from its side and its :class:`~bsopt_scorer.domain.features.TradeFeatures`
(indicator values at the close of its bar, no look-ahead). Labels map onto
``bsopt.ml_scorer.v1.BiasLabel`` as ``"FOMO" -> BIAS_LABEL_FOMO`` and so on.

Rules (defaults in :class:`BiasThresholds`; every comparison is inclusive except
``change_5d > 0`` for selling into strength):

- **FOMO** (BUY only): chasing a move. Fires when any of
  ``fomo.run_up_5d``        change_5d >= +5%,
  ``fomo.rsi_overbought``   RSI >= 70,
  ``fomo.above_upper_band`` Bollinger position >= 1.0 (at/above the upper band).
- **PANIC** (SELL only): selling into a sharp drop. Fires when any of
  ``panic.drop_1d``          change_1d <= -3%,
  ``panic.drop_5d``          change_5d <= -7%,
  ``panic.rsi_oversold``     RSI <= 30,
  ``panic.below_lower_band`` Bollinger position <= 0.0 (at/below the lower band).
- **DISCIPLINE**: trading against the short-term emotion, as a plan would.
  ``discipline.buy_pullback``  BUY with RSI <= 45 and Bollinger position <= 0.35 and no
  crash (change_1d > -3% and change_5d > -7%, i.e. neither PANIC drop rule's condition);
  ``discipline.sell_strength`` SELL with RSI >= 65 and change_5d > 0.
- **NONE**: nothing fired.

Order of precedence: BUY: FOMO > DISCIPLINE > NONE; SELL: PANIC > DISCIPLINE > NONE (an
emotional trigger outweighs a plan-like pattern: selling on a -4% day after a rally is
PANIC even though RSI may still be >= 65). Within a label the rules are tried in the order
listed above; the first that fires is ``TagResult.rule`` and every rule that fired is
named in the explanation, with the numbers.

Why these defaults: FOMO/PANIC use the textbook extremes (Wilder's RSI 70/30; a close
outside Bollinger's 2-sigma bands) plus return thresholds that are roughly 1.5-2 standard
deviations for large US stocks (daily sigma ~1.1-1.7%, 5-day sigma ~2.5-3.9% on the
bundled data): +5% in a week is a run-up worth flagging; -3% in a day or -7% in a week
is a drop that triggers selling (the PANIC side sits a little further out because
equity drops are fatter-tailed and a flag there must not fire on ordinary weeks).
DISCIPLINE bands sit between the extremes and the median RSI (~54 on these upward-
drifting stocks): buy at RSI <= 45 in the lower third of the bands, sell at RSI >= 65
while up on the week (60 tagged ~30% of random sells as DISCIPLINE, too common to mean
anything; 65 makes the two sides symmetric around the median).
Measured on the real daily bars (GOOGL 2009-2018, SPY 1999-2020, AAPL/IBM/MSFT
2012-2014), a trade on a random day is tagged: BUY FOMO 9-25% (GOOGL 19%), BUY
DISCIPLINE 16-29% (GOOGL 18%), SELL PANIC 5-11% (GOOGL 8%), SELL DISCIPLINE 10-24%
(GOOGL 21%); the rest NONE. Labels stay the exception, as tags meant to prompt
reflection should.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

from bsopt_scorer.domain.features import TradeFeatures

Label = Literal["FOMO", "PANIC", "DISCIPLINE", "NONE"]
Side = Literal["BUY", "SELL"]
#: Every label name, in display order; the proto enum value is ``"BIAS_LABEL_" + name``.
LABELS: tuple[str, ...] = ("FOMO", "PANIC", "DISCIPLINE", "NONE")

RULE_NONE = "none"


@dataclass(frozen=True, slots=True)
class BiasThresholds:
    """Thresholds of the tag rules. Returns are fractions (0.05 = +5%), RSI is 0..100,
    Bollinger positions are unit-free (0 = lower band, 1 = upper band).

    Attributes:
        fomo_change_5d: BUY after a 5-day gain of at least this (default +5%).
        fomo_rsi: BUY with RSI at or above this (default 70, Wilder's overbought level).
        fomo_band_position: BUY at or above this Bollinger position (default 1.0 = the
            upper 2-sigma band).
        panic_change_1d: SELL after a 1-day change at or below this (default -3%).
        panic_change_5d: SELL after a 5-day change at or below this (default -7%).
        panic_rsi: SELL with RSI at or below this (default 30, Wilder's oversold level).
        panic_band_position: SELL at or below this Bollinger position (default 0.0 = the
            lower 2-sigma band).
        pullback_rsi_max: DISCIPLINE BUY needs RSI at or below this (default 45).
        pullback_band_max: DISCIPLINE BUY needs Bollinger position at or below this
            (default 0.35, the lower third of the bands). A "crash" (change_1d <=
            ``panic_change_1d`` or change_5d <= ``panic_change_5d``) disqualifies it.
        strength_rsi_min: DISCIPLINE SELL needs RSI at or above this (default 65).
        strength_change_5d_min: DISCIPLINE SELL needs change_5d strictly above this
            (default 0.0: up on the week).

    Raises:
        ValueError: a threshold is not finite, an RSI level is outside 0..100, a FOMO
            return is not positive, a PANIC return is not negative, or
            ``panic_rsi >= fomo_rsi``.
    """

    fomo_change_5d: float = 0.05
    fomo_rsi: float = 70.0
    fomo_band_position: float = 1.0
    panic_change_1d: float = -0.03
    panic_change_5d: float = -0.07
    panic_rsi: float = 30.0
    panic_band_position: float = 0.0
    pullback_rsi_max: float = 45.0
    pullback_band_max: float = 0.35
    strength_rsi_min: float = 65.0
    strength_change_5d_min: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"BiasThresholds.{f.name} must be a finite number, got {v!r}")
        for name in ("fomo_rsi", "panic_rsi", "pullback_rsi_max", "strength_rsi_min"):
            if not 0.0 <= getattr(self, name) <= 100.0:
                raise ValueError(f"BiasThresholds.{name} must be within 0..100, got {getattr(self, name)!r}")
        if self.fomo_change_5d <= 0:
            raise ValueError(f"BiasThresholds.fomo_change_5d must be > 0, got {self.fomo_change_5d!r}")
        if self.panic_change_1d >= 0 or self.panic_change_5d >= 0:
            raise ValueError("BiasThresholds.panic_change_1d and panic_change_5d must be < 0")
        if self.panic_rsi >= self.fomo_rsi:
            raise ValueError(f"BiasThresholds.panic_rsi ({self.panic_rsi}) must be below fomo_rsi ({self.fomo_rsi})")


@dataclass(frozen=True, slots=True)
class TagResult:
    """Outcome of :func:`tag_trade`.

    Attributes:
        label: ``"FOMO"``, ``"PANIC"``, ``"DISCIPLINE"`` or ``"NONE"``.
        explanation: plain-language sentence naming the rule(s) that fired, their
            thresholds and the trade's numbers (maps to ``ScoredTrade.explanation``).
        rule: identifier of the deciding rule, e.g. ``"fomo.run_up_5d"``,
            ``"discipline.sell_strength"``; ``"none"`` when nothing fired.
    """

    label: Label
    explanation: str
    rule: str


def _band_words(bp: float) -> str:
    if bp >= 1.0:
        return "above the upper band" if bp > 1.0 else "on the upper band"
    if bp <= 0.0:
        return "below the lower band" if bp < 0.0 else "on the lower band"
    return "inside the bands"


def _context(f: TradeFeatures) -> str:
    return (
        f"RSI {f.rsi_14:.1f}, Bollinger position {f.bollinger_position:.2f} ({_band_words(f.bollinger_position)}), "
        f"1-day {f.change_1d:+.1%}, 5-day {f.change_5d:+.1%}, close ${f.close_usd:,.2f}, ATR ${f.atr_14:,.2f}"
    )


def _fomo_rules(f: TradeFeatures, th: BiasThresholds) -> list[tuple[str, str]]:
    out = []
    if f.change_5d >= th.fomo_change_5d:
        out.append(
            ("fomo.run_up_5d", f"bought after a {f.change_5d:+.1%} 5-day run-up (rule: 5-day >= {th.fomo_change_5d:+.1%})")
        )
    if f.rsi_14 >= th.fomo_rsi:
        out.append(("fomo.rsi_overbought", f"bought with RSI {f.rsi_14:.1f}, overbought (rule: RSI >= {th.fomo_rsi:g})"))
    if f.bollinger_position >= th.fomo_band_position:
        out.append(
            (
                "fomo.above_upper_band",
                f"bought at Bollinger position {f.bollinger_position:.2f}, {_band_words(f.bollinger_position)} "
                f"(rule: position >= {th.fomo_band_position:.2f})",
            )
        )
    return out


def _panic_rules(f: TradeFeatures, th: BiasThresholds) -> list[tuple[str, str]]:
    out = []
    if f.change_1d <= th.panic_change_1d:
        out.append(
            ("panic.drop_1d", f"sold after a {f.change_1d:+.1%} one-day drop (rule: 1-day <= {th.panic_change_1d:+.1%})")
        )
    if f.change_5d <= th.panic_change_5d:
        out.append(
            ("panic.drop_5d", f"sold after a {f.change_5d:+.1%} 5-day slide (rule: 5-day <= {th.panic_change_5d:+.1%})")
        )
    if f.rsi_14 <= th.panic_rsi:
        out.append(("panic.rsi_oversold", f"sold with RSI {f.rsi_14:.1f}, oversold (rule: RSI <= {th.panic_rsi:g})"))
    if f.bollinger_position <= th.panic_band_position:
        out.append(
            (
                "panic.below_lower_band",
                f"sold at Bollinger position {f.bollinger_position:.2f}, {_band_words(f.bollinger_position)} "
                f"(rule: position <= {th.panic_band_position:.2f})",
            )
        )
    return out


def _is_crash(f: TradeFeatures, th: BiasThresholds) -> bool:
    return f.change_1d <= th.panic_change_1d or f.change_5d <= th.panic_change_5d


def _result(label: Label, fired: list[tuple[str, str]], f: TradeFeatures) -> TagResult:
    rule, headline = fired[0]
    also = "".join(f"; also {text}" for _, text in fired[1:])
    return TagResult(label, f"{label}: {headline}{also}. Context: {_context(f)}.", rule)


def _check_side(side: str) -> Side:
    if side not in ("BUY", "SELL"):
        raise ValueError(f"side must be 'BUY' or 'SELL', got {side!r}")
    return side  # type: ignore[return-value]


def _check_features(f: TradeFeatures) -> None:
    if not isinstance(f, TradeFeatures):
        raise TypeError(f"features must be a TradeFeatures, got {type(f).__name__}")
    bad = [x.name for x in fields(f) if not math.isfinite(getattr(f, x.name))]
    if bad:
        raise ValueError(f"features must be finite; not finite: {bad}")


def tag_trade(side: Side, f: TradeFeatures, th: BiasThresholds = BiasThresholds()) -> TagResult:
    """Tag one trade FOMO / PANIC / DISCIPLINE / NONE with an explanation.

    See the module docstring for the rules and their precedence.

    Args:
        side: ``"BUY"`` or ``"SELL"`` (upper case; ``SIDE_BUY``/``SIDE_SELL`` map to them).
        f: the trade's features at the close of its bar.
        th: rule thresholds (defaults documented on :class:`BiasThresholds`).

    Returns:
        :class:`TagResult`; its explanation reads e.g. ``"FOMO: bought after a +6.2%
        5-day run-up (rule: 5-day >= +5.0%); also bought with RSI 72.4, overbought
        (rule: RSI >= 70). Context: RSI 72.4, Bollinger position 1.08 (above the upper
        band), 1-day +1.1%, 5-day +6.2%, close $1,010.00, ATR $14.20."``

    Raises:
        ValueError: ``side`` is not BUY/SELL, or a feature is NaN/infinite.
        TypeError: ``f`` is not a :class:`TradeFeatures`.
    """
    side = _check_side(side)
    _check_features(f)
    if side == "BUY":
        fired = _fomo_rules(f, th)
        if fired:
            return _result("FOMO", fired, f)
        if f.rsi_14 <= th.pullback_rsi_max and f.bollinger_position <= th.pullback_band_max and not _is_crash(f, th):
            text = (
                f"bought a pullback: RSI {f.rsi_14:.1f} <= {th.pullback_rsi_max:g} and Bollinger position "
                f"{f.bollinger_position:.2f} <= {th.pullback_band_max:.2f}, without a crash "
                f"(1-day {f.change_1d:+.1%} > {th.panic_change_1d:+.1%}, 5-day {f.change_5d:+.1%} > {th.panic_change_5d:+.1%})"
            )
            return _result("DISCIPLINE", [("discipline.buy_pullback", text)], f)
    else:
        fired = _panic_rules(f, th)
        if fired:
            return _result("PANIC", fired, f)
        if f.rsi_14 >= th.strength_rsi_min and f.change_5d > th.strength_change_5d_min:
            text = (
                f"sold into strength: RSI {f.rsi_14:.1f} >= {th.strength_rsi_min:g} after a {f.change_5d:+.1%} "
                f"5-day gain (rule: 5-day > {th.strength_change_5d_min:+.1%})"
            )
            return _result("DISCIPLINE", [("discipline.sell_strength", text)], f)
    verb = "bought" if side == "BUY" else "sold"
    return TagResult("NONE", f"NONE: no bias rule fired; {verb} with {_context(f)}.", RULE_NONE)


def reflection(side: Side, tag: TagResult, f: TradeFeatures) -> str:
    """A short post-trade reflection prompt for the coach: one or two questions for the
    trader, grounded in the trade's numbers (maps to ``ScoredTrade.reflection``).

    Args:
        side: ``"BUY"`` or ``"SELL"``.
        tag: the trade's :class:`TagResult` (from :func:`tag_trade`).
        f: the trade's features (prices in USD, returns as fractions).

    Returns:
        plain-language text ending in a question mark.

    Raises:
        ValueError: bad ``side``, unknown ``tag.label``, or non-finite features.
        TypeError: ``f`` is not a :class:`TradeFeatures`.
    """
    side = _check_side(side)
    _check_features(f)
    atr_pct = f.atr_14 / f.close_usd if f.close_usd else 0.0
    one_atr = f"one ATR (${f.atr_14:,.2f}, {atr_pct:.1%} of the price)"
    if tag.label == "FOMO":
        return (
            f"You bought after the price moved {f.change_5d:+.1%} in 5 days, with RSI at {f.rsi_14:.1f} and the close "
            f"at Bollinger position {f.bollinger_position:.2f}. Was this entry in your plan before the run-up began, "
            f"and where is your exit if the price falls back {one_atr}?"
        )
    if tag.label == "PANIC":
        return (
            f"You sold after a {f.change_1d:+.1%} day ({f.change_5d:+.1%} over 5 days, RSI {f.rsi_14:.1f}). "
            f"Did the reason you owned this position change, or did the drop itself make the decision? "
            f"Would you still sell if the price were {one_atr} higher?"
        )
    if tag.label == "DISCIPLINE":
        if side == "BUY":
            return (
                f"You bought a pullback (RSI {f.rsi_14:.1f}, Bollinger position {f.bollinger_position:.2f}, "
                f"{f.change_5d:+.1%} over 5 days). What told you this was a dip in an intact trend rather than the "
                f"start of a decline, and was your stop, for example {one_atr} lower, set before you entered?"
            )
        return (
            f"You sold into strength (RSI {f.rsi_14:.1f}, {f.change_5d:+.1%} over 5 days). Was this a target you "
            f"set in advance, and what is your plan if the price keeps rising another {one_atr}?"
        )
    if tag.label == "NONE":
        verb = "buy" if side == "BUY" else "sell"
        return (
            f"No bias rule fired (RSI {f.rsi_14:.1f}, {f.change_1d:+.1%} on the day, {f.change_5d:+.1%} over 5 days). "
            f"What was your reason for this {verb}, and would you make the same trade again at ${f.close_usd:,.2f}?"
        )
    raise ValueError(f"unknown tag label {tag.label!r}; expected one of {LABELS}")
