"""The main job, end to end on real market data (``make demo``).

Logs in as the demo user exactly as the CLI does (code + PKCE over real HTTP), then, all
through resource-api with that user's token:

* researcher journey: submit a training job (PPO + Transformer over 16-bar windows on
  GOOGL daily bars, train before 2017, test 2017-01 .. 2018-08) and wait for its honest
  evaluation against an MLP-extractor PPO and buy-and-hold;
* trader journey: open a paper account, let the trained agent paper-trade the test
  period through broker-gateway, import the fills (twice: the second import must skip
  every trade), wait for each trade's bias tag and its ``coach.reflect`` WebSocket push,
  and read the latest weekly digest;
* Alpaca (when ``alpaca_account`` is given: the dev stack's account at its local
  stand-in): read the account (its ``account_kind``), let the same agent trade it (the
  orders go through broker-gateway's Alpaca venue: balance check, then Alpaca's order
  API), import its fills of the last 30 days, and import again (every fill skipped);
  then wait for ml-scorer to score them on Alpaca's daily bars (the stand-in's) and report
  ``alpaca.fills_scored``. The paper journey's figures (trades, bias tags, coach pushes)
  are counted before and never include these fills.

Every number in the report comes from the run. The report is printed and written to
``demo-report/summary.json``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
from websockets.asyncio.client import connect as ws_connect

from bsopt_cli.dpop import DPoPAuth, DPoPKey
from bsopt_cli.login import login

SYMBOL = "GOOGL"
TRAIN_START = date(2009, 5, 22)
TRAIN_END = date(2016, 11, 30)
TEST_START = date(2017, 1, 3)
TEST_END = date(2018, 8, 29)
WINDOW = 16


class DemoError(RuntimeError):
    """A step of the demo failed; the message names the step."""


@dataclass
class DemoOptions:
    issuer: str
    api_url: str
    username: str
    password: str
    total_timesteps: int = 131_072
    seed: int = 0
    transaction_cost_bps: float = 10.0
    initial_cash: str = "100000"
    """Starting cash of the paper account, USD (a decimal string: money is never a float)."""
    report_dir: Path = Path("demo-report")
    train_start: date = TRAIN_START
    train_end: date = TRAIN_END
    test_start: date = TEST_START
    test_end: date = TEST_END
    timeout_seconds: float = 900.0
    alpaca_account: str | None = None
    """An Alpaca account of broker-gateway's accounts file to trade and import (the dev
    stack's at its local stand-in); None: the Alpaca journey is skipped."""


def _check(resp: httpx.Response, step: str) -> dict:
    if resp.status_code >= 400:
        raise DemoError(f"{step}: HTTP {resp.status_code} {resp.text[:500]}")
    return resp.json()


async def _poll(fetch, done, step: str, timeout_seconds: float, interval: float = 0.5, on_poll=None):
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = await fetch()
        if on_poll:
            on_poll(value)
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise DemoError(f"{step}: not done after {timeout_seconds:.0f}s (last: {str(value)[:300]})")
        await asyncio.sleep(interval)


