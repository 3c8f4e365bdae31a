"""Per-user calibration of the tag thresholds (issue 9 §1): a conjugate Bayesian update of
how volatile the names a user trades are, from that user's own scored trades.

What is calibrated, and what is not
-----------------------------------
The tag rules (:mod:`bsopt_scorer.domain.tags`) compare two kinds of numbers:

- **Returns** (``fomo_change_5d`` +5%, ``panic_change_1d`` -3%, ``panic_change_5d`` -7%;
  the last two also bound DISCIPLINE's "no crash" condition). These are in percent, so they
  mean different things on different names: +5% in a week is a run-up on a utility and an
  ordinary week on a small-cap biotech. A user who always trades volatile names would be
  tagged FOMO on most buys and PANIC on most sells. These three are **rescaled per user**.
- **Scale-free levels** (RSI 70/30/45/65, Bollinger positions 1.0/0.0/0.35, and "up on the
  week", ``strength_change_5d_min`` = 0). RSI and Bollinger bands are already normalised by
  the symbol's own recent volatility, so a volatile name does not push them to extremes
  more often; moving them towards a user's habit (say, a user who always buys at RSI 75)
  would define the bias away instead of correcting for the instrument. They **stay at the
  population values**.

The quantity learned is the user's typical volatility, measured per scored trade by
``y_i = ln(ATR(14) / close)`` at the trade's bar (the name's typical daily range as a
fraction of its price, :class:`~bsopt_scorer.domain.features.TradeFeatures` ``atr_14 /
close_usd``). ATR% is used rather than the trades' own returns because it says how volatile
the name is without saying which way the user traded it: a user who chases run-ups has
large ``change_5d`` values *because* of the bias, and calibrating on them would excuse it.
The logarithm makes the scale multiplicative (ATR% is positive and right-skewed).

The model (Gelman et al., *Bayesian Data Analysis*, 3rd ed., 2013, §2.5 "Normal
distribution with known variance", with the prior variance written ``τ0² = s²/κ0`` so
that the prior counts as ``κ0`` observations, as in §3.3's conjugate prior
``μ | σ² ~ N(μ0, σ²/κ0)``)
-------------------------------------------------------------------------------------------

- **Likelihood**: ``y_i | μ_u ~ Normal(μ_u, s²)``, i = 1..n, independent, with ``μ_u`` the
  user's mean log ATR% and ``s`` = :data:`LOG_ATR_SD` = 0.26 known (the spread of daily
  ln ATR% on one large US stock, GOOGL 2009-2018 bundled bars: 0.261).
- **Prior**: ``μ_u ~ Normal(μ0, s² / κ0)``, centred on the population, ``μ0 =
  ln(POPULATION_ATR_PCT)`` = ln 1.8% (the geometric mean of GOOGL's daily ATR(14)/close
  over the bundled 2009-2018 bars, 1.806%: the kind of name the population thresholds
  were set on, see tags.py), with strength ``κ0`` = :data:`PRIOR_TRADES` = 30
  pseudo-trades.
- **Update** (conjugate; only the sufficient statistics ``n`` and ``S = Σ y_i`` are needed,
  so it is kept incrementally, one row per user)::

      μ_n  = (κ0 μ0 + S) / (κ0 + n)           = (κ0 μ0 + n ȳ) / (κ0 + n)
      s_n² = s² / (κ0 + n)                    (posterior: μ_u | y ~ Normal(μ_n, s_n²))

- **Thresholds**: the user's scale is ``k = exp(μ_n - μ0)`` (the posterior median of the
  user's geometric-mean ATR% over the population's), clamped to
  [:data:`SCALE_MIN`, :data:`SCALE_MAX`] = [0.5, 2.0]; the three return thresholds are the
  population ones times ``k``: ``fomo_change_5d = +5% k``, ``panic_change_1d = -3% k``,
  ``panic_change_5d = -7% k``. So they stay within +2.5%..+10%, -1.5%..-6% and
  -3.5%..-14%: never so tight that ordinary noise is flagged, never so wide that a real
  crash is not (a tenth of the price in a week is a crash on any name). The clamp also
  bounds what an outlier (a user's penny stock, hourly FX bars with their small ranges)
  can do.
- **When**: from :data:`MIN_TRADES` = 30 trades with a positive ATR (practically every
  scored trade). Below that, the population thresholds are used unchanged (``calibrate``
  returns :data:`POPULATION_CALIBRATION`). At 30 trades the data and the prior weigh the same (``n = κ0``);
  with 90 trades the data weigh 3/4.

Worked example: 40 trades on names with ATR% 3.6% each (``y_i = ln 0.036``): ``μ_n - μ0 =
40 ln 2 / 70 = 0.396``, ``k = 1.486``, so FOMO's run-up threshold becomes +7.4% and
PANIC's one-day drop -4.5%.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from bsopt_scorer.domain.features import TradeFeatures
from bsopt_scorer.domain.tags import BiasThresholds

#: Scored trades a user needs before their thresholds are calibrated.
MIN_TRADES = 30
#: Prior strength κ0, in pseudo-trades at the population scale.
PRIOR_TRADES = 30.0
#: Population ATR(14)/close, the prior's centre (exp μ0).
POPULATION_ATR_PCT = 0.018
#: s: the known spread of one trade's ln ATR% around the user's mean.
LOG_ATR_SD = 0.26
#: Bounds of the user's scale k (the return thresholds move at most 2x either way).
SCALE_MIN = 0.5
SCALE_MAX = 2.0

POPULATION = BiasThresholds()

Source = Literal["population", "calibrated"]


def log_atr_pct(f: TradeFeatures) -> float | None:
    """One trade's observation ``y = ln(atr_14 / close_usd)``; ``None`` when the ATR or
    the close is not positive (a flat series), which then does not count."""
    if not (f.atr_14 > 0 and f.close_usd > 0 and math.isfinite(f.atr_14) and math.isfinite(f.close_usd)):
        return None
    return math.log(f.atr_14 / f.close_usd)


@dataclass(frozen=True, slots=True)
class Posterior:
    """``μ_u | y ~ Normal(mean, sd²)`` for the user's mean log ATR%."""

    mean: float
    sd: float


