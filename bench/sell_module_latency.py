"""broker-gateway's gRPC latency with the sell module idle vs busy (issue 8 section 4).

One broker-gateway (``BrokerGateway.run``: real gRPC with token checks, a fresh Postgres
database, an embedded Kafka-protocol broker for the outbox relay) over 51 Alpaca accounts
of the local stand-in (HTTP on 127.0.0.1, in a child process of its own, as Alpaca is not
in broker-gateway's process): 50 accounts with a sell worker each
(``check_interval_s``, default 0.2 s) and one account the client trades on. The client
calls ``GetAccount`` and ``PlaceOrder`` (buy 1 share) one after another over one gRPC
channel, timing each call end to end.

- **idle**: the 50 workers run, but no rule is in force (``SetSellRules`` with no
  threshold): each pass reads the rules and sleeps.
- **busy**: ``SetSellRules(stop_loss_pct=2, take_profit_pct=2)`` on all 50: each account
  holds a position whose price swings +-5 % around its average entry price on every
  pass, and a refill thread buys it back (in the stand-in) at a new average price after
  each sale, so the workers keep evaluating and selling (each sale: the whole order path
  through alpaca-py, the balance guard, one decision event in the outbox).

Runs interleave idle, busy, busy, idle, ... Prints p50/p95 (nearest rank) per method and
mode, and the busy/idle p95 ratio against the goal: < 5 % difference.

    .venv/bin/python bench/sell_module_latency.py [--runs 6] [--calls 100] [--accounts 50]
        [--interval 0.2] [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import psycopg
import yaml  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as pb_grpc
from bsopt_broker.bootstrap import BrokerGateway
from bsopt_broker.config import BrokerSettings
from bsopt_common import topics
from bsopt_common.db_roles import bootstrap_service_roles
from bsopt_common.embedded.kafka import EmbeddedKafka, ensure_topics
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_common.testing.tokens import TestIssuer

HERE = Path(__file__).resolve().parent
STANDIN = HERE.parent / "services" / "broker-gateway" / "tests" / "alpaca_standin.py"
GOAL_RATIO = 1.05
USER = "u-bench"
SECRET_ENV = "BENCH_SELL_ALPACA_SECRET"


def _standin_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_alpaca_standin", STANDIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Market:
    """The busy market of the 50 accounts: per account one symbol whose price swings
    +-5 % around the position's average entry price, and a position bought back (a new
    average price, so a new snapshot) after each sale."""

    def __init__(self, standin: Any, keys: list[str]):
        self.standin = standin
        self.keys = keys
        self.stop = threading.Event()
        self.refills = 0
        self._tick = 0

    def symbol(self, i: int) -> str:
        return f"S{i:02d}"

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self._tick += 1
            with self.standin.lock:
                for i, key in enumerate(self.keys):
                    acct = self.standin.accounts[key]
                    sym = self.symbol(i)
                    if sym not in acct.positions:
                        self.refills += 1
                        acct.positions[sym] = (10, Decimal(100) + Decimal(self.refills) / 1000)
                    avg = acct.positions[sym][1]
                    self.standin.prices[sym] = (avg * Decimal("1.05") if (self._tick + i) % 2
                                                else avg * Decimal("0.95")).quantize(Decimal("0.0001"))


async def timed_calls(target: str, tok: str, calls: int, run: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"GetAccount": [], "PlaceOrder": []}
    meta = (("authorization", f"Bearer {tok}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.BrokerGatewayServiceStub(channel)
        await stub.GetAccount(pb.GetAccountRequest(account_id="client"), metadata=meta, timeout=30)  # warm
        for n in range(calls):
            t0 = time.perf_counter()
            await stub.GetAccount(pb.GetAccountRequest(account_id="client"), metadata=meta, timeout=30)
            t1 = time.perf_counter()
            await stub.PlaceOrder(pb.PlaceOrderRequest(
                account_id="client", client_order_id=f"bench-{run}-{n}-{uuid.uuid4().hex[:8]}", symbol="AAPL",
                side=pb.SIDE_BUY, quantity=1), metadata=meta, timeout=30)
            t2 = time.perf_counter()
            out["GetAccount"].append((t1 - t0) * 1000)
            out["PlaceOrder"].append((t2 - t1) * 1000)
    return out


async def set_mode(target: str, tok: str, busy: bool, accounts: int) -> None:
    meta = (("authorization", f"Bearer {tok}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.BrokerGatewayServiceStub(channel)
        for i in range(accounts):
            request = (pb.SetSellRulesRequest(account_id=f"seller-{i:02d}", stop_loss_pct=2, take_profit_pct=2)
                       if busy else pb.SetSellRulesRequest(account_id=f"seller-{i:02d}"))
            await stub.SetSellRules(request, metadata=meta, timeout=30)


def serve_standin(keys: list[str], pipe: Any) -> None:
    """The child process: the stand-in and the busy market; answers ``"sells"`` (the count
    of sell orders placed on the 50 accounts) until ``"stop"``."""
    standin = _standin_module().AlpacaStandin()
    for key in keys:
        standin.add_account(key, "bench-secret", cash=1_000_000)
    standin.add_account("PKCLIENT", "bench-secret", cash=10_000_000)
    market = Market(standin, keys)
    with standin.lock:
        for i in range(len(keys)):
            standin.prices[market.symbol(i)] = Decimal(100)
    feeder = threading.Thread(target=market.run, daemon=True)
    with standin.serving():
        feeder.start()
        pipe.send(standin.base_url)
        while (command := pipe.recv()) != "stop":
            assert command == "sells"
            pipe.send(standin_sells(standin, keys))
        market.stop.set()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--accounts", type=int, default=50)
    ap.add_argument("--interval", type=float, default=0.2, help="check_interval_s of the sell workers")
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="sys.setswitchinterval for broker-gateway's process (seconds; Python's default 0.005)")
    ap.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    logging.basicConfig(level=logging.WARNING, stream=open(os.devnull, "w"))

    keys = [f"PKSELL{i:02d}" for i in range(args.accounts)]
    ctx = multiprocessing.get_context("spawn")
    pipe, child_end = ctx.Pipe()
    child = ctx.Process(target=serve_standin, args=(keys, child_end), daemon=True)
    child.start()
    base_url = pipe.recv()

    def sells_so_far() -> int:
        pipe.send("sells")
        return int(pipe.recv())

    workdir = Path(tempfile.mkdtemp(prefix="bench-sell-"))
    accounts_file = workdir / "accounts.yaml"
    base = {"broker": "alpaca", "owner": USER, "api_secret_key_env": SECRET_ENV, "base_url": base_url}
    entries = [{**base, "name": "client", "api_key_id": "PKCLIENT"}]
    entries += [{**base, "name": f"seller-{i:02d}", "api_key_id": key,
                 "sell_rules": {"check_interval_s": args.interval}} for i, key in enumerate(keys)]
    accounts_file.write_text(yaml.safe_dump({"accounts": entries}), encoding="utf-8")
    os.environ[SECRET_ENV] = "bench-secret"

    u = make_url(args.database_url)
    name = f"bsopt_bench_sell_{uuid.uuid4().hex[:10]}"
    admin = dict(host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username, password=u.password,
                 dbname=u.database or "postgres", autocommit=True)
    with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{name}"')
    results: dict[str, dict[str, list[float]]] = {m: {"GetAccount": [], "PlaceOrder": []} for m in ("idle", "busy")}
    per_run: list[tuple[str, float, float]] = []
    sold_busy = 0
    try:
        db_url = bootstrap_service_roles(u.set(database=name).render_as_string(hide_password=False))
        with EmbeddedKafka() as kafka, TestIssuer() as issuer:
            ensure_topics(kafka.bootstrap_servers, [topics.SELLS_DECIDED.name])
            port = free_port()
            settings = BrokerSettings(database_url=db_url["broker-gateway"],
                                      kafka_bootstrap_servers=kafka.bootstrap_servers, port=port,
                                      accounts_file=accounts_file,
                                      **service_identity(issuer, "broker-gateway"))
            gw = BrokerGateway(settings)
            target = f"127.0.0.1:{port}"
            tok = issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope="broker:accounts broker:orders broker:sells",
                               sub=USER,
                               client_id="resource-api", act={"sub": "resource-api"}, ttl_seconds=3600)
            with ServiceThread(gw.run, port=port):
                order = ["idle", "busy", "busy", "idle"] * ((args.runs + 3) // 4)
                for run, mode in enumerate(order[:args.runs], 1):
                    asyncio.run(set_mode(target, tok, mode == "busy", args.accounts))
                    time.sleep(1.0)  # the workers settle into the mode
                    before = sells_so_far()
                    got = asyncio.run(timed_calls(target, tok, args.calls, run))
                    sold = sells_so_far() - before
                    if mode == "busy":
                        sold_busy += sold
                    for method, values in got.items():
                        results[mode][method].extend(values)
                    per_run.append((mode, pct(got["PlaceOrder"], 95), pct(got["GetAccount"], 95)))
                    print(f"run {run} {mode}: GetAccount p95 {pct(got['GetAccount'], 95):.2f} ms, PlaceOrder p95 "
                          f"{pct(got['PlaceOrder'], 95):.2f} ms, sells by the workers during the run: {sold}",
                          flush=True)
                asyncio.run(set_mode(target, tok, False, args.accounts))
    finally:
        pipe.send("stop")
        child.join(10)
        with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; {args.accounts} sell workers "
          f"(check_interval_s {args.interval}), {args.runs} interleaved runs x {args.calls} calls of each method")
    print(f"sells by the workers during the busy runs: {sold_busy}")
    print(f"{'method':<11} {'mode':<5} {'n':>5} {'p50 ms':>8} {'p95 ms':>8}")
    for method in ("GetAccount", "PlaceOrder"):
        for mode in ("idle", "busy"):
            v = results[mode][method]
            print(f"{method:<11} {mode:<5} {len(v):>5} {pct(v, 50):>8.2f} {pct(v, 95):>8.2f}")
    for method in ("GetAccount", "PlaceOrder"):
        idle, busy = pct(results["idle"][method], 95), pct(results["busy"][method], 95)
        ratio = busy / idle
        verdict = "met" if ratio < GOAL_RATIO else "NOT met"
        print(f"{method}: p95 busy/idle = {ratio:.3f} (goal < {GOAL_RATIO:.2f}: {verdict})")


def standin_sells(standin: Any, keys: list[str]) -> int:
    with standin.lock:
        return sum(1 for k in keys for o in standin.accounts[k].orders.values() if o["side"] == "sell")


if __name__ == "__main__":
    main()
