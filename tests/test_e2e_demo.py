"""The main job end to end, as ``make demo`` runs it, at a small training budget.

Six services run as separate processes (the same supervisor as ``make up``) on free
loopback ports, against this test session's Postgres and Kafka-protocol broker. The demo
logs in with code + PKCE through the real login form and drives both journeys through
resource-api. Assertions check what a user would see, against numbers recomputed here
from the same real bars.
"""

from __future__ import annotations

import asyncio
import json
import math
from datetime import date, datetime
from decimal import Decimal

import grpc
import httpx
import pytest

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as bpb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as bpb_grpc
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as spb
from bsopt.ml_scorer.v1 import ml_scorer_pb2_grpc as spb_grpc
from bsopt.rl_trainer.v1 import rl_trainer_pb2 as tpb
from bsopt.rl_trainer.v1 import rl_trainer_pb2_grpc as tpb_grpc
from bsopt_cli.alpaca_dev import PAST_FILLS
from bsopt_cli.demo import DemoOptions, run_demo
from bsopt_cli.stack import ALPACA_ACCOUNT, ALPACA_KEY_ID_ENV, ALPACA_SECRET_ENV, DEMO_USER, Ports, Stack
from bsopt_common.marketdata import EXCHANGE_TZ, bundled_provider
from bsopt_common.security.event_signing import load_signing_key
from bsopt_common.security.token_provider import ClientCredentialsTokenProvider
from bsopt_common.testing.services import free_port

pytestmark = pytest.mark.e2e
# Budget and seed at which the briefly trained agent changes position on the test dates
# (asserted below); smaller budgets gave an always-flat or always-long policy.
TIMESTEPS = 4096


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres_url, kafka_bootstrap):
    ports = Ports(auth=free_port(), api=free_port(), broker=free_port(), scorer=free_port(), trainer=free_port(),
                  digest=free_port(), alpaca=free_port())
    with pytest.MonkeyPatch.context() as mp:  # the local Alpaca stand-in, whatever this shell holds
        mp.delenv(ALPACA_KEY_ID_ENV, raising=False)
        mp.delenv(ALPACA_SECRET_ENV, raising=False)
        s = Stack(state_dir=tmp_path_factory.mktemp("stack"), ports=ports, database_url=postgres_url,
                  kafka_bootstrap=kafka_bootstrap)
        s.start(timeout_seconds=180)
    try:
        yield s
    finally:
        s.stop()
        for child_log in sorted((s.state_dir / "logs").glob("*.log")):
            text = child_log.read_text(errors="replace")
            if "Traceback" in text:
                print(f"--- {child_log.name} ---\n{text[-4000:]}")


@pytest.fixture(scope="module")
def summary(stack, tmp_path_factory):
    report_dir = tmp_path_factory.mktemp("report")
    opts = DemoOptions(issuer=stack.issuer, api_url=stack.api_url, username=DEMO_USER[0], password=DEMO_USER[1],
                       total_timesteps=TIMESTEPS, report_dir=report_dir, timeout_seconds=600,
                       alpaca_account=ALPACA_ACCOUNT)
    result = asyncio.run(run_demo(opts, log=print))
    assert json.loads((report_dir / "summary.json").read_text()) == result
    return result


def test_login_and_data_split(summary, stack):
    assert summary["auth"]["issuer"] == stack.issuer
    assert summary["auth"]["pkce_login"] is True
    d = summary["data"]
    assert d["symbol"] == "GOOGL"
    assert date.fromisoformat(d["train_end"]) < date.fromisoformat(d["test_start"])
    bars = bundled_provider().fetch_history("GOOGL")
    gap = bars.loc[d["train_end"]:d["test_start"]].iloc[1:-1]
    assert len(gap) >= 16  # at least one window between train and test: no overlap


