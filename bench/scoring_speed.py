"""Vectorised scoring speed: 100,000 random trades over the bundled bars, TA-Lib vs the
pandas reference indicators (issue 9 section 1).

For each symbol (GOOGL daily 2009-2018, EURUSD hourly 2017, both bundled) and each
indicator library, it draws N trades on random bars with full history (a fixed seed,
half BUY half SELL, as ``date`` for daily bars and ``datetime`` for hourly) and times:

- ``raw``: the library's three calls alone (RSI(14), ATR(14), BBANDS(20, 2)) over the
  whole series (best of 20): where the two libraries differ;
- ``indicators``: :func:`~bsopt_scorer.domain.features.indicator_frame` alone, once over
  the whole series (best of 20): ``raw`` plus the numpy columns both share (Bollinger
  position, 1- and 5-bar changes) and building the frame;
- ``features``: :func:`~bsopt_scorer.domain.features.features_for` over all N trades (one
  indicator frame, one vectorised bar lookup, N ``TradeFeatures``);
- ``tags``: :func:`~bsopt_scorer.domain.tags.tag_trade` on each trade (label, rule and
  explanation: per-trade Python, the same for both libraries);
- ``scoring`` = features + tags, against the target of the issue: **<= 5 s for 100,000
  trades** (the blueprint's SLO is 200 ms per trade).

It prints trades/s and seconds for each, the pandas/TA-Lib ratios, and exits 1 when a
TA-Lib scoring run misses the target. It also checks that both libraries gave the same
labels.

    .venv/bin/python bench/scoring_speed.py [--trades 100000] [--seed 0] [--symbols GOOGL EURUSD]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import date, datetime

import numpy as np
import pandas as pd

from bsopt_common.marketdata import bundled_provider
from bsopt_scorer.domain.features import MIN_BARS, features_for, indicator_frame, is_daily
from bsopt_scorer.domain.indicators import IndicatorLib, PandasIndicators, TalibIndicators
from bsopt_scorer.domain.tags import tag_trade

TARGET_SECONDS = 5.0
TARGET_TRADES = 100_000


def _trades(bars: pd.DataFrame, n: int, seed: int) -> tuple[list[date | datetime], list[str]]:
    rng = np.random.default_rng(seed)
    stamps = bars.index[rng.integers(MIN_BARS - 1, len(bars), n)]
    daily = is_daily(bars.index)
    times: list[date | datetime] = [t.date() for t in stamps] if daily else list(stamps.to_pydatetime())
    sides = rng.choice(np.array(["BUY", "SELL"]), n).tolist()
    return times, sides


def _run(bars: pd.DataFrame, times: list[date | datetime], sides: list[str], lib: IndicatorLib) -> dict[str, object]:
    h, lo, c = (bars[k].to_numpy(dtype="float64") for k in ("high", "low", "close"))
    raw_s = min(_timed(lambda: (lib.rsi(c, 14), lib.atr(h, lo, c, 14), lib.bbands(c, 20, 2.0))) for _ in range(20))
    frame_s = min(_timed(lambda: indicator_frame(bars, lib)) for _ in range(20))
    t0 = time.perf_counter()
    feats = features_for(bars, times, indicators=lib)
    t1 = time.perf_counter()
    tags = [tag_trade(side, f) for side, f in zip(sides, feats, strict=True)]  # type: ignore[arg-type]
    t2 = time.perf_counter()
    return {"raw": raw_s, "indicators": frame_s, "features": t1 - t0, "tags": t2 - t1, "scoring": t2 - t0,
            "labels": [(t.label, t.rule) for t in tags]}


def _timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trades", type=int, default=TARGET_TRADES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--symbols", nargs="+", default=["GOOGL", "EURUSD"])
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))}), "
          f"Python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}")
    limit = TARGET_SECONDS * args.trades / TARGET_TRADES
    ok = True
    provider = bundled_provider()
    for symbol in args.symbols:
        bars = provider.fetch_history(symbol)
        times, sides = _trades(bars, args.trades, args.seed)
        libs: list[IndicatorLib] = [TalibIndicators(), PandasIndicators()]
        results = {lib.name: _run(bars, times, sides, lib) for lib in libs}
        print(f"\n{symbol}: {len(bars)} bars ({'daily' if is_daily(bars.index) else 'intraday'}), "
              f"{args.trades:,} trades")
        print(f"  {'':8} {'raw':>9} {'indicators':>12} {'features':>10} {'tags':>9} {'scoring':>9} {'trades/s':>10}")
        for name, r in results.items():
            print(f"  {name:8} {r['raw'] * 1e3:7.2f}ms {r['indicators'] * 1e3:10.2f}ms "
                  f"{r['features']:9.3f}s {r['tags']:8.3f}s {r['scoring']:8.3f}s {args.trades / r['scoring']:10,.0f}")
        t, p = results["talib"], results["pandas"]
        print(f"  pandas/talib: raw {p['raw'] / t['raw']:.1f}x, "  # type: ignore[operator]
              f"indicators {p['indicators'] / t['indicators']:.1f}x, "  # type: ignore[operator]
              f"features {p['features'] / t['features']:.2f}x, "  # type: ignore[operator]
              f"scoring {p['scoring'] / t['scoring']:.2f}x")  # type: ignore[operator]
        same = t["labels"] == p["labels"]
        met = t["scoring"] <= limit  # type: ignore[operator]
        print(f"  labels identical (talib vs pandas): {same}")
        print(f"  target: scoring {args.trades:,} trades <= {limit:.2f} s with TA-Lib: "
              f"{'met' if met else 'NOT met'} ({t['scoring']:.3f} s)")
        ok = ok and bool(met) and same
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
