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

Per-user calibration (:mod:`bsopt_scorer.domain.calibration`): from 30 scored trades on, a
user's three return thresholds (FOMO's 5-day run-up, PANIC's 1-day and 5-day drops) are the
defaults rescaled by a Bayesian estimate of how volatile the user's names are; RSI and
Bollinger levels are not changed. :func:`tag_trade` is then given those thresholds and
``calibrated_trades``, and the explanation says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

from bsopt_common.vocabulary import BiasLabel
from bsopt_scorer.domain.features import TradeFeatures

Label = Literal["FOMO", "PANIC", "DISCIPLINE", "NONE"]
Side = Literal["BUY", "SELL"]
#: Every label name, in display order (:class:`bsopt_common.vocabulary.BiasLabel`).
LABELS: tuple[str, ...] = tuple(label.value for label in BiasLabel)

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
            raise ValueError(
                f"BiasThresholds.panic_rsi ({self.panic_rsi}) must be below fomo_rsi ({self.fomo_rsi})"
            )


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
    bp = f.bollinger_position
    return (
        f"RSI {f.rsi_14:.1f}, Bollinger position {bp:.2f} ({_band_words(bp)}), "
        f"1-day {f.change_1d:+.1%}, 5-day {f.change_5d:+.1%}, "
        f"close ${f.close_usd:,.2f}, ATR ${f.atr_14:,.2f}"
    )


def _fomo_rules(f: TradeFeatures, th: BiasThresholds) -> list[tuple[str, str]]:
    bp, c5, rsi = f.bollinger_position, f.change_5d, f.rsi_14
    out = []
    if c5 >= th.fomo_change_5d:
        text = f"bought after a {c5:+.1%} 5-day run-up (rule: 5-day >= {th.fomo_change_5d:+.1%})"
        out.append(("fomo.run_up_5d", text))
    if rsi >= th.fomo_rsi:
        text = f"bought with RSI {rsi:.1f}, overbought (rule: RSI >= {th.fomo_rsi:g})"
        out.append(("fomo.rsi_overbought", text))
    if bp >= th.fomo_band_position:
        text = (
            f"bought at Bollinger position {bp:.2f}, {_band_words(bp)} "
            f"(rule: position >= {th.fomo_band_position:.2f})"
        )
        out.append(("fomo.above_upper_band", text))
    return out


def _panic_rules(f: TradeFeatures, th: BiasThresholds) -> list[tuple[str, str]]:
    bp, c1, c5, rsi = f.bollinger_position, f.change_1d, f.change_5d, f.rsi_14
    out = []
    if c1 <= th.panic_change_1d:
        text = f"sold after a {c1:+.1%} one-day drop (rule: 1-day <= {th.panic_change_1d:+.1%})"
        out.append(("panic.drop_1d", text))
    if c5 <= th.panic_change_5d:
        text = f"sold after a {c5:+.1%} 5-day slide (rule: 5-day <= {th.panic_change_5d:+.1%})"
        out.append(("panic.drop_5d", text))
    if rsi <= th.panic_rsi:
        text = f"sold with RSI {rsi:.1f}, oversold (rule: RSI <= {th.panic_rsi:g})"
        out.append(("panic.rsi_oversold", text))
    if bp <= th.panic_band_position:
        text = (
            f"sold at Bollinger position {bp:.2f}, {_band_words(bp)} "
            f"(rule: position <= {th.panic_band_position:.2f})"
        )
        out.append(("panic.below_lower_band", text))
    return out


def _is_crash(f: TradeFeatures, th: BiasThresholds) -> bool:
    return f.change_1d <= th.panic_change_1d or f.change_5d <= th.panic_change_5d


def _pullback_rule(f: TradeFeatures, th: BiasThresholds) -> list[tuple[str, str]]:
    if f.rsi_14 > th.pullback_rsi_max or f.bollinger_position > th.pullback_band_max or _is_crash(f, th):
        return []
    text = (
        f"bought a pullback: RSI {f.rsi_14:.1f} <= {th.pullback_rsi_max:g} and Bollinger position "
        f"{f.bollinger_position:.2f} <= {th.pullback_band_max:.2f}, without a crash "
        f"(1-day {f.change_1d:+.1%} > {th.panic_change_1d:+.1%}, "
        f"5-day {f.change_5d:+.1%} > {th.panic_change_5d:+.1%})"
    )
    return [("discipline.buy_pullback", text)]