def test_training_results_are_measured(summary):
    t = summary["training"]
    assert t["status"] == "succeeded"
    assert t["model"] == "ppo-transformer"
    assert t["window"] == 16
    assert 0 < t["timesteps"] <= TIMESTEPS
    assert t["seconds"] > 0
    for name in ("agent", "mlp_baseline", "buy_and_hold"):
        m = t["test"][name]
        assert all(math.isfinite(m[k]) for k in ("total_return", "max_drawdown"))
        # an undefined Sharpe ratio (no variance: a policy that never trades) is null with a reason
        assert (m["sharpe"] is None) == bool(m["sharpe_undefined_reason"])
        assert m["sharpe"] is None or math.isfinite(m["sharpe"])
        assert 0 <= m["max_drawdown"] < 1
    # buy-and-hold over the test decisions, recomputed from the raw bars: it must be the
    # real GOOGL move of 2017-01 .. 2018-08 less one entry cost, not a typed-in number
    bars = bundled_provider().fetch_history("GOOGL", date(2017, 1, 3), date(2018, 8, 29))
    raw = bars["close"].iloc[-1] / bars["close"].iloc[0] - 1
    assert t["test"]["buy_and_hold"]["total_return"] == pytest.approx(raw, abs=0.01)
    assert t["test"]["buy_and_hold"]["trades"] == 1


def test_paper_trading_import_and_dedupe(summary):
    p, imp = summary["paper_trading"], summary["import"]
    assert p["fills"] == p["orders"] - p["rejected"]
    assert p["final_equity"]["currency"] == "USD" and Decimal(p["final_equity"]["amount"]) > 0
    assert imp["trades_imported"] == p["fills"]
    assert imp["duplicates_skipped"] == imp["trades_imported"]
    assert imp["second_import_trades_imported"] == 0


def test_alpaca_account_traded_and_imported(summary, stack):
    """The dev stack's Alpaca account at the local stand-in: a paper account (PK key id, PA
    account number), traded by the same agent through broker-gateway's Alpaca venue, and
    its fills of the last 30 days (the stand-in's past ones and this run's) imported once."""
    assert stack.alpaca_standin
    a = summary["alpaca"]
    assert a["account_id"] == ALPACA_ACCOUNT and a["broker"] == "alpaca" and a["account_kind"] == "paper"
    assert a["orders"] > 0 and a["fills"] == a["orders"] - a["rejected"]
    assert a["fills_imported"] == len(PAST_FILLS) + a["fills"]  # a fresh database: nothing imported before
    assert a["duplicates_skipped"] == a["fills_imported"]
    assert a["second_import_fills_imported"] == 0
    assert Decimal(a["cash_before"]["amount"]) == 100_000


def test_every_trade_tagged_pushed_and_digested(summary):
    n = summary["import"]["trades_imported"]
    assert sum(summary["bias"].values()) == n
    assert summary["events"]["ws_messages"] == n
    assert n > 0, "the agent placed no orders; the trader journey was not exercised"
    if n:
        dg = summary["digest"]
        assert date.fromisoformat(dg["period_end"]) - date.fromisoformat(dg["period_start"]) == \
            date(2017, 1, 8) - date(2017, 1, 2)
        assert dg["trades"] >= 1


def _provider(stack, client: str) -> ClientCredentialsTokenProvider:
    """``client``'s own credentials in the running stack: its key pair (private_key_jwt)."""
    key = load_signing_key((stack.keys_dir / f"{client}.jwk").read_text())
    return ClientCredentialsTokenProvider(stack.issuer + "/oauth2/token", client, signing_key=key)


def _token(stack, client: str, resource: str, scope: str) -> str:
    """A client-credentials token of ``client`` from the real auth-server."""
    async def fetch() -> str:
        provider = _provider(stack, client)
        try:
            return await provider.token(resource, scope)
        finally:
            await provider.aclose()

    return asyncio.run(fetch())