def posterior(trades: int, sum_log_atr_pct: float) -> Posterior:
    """The conjugate update of the module docstring from the sufficient statistics ``n``
    (``trades``) and ``S = Σ y_i`` (``sum_log_atr_pct``); ``n = 0`` gives the prior.

    Raises:
        ValueError: ``trades`` is negative or ``sum_log_atr_pct`` is not finite.
    """
    if trades < 0:
        raise ValueError(f"trades must be >= 0, got {trades!r}")
    if not math.isfinite(sum_log_atr_pct):
        raise ValueError(f"sum_log_atr_pct must be finite, got {sum_log_atr_pct!r}")
    mu0 = math.log(POPULATION_ATR_PCT)
    kappa_n = PRIOR_TRADES + trades
    return Posterior((PRIOR_TRADES * mu0 + sum_log_atr_pct) / kappa_n, LOG_ATR_SD / math.sqrt(kappa_n))


def user_scale(trades: int, sum_log_atr_pct: float) -> float:
    """``k = clamp(exp(μ_n - μ0), SCALE_MIN, SCALE_MAX)``."""
    k = math.exp(posterior(trades, sum_log_atr_pct).mean - math.log(POPULATION_ATR_PCT))
    return min(SCALE_MAX, max(SCALE_MIN, k))


def scaled(k: float, base: BiasThresholds = POPULATION) -> BiasThresholds:
    """``base`` with its three return thresholds multiplied by ``k``; the rest unchanged."""
    return replace(base, fomo_change_5d=base.fomo_change_5d * k, panic_change_1d=base.panic_change_1d * k,
                   panic_change_5d=base.panic_change_5d * k)


@dataclass(frozen=True, slots=True)
class Calibration:
    """The thresholds a trade is tagged with, and where they came from.

    Attributes:
        source: ``"population"`` (fewer than :data:`MIN_TRADES` trades) or ``"calibrated"``.
        trades: the user's trades the calibration used (0 for the population).
        scale: ``k`` (1.0 for the population).
        thresholds: the thresholds themselves.
    """

    source: Source
    trades: int
    scale: float
    thresholds: BiasThresholds

    @property
    def calibrated(self) -> bool:
        return self.source == "calibrated"

    def record(self) -> dict[str, Any]:
        """JSON-ready form (stored in ``scorer.user_calibration.thresholds`` and, for
        audit, in each scored trade's ``thresholds`` column)."""
        return {"source": self.source, "trades": self.trades, "scale": self.scale,
                "thresholds": asdict(self.thresholds)}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Calibration:
        """Inverse of :meth:`record`.

        Raises:
            ValueError, KeyError, TypeError: not a record of :meth:`record`.
        """
        source = data["source"]
        if source not in ("population", "calibrated"):
            raise ValueError(f"unknown calibration source {source!r}")
        return cls(source, int(data["trades"]), float(data["scale"]), BiasThresholds(**data["thresholds"]))


POPULATION_CALIBRATION = Calibration("population", 0, 1.0, POPULATION)


def calibrate(trades: int, sum_log_atr_pct: float) -> Calibration:
    """A user's thresholds from their sufficient statistics: the population's below
    :data:`MIN_TRADES` trades, else the population's rescaled by :func:`user_scale`."""
    if trades < MIN_TRADES:
        posterior(trades, sum_log_atr_pct)  # validates
        return POPULATION_CALIBRATION
    k = user_scale(trades, sum_log_atr_pct)
    return Calibration("calibrated", trades, k, scaled(k))