def _strength_rule(f: TradeFeatures, th: BiasThresholds) -> list[tuple[str, str]]:
    if f.rsi_14 < th.strength_rsi_min or not f.change_5d > th.strength_change_5d_min:
        return []
    text = (
        f"sold into strength: RSI {f.rsi_14:.1f} >= {th.strength_rsi_min:g} after a "
        f"{f.change_5d:+.1%} 5-day gain (rule: 5-day > {th.strength_change_5d_min:+.1%})"
    )
    return [("discipline.sell_strength", text)]


def _calibration_note(th: BiasThresholds, calibrated_trades: int | None) -> str:
    if calibrated_trades is None:
        return ""
    return (
        f" Used calibrated thresholds ({calibrated_trades} trades): 5-day run-up >= "
        f"{th.fomo_change_5d:+.1%}, 1-day drop <= {th.panic_change_1d:+.1%}, 5-day slide <= "
        f"{th.panic_change_5d:+.1%}."
    )


def _result(label: Label, fired: list[tuple[str, str]], f: TradeFeatures, note: str) -> TagResult:
    rule, headline = fired[0]
    also = "".join(f"; also {text}" for _, text in fired[1:])
    return TagResult(label, f"{label}: {headline}{also}. Context: {_context(f)}.{note}", rule)


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


def tag_trade(
    side: Side, f: TradeFeatures, th: BiasThresholds = BiasThresholds(), *, calibrated_trades: int | None = None
) -> TagResult:
    """Tag one trade FOMO / PANIC / DISCIPLINE / NONE with an explanation.

    See the module docstring for the rules and their precedence.

    Args:
        side: ``"BUY"`` or ``"SELL"`` (upper case; ``SIDE_BUY``/``SIDE_SELL`` map to them).
        f: the trade's features at the close of its bar.
        th: rule thresholds (defaults documented on :class:`BiasThresholds`: the
            population thresholds).
        calibrated_trades: set when ``th`` are a user's calibrated thresholds
            (:mod:`bsopt_scorer.domain.calibration`), to the number of that user's trades
            they were calibrated on; the explanation then ends with ``"Used calibrated
            thresholds (42 trades): 5-day run-up >= +7.5%, 1-day drop <= -4.5%, 5-day
            slide <= -10.5%."``. ``None`` (the default): the explanation is unchanged.

    Returns:
        :class:`TagResult`; its explanation reads e.g. ``"FOMO: bought after a +6.2%
        5-day run-up (rule: 5-day >= +5.0%); also bought with RSI 72.4, overbought
        (rule: RSI >= 70). Context: RSI 72.4, Bollinger position 1.08 (above the upper
        band), 1-day +1.1%, 5-day +6.2%, close $1,010.00, ATR $14.20."``

    Raises:
        ValueError: ``side`` is not BUY/SELL, a feature is NaN/infinite, or
            ``calibrated_trades`` is negative.
        TypeError: ``f`` is not a :class:`TradeFeatures`.
    """
    side = _check_side(side)
    _check_features(f)
    if calibrated_trades is not None and (isinstance(calibrated_trades, bool) or calibrated_trades < 0):
        raise ValueError(f"calibrated_trades must be a count >= 0 or None, got {calibrated_trades!r}")
    note = _calibration_note(th, calibrated_trades)
    if side == "BUY":
        fired = _fomo_rules(f, th)
        if fired:
            return _result("FOMO", fired, f, note)
        fired = _pullback_rule(f, th)
    else:
        fired = _panic_rules(f, th)
        if fired:
            return _result("PANIC", fired, f, note)
        fired = _strength_rule(f, th)
    if fired:
        return _result("DISCIPLINE", fired, f, note)
    verb = "bought" if side == "BUY" else "sold"
    return TagResult("NONE", f"NONE: no bias rule fired; {verb} with {_context(f)}.{note}", RULE_NONE)