@pytest.mark.parametrize("target", ["broker", "scorer", "trainer"])
def test_grpc_services_refuse_tokens_for_another_audience(stack, summary, target):
    """A real token from the real auth-server, valid for broker-gateway, is refused by
    ml-scorer and rl-trainer (and the converse); no token is refused everywhere."""
    port = getattr(stack.ports, target)
    broker_token = _token(stack, "resource-api", "urn:bsopt:broker-gateway", "broker:accounts")
    scorer_token = _token(stack, "resource-api", "urn:bsopt:ml-scorer", "scorer:read")
    calls = {
        "broker": (lambda ch: bpb_grpc.BrokerGatewayServiceStub(ch).GetAccount,
                   bpb.GetAccountRequest(account_id="x"), scorer_token),
        "scorer": (lambda ch: spb_grpc.MlScorerServiceStub(ch).ListScoredTrades,
                   spb.ListScoredTradesRequest(), broker_token),
        "trainer": (lambda ch: tpb_grpc.RlTrainerServiceStub(ch).GetTrainingJob,
                    tpb.GetTrainingJobRequest(job_id="x"), broker_token),
    }
    method, request, wrong = calls[target]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        for metadata in ((), (("authorization", f"Bearer {wrong}"),)):
            with pytest.raises(grpc.RpcError) as err:
                method(ch)(request, metadata=metadata, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_resource_api_refuses_a_service_token(stack, summary):
    tok = _token(stack, "resource-api", "urn:bsopt:broker-gateway", "broker:accounts")
    assert httpx.get(stack.api_url + "/v1/me", headers={"authorization": f"Bearer {tok}"}).status_code == 401
    assert httpx.get(stack.api_url + "/v1/me").status_code == 401


def test_a_services_own_token_reads_no_users_account(stack, summary):
    """The audit's attack on the running stack (issue 6 §2): rl-trainer's real
    client-credentials token (aud broker-gateway, scope broker:accounts) asked GetAccount
    for the demo user's account, naming the user in a request field, and got their cash
    and positions. Now the field is gone from the contract (an unknown field on the wire)
    and broker-gateway takes the user only from a delegated token."""
    account_id = summary["paper_trading"]["account_id"]
    token = _token(stack, "rl-trainer", "urn:bsopt:broker-gateway", "broker:accounts")
    request = bpb.GetAccountRequest(account_id=account_id).SerializeToString() + b"\x12\x04demo"  # field 2: "demo"
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.broker}") as ch:
        get_account = ch.unary_unary("/bsopt.broker_gateway.v1.BrokerGatewayService/GetAccount")
        with pytest.raises(grpc.RpcError) as err:
            get_account(request, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_alpaca_orders_listed_with_timing_and_closed_by_the_sell_module(summary):
    """The agent's orders are listed with their stored timing; the user's sell rules and
    close-all go through resource-api with a token the real auth-server exchanged
    (broker:sells from trades:write), and the sell module sells every position."""
    a = summary["alpaca"]
    assert a["orders_with_timing"] == a["orders"] > 0
    assert a["orders_listed"] >= a["orders"]
    c = a["close_all"]
    assert c["status"] == "done" and c["positions_refused"] == 0
    assert c["positions_sold"] == c["positions_held"] and c["positions_after"] == 0


def test_alpaca_fills_scored_on_alpacas_bars(summary):
    """ml-scorer scores the imported Alpaca fills on the stand-in's daily bars (the bundled
    bars end in 2018): every past fill (the stand-in dates them on trading days) and this
    run's fills when today is a weekday in New York (a fill belongs to the bar of its New
    York trading day; a weekend has no daily bar)."""
    a = summary["alpaca"]
    today = datetime.now(EXCHANGE_TZ).date()
    expected = len(PAST_FILLS) + (a["fills"] if today.weekday() < 5 else 0)
    assert a["fills_scored"] == expected > 0
    assert sum(a["scored_bias"].values()) == a["fills_scored"]