async def run_demo(opts: DemoOptions, log=print) -> dict:
    t0 = time.monotonic()
    key = DPoPKey.generate()  # RFC 9449: the demo's tokens are bound to this in-memory key
    tokens = await asyncio.to_thread(login, opts.issuer, username=opts.username, password=opts.password,
                                     dpop_key=key)
    dpop = tokens.token_type.lower() == "dpop"
    auth = DPoPAuth(key, tokens.access_token)
    bearer = {"authorization": f"Bearer {tokens.access_token}"}
    async with httpx.AsyncClient(base_url=opts.api_url, auth=auth if dpop else None, headers=None if dpop else bearer,
                                 timeout=60.0) as api:
        me = _check(await api.get("/v1/me"), "GET /v1/me")
        log(f"logged in with code + PKCE as {opts.username} (sub {me['sub']}), scopes: {' '.join(me['scopes'])}")

        # --- researcher journey -------------------------------------------------------
        spec = {
            "symbol": SYMBOL, "train_start": opts.train_start.isoformat(), "train_end": opts.train_end.isoformat(),
            "test_start": opts.test_start.isoformat(), "test_end": opts.test_end.isoformat(),
            "window_size": WINDOW, "total_timesteps": opts.total_timesteps,
            "transaction_cost_bps": opts.transaction_cost_bps, "seed": opts.seed,
        }
        job = _check(await api.post("/v1/training-jobs", json=spec), "POST /v1/training-jobs")
        job_id = job["job_id"]
        log(f"training job {job_id} submitted: {opts.total_timesteps} timesteps per model")
        last = {"p": -1.0}

        def show(j: dict) -> None:
            p = round(float(j.get("progress") or 0.0), 1)
            if p != last["p"]:
                last["p"] = p
                log(f"  training {j['status']} {100 * float(j.get('progress') or 0):.0f}%")

        job = await _poll(lambda: _get_json(api, f"/v1/training-jobs/{job_id}"),
                          lambda j: j["status"] in ("succeeded", "failed"), "training", opts.timeout_seconds,
                          interval=1.0, on_poll=show)
        if job["status"] != "succeeded":
            raise DemoError(f"training failed: {job.get('error')}")
        results = job["results"]

        # --- trader journey -----------------------------------------------------------
        account = _check(await api.post("/v1/accounts", json={"broker": "paper", "initial_cash": {
                                                    "amount": opts.initial_cash, "currency": "USD"}}),
                         "POST /v1/accounts")
        account_id = account["account_id"]
        ws_messages: list[dict] = []
        ws_url = opts.api_url.replace("http", "ws", 1) + "/v1/ws/coach"
        ws_headers = auth.headers_for("GET", opts.api_url.rstrip("/") + "/v1/ws/coach") if dpop else bearer
        async with ws_connect(ws_url, additional_headers=ws_headers) as ws:
            reader = asyncio.create_task(_read_ws(ws, ws_messages))
            paper = _check(await api.post(f"/v1/training-jobs/{job_id}/paper-trading",
                                          json={"account_id": account_id}, timeout=600.0),
                           "POST paper-trading")
            log(f"paper trading: {paper['orders']} orders, {paper['fills']} fills, "
                f"final equity {Decimal(paper['final_equity']['amount']):,.2f} {paper['final_equity']['currency']}")
            window = {"start": opts.test_start.isoformat(), "end": (opts.test_end + timedelta(days=1)).isoformat()}
            first = _check(await api.post(f"/v1/accounts/{account_id}/imports", json=window), "first import")
            second = _check(await api.post(f"/v1/accounts/{account_id}/imports", json=window), "second import")
            log(f"import: {first['trades_imported']} trades imported; re-import skipped "
                f"{second['duplicates_skipped']} duplicates, imported {second['trades_imported']}")
            expected = first["trades_imported"]
            # this run's paper account only: a reused stack holds earlier runs' trades, and
            # the Alpaca fills are scored too (counted in alpaca.fills_scored)
            trades = await _poll(lambda: _account_trades(api, account_id), lambda t: len(t) >= expected,
                                 "scoring", 180.0) if expected else []
            await _poll(_const(ws_messages), lambda m: len(m) >= expected, "coach.reflect pushes", 120.0)
            reader.cancel()
        last_week = max(t["executed_at"] for t in trades)[:10] if trades else None

        async def latest_digest():
            resp = await api.get("/v1/digests/latest")
            return resp.json() if resp.status_code == 200 else None

        if trades:
            digest = await _poll(latest_digest, lambda d: d is not None and d["period_end"] >= last_week,
                                 "weekly digest", 120.0)
        else:
            log("the agent placed no orders on the test dates: nothing to import, tag or digest")
            digest = {"period_start": None, "period_end": None, "trades": 0, "label_counts": {}, "summary": ""}

        if opts.alpaca_account:
            alpaca = await _alpaca_journey(api, opts.alpaca_account, job_id, log)
        else:
            alpaca = {"skipped": "no Alpaca account given: the demo trades the dev stack's local stand-in only, "
                                  "never a real account"}

    bias = Counter(t["label"] for t in trades)
    summary = {
        "auth": {"issuer": opts.issuer, "pkce_login": True, "subject": me["sub"]},
        "data": {"symbol": SYMBOL, "source": "gym-anytrading STOCKS_GOOGL.csv (daily bars)",
                 "train_start": opts.train_start.isoformat(), "train_end": opts.train_end.isoformat(),
                 "test_start": opts.test_start.isoformat(), "test_end": opts.test_end.isoformat()},
        "training": {
            "job_id": job_id, "status": job["status"], "model": results["model"], "window": results["window"],
            "timesteps": results["timesteps"], "seconds": results["seconds"],
            "transaction_cost_bps": opts.transaction_cost_bps, "seed": opts.seed,
            "test": {k: results[k] for k in ("agent", "mlp_baseline", "buy_and_hold")},
        },
        "paper_trading": {"account_id": account_id, **paper},
        "import": {"trades_imported": first["trades_imported"], "duplicates_skipped": second["duplicates_skipped"],
                   "second_import_trades_imported": second["trades_imported"]},
        "bias": {label: bias.get(label, 0) for label in ("FOMO", "PANIC", "DISCIPLINE", "NONE")},
        "digest": {"period_start": digest["period_start"], "period_end": digest["period_end"],
                   "trades": digest["trades"], "label_counts": digest.get("label_counts", {}),
                   "summary": digest.get("summary", "")},
        "events": {"ws_messages": len(ws_messages)},
        "alpaca": alpaca,
        "elapsed_seconds": round(time.monotonic() - t0, 1),
    }
    opts.report_dir.mkdir(parents=True, exist_ok=True)
    (opts.report_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


async def _alpaca_journey(api: httpx.AsyncClient, name: str, job_id: str, log) -> dict:
    """The trader journey on an Alpaca account, all through resource-api: the account, the
    agent's orders on it (paper trading through rl-trainer: no user scope places orders
    directly), its fills of the last 30 whole days imported twice."""
    path = f"/v1/accounts/{name}"
    before = _check(await api.get(path), f"GET {path}")
    log(f"alpaca account {name}: {before['account_kind']}, cash {_usd(before['cash'])}")
    run = _check(await api.post(f"/v1/training-jobs/{job_id}/paper-trading", json={"account_id": name},
                                timeout=600.0), "POST paper-trading (alpaca)")
    after = _check(await api.get(path), f"GET {path}")
    log(f"alpaca orders: {run['orders']} orders, {run['fills']} fills, {run['rejected']} rejected; "
        f"cash now {_usd(after['cash'])}")
    today = datetime.now(UTC).date()
    window = {"start": (today - timedelta(days=30)).isoformat(), "end": (today + timedelta(days=1)).isoformat()}
    scored_before = {t["trade_id"] for t in await _account_trades(api, name)}  # a reused stack: earlier runs'
    first = _check(await api.post(f"{path}/imports", json=window), "first alpaca import")
    second = _check(await api.post(f"{path}/imports", json=window), "second alpaca import")
    log(f"alpaca import {window['start']} .. {window['end']}: {first['trades_imported']} fills imported; "
        f"re-import skipped {second['duplicates_skipped']} duplicates, imported {second['trades_imported']}")
    scored = await _alpaca_scored(api, name, scored_before, first["trades_imported"], ALPACA_SCORING_SECONDS)
    log(f"alpaca fills scored on Alpaca's daily bars: {len(scored)} of {first['trades_imported']}"
        + ("" if len(scored) >= first["trades_imported"] else
           " (the rest have no daily bar: a weekend or holiday fill is dead-lettered by ml-scorer)"))
    orders = await _all_pages(api, f"{path}/orders", "orders")
    timed = [o for o in orders if o["timing"] is not None]
    log(f"alpaca orders listed: {len(orders)}, {len(timed)} placed through bsopt with their timing"
        + (f" (median received -> filled {_median([o['timing']['filled_ms'] for o in timed]):.1f} ms)"
           if timed else ""))
    # the sell module, set by the user through the API: rules, then close every position
    holding = _check(await api.get(path), f"GET {path}")["positions"]
    rules = _check(await api.put(f"{path}/sell-rules", json={"stop_loss_pct": 50, "take_profit_pct": 1000}),
                   "PUT sell-rules")
    accepted = await api.post(f"{path}:close-all-positions")
    close_all = _check(accepted, "POST close-all-positions")
    status = await _poll(lambda: _get_json(api, accepted.headers["location"]),
                         lambda r: r["status"] in ("done", "failed"), "close-all", 120.0)
    log(f"alpaca sell module: rules stop-loss {rules['stop_loss_pct']} % / take-profit {rules['take_profit_pct']} %;"
        f" close-all {close_all['request_id'][:8]}: {status['status']}, {status['positions_sold']} positions sold, "
        f"{status['positions_refused']} refused")
    return {"account_id": name, "broker": before["broker"], "account_kind": before["account_kind"],
            "cash_before": before["cash"], "cash_after": after["cash"],
            "orders": run["orders"], "fills": run["fills"], "rejected": run["rejected"],
            "import_window": window, "fills_imported": first["trades_imported"],
            "duplicates_skipped": second["duplicates_skipped"],
            "second_import_fills_imported": second["trades_imported"],
            "fills_scored": len(scored),
            "scored_bias": dict(sorted(Counter(t["label"] for t in scored).items())),
            "orders_listed": len(orders), "orders_with_timing": len(timed),
            "close_all": {"positions_held": len(holding), "status": status["status"],
                          "positions_sold": status["positions_sold"],
                          "positions_refused": status["positions_refused"],
                          "positions_after": len(_check(await api.get(path), f"GET {path}")["positions"])}}


async def _all_pages(api: httpx.AsyncClient, path: str, field: str) -> list[dict]:
    items: list[dict] = []
    token = None
    for _ in range(100):
        page = _check(await api.get(path, params={"page_size": 500, **({"page_token": token} if token else {})}),
                      f"GET {path}")
        items.extend(page[field])
        token = page["next_page_token"]
        if token is None:
            break
    return items


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


#: How long the demo waits for ml-scorer to score the imported Alpaca fills, seconds.
ALPACA_SCORING_SECONDS = 60.0


async def _account_trades(api: httpx.AsyncClient, account: str) -> list[dict]:
    return [t for t in await _get_json(api, "/v1/trades?limit=500") if t["account_id"] == account]


async def _alpaca_scored(api: httpx.AsyncClient, account: str, before: set[str], expected: int,
                         timeout: float) -> list[dict]:
    """The trades of ``account`` scored since ``before`` (trade ids), once ``expected`` of
    them are, or what is after ``timeout`` seconds (a fill without a daily bar is never scored)."""
    deadline = time.monotonic() + timeout
    while True:
        trades = [t for t in await _account_trades(api, account) if t["trade_id"] not in before]
        if len(trades) >= expected or time.monotonic() >= deadline:
            return trades
        await asyncio.sleep(0.5)


def _usd(money: dict) -> str:
    return f"{Decimal(money['amount']):,.2f} {money['currency']}"


def _const(value):
    async def get():
        return value
    return get


async def _get_json(api: httpx.AsyncClient, path: str):
    return _check(await api.get(path), f"GET {path}")


async def _read_ws(ws, sink: list[dict]) -> None:
    async for raw in ws:
        msg = json.loads(raw)
        if msg.get("type") == "coach.reflect":
            sink.append(msg)
