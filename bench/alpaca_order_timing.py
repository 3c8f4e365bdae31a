"""What the per-order timing of the Alpaca adapter costs (issue 8 section 3).

Runs the same order path twice over: ``AlpacaBroker`` (real alpaca-py clients) against the
local Alpaca stand-in on 127.0.0.1 (tests/alpaca_standin.py, in this process), several
accounts, with ``order_timing`` on and off, in interleaved runs (on, off, off, on, ...), many
orders each; the order log line is written (INFO, to /dev/null) whenever timing is on.
Prints the per-order latency of each mode, the instrumentation's overhead per order in ms
(median on - median off) and the on/off latency ratio, against the issue's limits
(overhead < 10 ms; aim < 0.1 ms). HTTP noise is far larger than the instrumentation, so
it also measures the instrumentation alone in-process: five ``perf_counter_ns`` readings,
the ``OrderTiming`` and the log line, per order.

    .venv/bin/python bench/alpaca_order_timing.py [--accounts 4] [--orders 200] [--rounds 6]
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from bsopt_broker.adapters.alpaca import broker as alpaca_broker
from bsopt_broker.adapters.alpaca.accounts import parse_accounts
from bsopt_broker.adapters.alpaca.broker import AlpacaBroker, AlpacaOrderResult, OrderTiming
from bsopt_broker.domain.records import MarketOrder
from bsopt_common.money import Money
from bsopt_common.vocabulary import Side

LIMIT_MS = 10.0
AIM_MS = 0.1
STANDIN = Path(__file__).resolve().parents[1] / "services" / "broker-gateway" / "tests" / "alpaca_standin.py"


def _standin_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bsopt_bench_alpaca_standin", STANDIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _order(account: str, cid: str) -> MarketOrder:
    return MarketOrder(account_id=account, user_id=f"u-{account}", client_order_id=cid, symbol="AAPL",
                       side=Side.BUY, quantity=1, as_of=datetime.now(UTC))


def _run(broker: AlpacaBroker, accounts: list[str], orders: int, tag: str) -> list[float]:
    """Per-order latency in ms of ``orders`` orders, round-robin over the accounts."""
    latencies = []
    for i in range(orders):
        order = _order(accounts[i % len(accounts)], f"{tag}-{i}")
        started = time.perf_counter_ns()
        broker.submit_market_order(order)
        latencies.append((time.perf_counter_ns() - started) / 1e6)
    return latencies


def _instrumentation_alone(sample: AlpacaOrderResult, order: MarketOrder, n: int) -> tuple[float, float, float]:
    """Microseconds per order: (readings + OrderTiming + log line, readings + OrderTiming, an empty loop)."""
    def readings() -> OrderTiming:
        a = time.perf_counter_ns()
        b = time.perf_counter_ns()
        c = time.perf_counter_ns()
        d = time.perf_counter_ns()
        e = time.perf_counter_ns()
        return OrderTiming(a, b, c, d, e)

    def timed() -> None:
        a = time.perf_counter_ns()
        b = time.perf_counter_ns()
        c = time.perf_counter_ns()
        d = time.perf_counter_ns()
        e = time.perf_counter_ns()
        alpaca_broker._log_order(sample, order, OrderTiming(a, b, c, d, e))

    def bare() -> None:
        pass

    results = []
    for fn in (timed, readings, bare):
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter_ns()
            for _ in range(n):
                fn()
            best = min(best, (time.perf_counter_ns() - started) / n / 1e3)
        results.append(best)
    return results[0], results[1], results[2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=4)
    ap.add_argument("--orders", type=int, default=200, help="orders per run")
    ap.add_argument("--rounds", type=int, default=6, help="runs per mode, interleaved on/off/off/on")
    ap.add_argument("--fill-poll-s", type=float, default=0.002)
    ap.add_argument("--paired", type=int, default=400, help="orders alternating on/off one by one")
    ap.add_argument("--loops", type=int, default=20_000, help="iterations of the in-process measurement")
    args = ap.parse_args()

    out = logging.getLogger("bsopt_broker.alpaca")
    out.setLevel(logging.INFO)
    out.propagate = False
    sink = open(os.devnull, "w")  # closed after the run
    out.addHandler(logging.StreamHandler(sink))

    standin = _standin_module().AlpacaStandin()
    names = [f"b{i}" for i in range(args.accounts)]
    entries = []
    for name in names:
        standin.add_account(f"PK{name.upper()}", f"secret-{name}", cash=10**9)
        entries.append({"name": name, "broker": "alpaca", "owner": f"u-{name}", "api_key_id": f"PK{name.upper()}",
                        "api_secret_key": f"secret-{name}", "base_url": standin.base_url, "min_balance_usd": 0})
    accounts = parse_accounts(entries)

    def prices(symbol: str) -> Money:
        return Money(standin.prices[symbol], "USD")

    brokers = {mode: AlpacaBroker(accounts, prices, fill_poll_s=args.fill_poll_s, order_timing=mode == "on")
               for mode in ("on", "off")}
    latencies: dict[str, list[float]] = {"on": [], "off": []}
    per_run: list[tuple[str, float]] = []
    with standin.serving():
        for mode, broker in brokers.items():  # warm-up: clients created, connections open
            _run(broker, names, 4 * len(names), f"warm-{mode}")
        sequence = [("on", "off") if r % 2 == 0 else ("off", "on") for r in range(args.rounds)]
        for r, pair in enumerate(sequence):
            for mode in pair:
                run = _run(brokers[mode], names, args.orders, f"{mode}-{r}")
                latencies[mode].extend(run)
                per_run.append((mode, statistics.median(run)))
        paired = []  # order by order, on and off alternating: drift cancels out
        for i in range(args.paired):
            pair = {}
            for mode in (("on", "off") if i % 2 == 0 else ("off", "on")):
                pair[mode] = _run(brokers[mode], [names[i % len(names)]], 1, f"p-{mode}-{i}")[0]
            paired.append(pair["on"] - pair["off"])
        sample = brokers["on"].submit_market_order(_order(names[0], "sample"))
    with_us, readings_us, bare_us = _instrumentation_alone(sample, _order(names[0], "sample"), args.loops)
    sink.close()

    med = {m: statistics.median(v) for m, v in latencies.items()}
    mean = {m: statistics.fmean(v) for m, v in latencies.items()}
    overhead_ms = med["on"] - med["off"]
    alone_ms = (with_us - bare_us) / 1e3
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}; {args.accounts} accounts, {args.rounds} runs x {args.orders} orders per mode")
    print("median per run (ms): " + ", ".join(f"{m} {v:.2f}" for m, v in per_run))
    for m in ("on", "off"):
        v = sorted(latencies[m])
        print(f"timing {m:3}: {len(v)} orders, median {med[m]:.3f} ms, mean {mean[m]:.3f} ms, "
              f"p90 {v[int(0.9 * (len(v) - 1))]:.3f} ms")
    print(f"overhead per order over HTTP (median on - off): {overhead_ms:+.3f} ms; "
          f"on/off latency ratio: median {med['on'] / med['off']:.3f}, mean {mean['on'] / mean['off']:.3f}")
    if paired:
        print(f"overhead per order, {len(paired)} paired orders (median of on - off): "
              f"{statistics.median(paired):+.3f} ms")
    print(f"instrumentation alone (in-process, {args.loops} loops, best of 5): {with_us:.2f} us per order "
          f"= {alone_ms:.4f} ms (readings + OrderTiming alone {readings_us - bare_us:.2f} us; the log line the "
          f"rest; empty loop {bare_us:.2f} us)")
    print(f"limit < {LIMIT_MS:g} ms: {'met' if alone_ms < LIMIT_MS and overhead_ms < LIMIT_MS else 'NOT met'}; "
          f"aim < {AIM_MS:g} ms: {'met' if alone_ms < AIM_MS else 'NOT met'} (instrumentation alone)")


if __name__ == "__main__":
    main()
