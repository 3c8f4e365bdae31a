"""The dev stack's Alpaca wiring: the accounts file it writes for broker-gateway (the local
stand-in's account, or a real account's keys from the environment), and the stand-in
process itself, driven through broker-gateway's own Alpaca venue over real HTTP."""

from __future__ import annotations

import stat
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bsopt_broker.adapters.alpaca.accounts import load_accounts
from bsopt_broker.bootstrap import alpaca_venue
from bsopt_broker.domain.records import AccountKind, MarketOrder
from bsopt_cli import alpaca_dev
from bsopt_cli.stack import (
    ALPACA_ACCOUNT,
    ALPACA_KEY_ID_ENV,
    ALPACA_SECRET_ENV,
    STANDIN_KEY_ID,
    Ports,
    Stack,
    StackError,
)
from bsopt_common.testing.services import free_port
from bsopt_common.vocabulary import Side

OWNER = "2f0c6d4e-0000-4000-8000-000000000001"


@pytest.fixture
def no_alpaca_keys(monkeypatch):
    monkeypatch.delenv(ALPACA_KEY_ID_ENV, raising=False)
    monkeypatch.delenv(ALPACA_SECRET_ENV, raising=False)


def test_standin_accounts_file(tmp_path, no_alpaca_keys):
    stack = Stack(state_dir=tmp_path / "state", ports=Ports(alpaca=18090))
    path = stack.write_alpaca_accounts(OWNER, standin=True)
    accounts = load_accounts(path, environ={})
    cfg = accounts[ALPACA_ACCOUNT]
    assert cfg.owner == OWNER and cfg.broker == "alpaca"
    assert cfg.api_key_id.get_secret_value() == STANDIN_KEY_ID and STANDIN_KEY_ID.startswith("PK")
    assert cfg.api_secret_key.get_secret_value() == (path.parent / "standin-secret").read_text().strip()
    assert cfg.base_url == "http://127.0.0.1:18090"
    assert cfg.paper is None and cfg.min_balance_usd == Decimal(5000) and not cfg.allow_live
    for p in (path, path.parent / "standin-secret"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert cfg.api_secret_key.get_secret_value() not in path.read_text()  # the secret is in its own file


def test_real_keys_accounts_file(tmp_path, monkeypatch):
    monkeypatch.setenv(ALPACA_KEY_ID_ENV, "PKREALKEY00000000001")
    monkeypatch.setenv(ALPACA_SECRET_ENV, "real-secret")
    stack = Stack(state_dir=tmp_path / "state")
    assert stack.alpaca_keys_given()
    path = stack.write_alpaca_accounts(OWNER, standin=False)
    assert "real-secret" not in path.read_text() and "PKREALKEY" not in path.read_text()
    cfg = load_accounts(path)[ALPACA_ACCOUNT]
    assert cfg.api_key_id.get_secret_value() == "PKREALKEY00000000001"
    assert cfg.api_secret_key.get_secret_value() == "real-secret"
    assert cfg.base_url is None  # Alpaca itself


@pytest.mark.parametrize("only", [ALPACA_KEY_ID_ENV, ALPACA_SECRET_ENV])
def test_one_key_alone_is_an_error(monkeypatch, no_alpaca_keys, only):
    monkeypatch.setenv(only, "x")
    with pytest.raises(StackError, match="give both keys"):
        Stack.alpaca_keys_given()


def test_standin_process_serves_a_seeded_paper_account(tmp_path, monkeypatch, no_alpaca_keys):
    stack = Stack(state_dir=tmp_path / "state", ports=Ports(alpaca=free_port()))
    monkeypatch.setattr(Stack, "demo_user_id", staticmethod(lambda url: OWNER))
    try:
        stack._start_alpaca("postgresql://unused/bsopt", timeout_seconds=60)
        assert stack.alpaca_standin and stack.children[0].name == "alpaca-standin"
        accounts = load_accounts(stack.accounts_file)
        venue = alpaca_venue(accounts)
        assert venue is not None
        account = venue.get_account(ALPACA_ACCOUNT, OWNER)
        assert account.kind.value == "paper" and account.account_kind is AccountKind.PAPER
        assert account.account_number.startswith("PA")
        assert account.cash.amount == Decimal(100_000) and account.positions == ()
        now = datetime.now(UTC)
        past = venue.fills_between(ALPACA_ACCOUNT, OWNER, now - timedelta(days=30), now + timedelta(days=1))
        assert len(past) == len(alpaca_dev.PAST_FILLS) and {f.symbol for f in past} == {"GOOGL"}
        result = venue.submit_market_order(MarketOrder(
            account_id=ALPACA_ACCOUNT, user_id=OWNER, client_order_id=str(uuid.uuid4()), symbol="GOOGL",
            side=Side.BUY, quantity=10, as_of=now))
        assert [f.price.amount for f in result.fills] == [alpaca_dev.PRICES["GOOGL"]]
        assert result.account.cash.amount == Decimal(100_000) - 10 * alpaca_dev.PRICES["GOOGL"]
        after = venue.fills_between(ALPACA_ACCOUNT, OWNER, now - timedelta(days=30), now + timedelta(days=1))
        assert len(after) == len(past) + 1
        assert [f.trade_id for f in after[:len(past)]] == [f.trade_id for f in past]
    finally:
        stack.stop()
    assert stack.children == []


def test_past_fills_are_the_same_on_the_same_day():
    standin = alpaca_dev.load_standin_module().AlpacaStandin()
    today = datetime.now(UTC).date()
    ids = [a["id"] for a in alpaca_dev.past_fills(standin, STANDIN_KEY_ID, today)]
    assert ids == [a["id"] for a in alpaca_dev.past_fills(standin, STANDIN_KEY_ID, today)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_oauth_connect_works_offline_against_the_standin(tmp_path, monkeypatch, no_alpaca_keys):
    """Without Alpaca keys the stack gives broker-gateway an OAuth client at the stand-in:
    the authorization URL it builds is approved at once as the paper account, and the
    code exchanges for a token that reads that account (what POST /v1/brokers/alpaca/connect
    and the callback do)."""
    from urllib.parse import parse_qs, urlsplit

    import httpx
    from alpaca.trading.client import TradingClient

    from bsopt_broker.config import BrokerSettings
    from bsopt_broker.connections.oauth import AlpacaOAuthClient, new_code_verifier, new_state

    stack = Stack(state_dir=tmp_path / "state", ports=Ports(alpaca=free_port()))
    monkeypatch.setattr(Stack, "demo_user_id", staticmethod(lambda url: OWNER))
    broker_env: dict[str, str] = {}
    try:
        stack._start_alpaca("postgresql://unused/bsopt", timeout_seconds=60, broker_env=broker_env)
        for name, value in broker_env.items():
            monkeypatch.setenv(name, value)
        settings = BrokerSettings(environment="dev")
        assert settings.alpaca_oauth_redirect_uri == stack.api_url + "/v1/brokers/alpaca/callback"
        secret = settings.alpaca_oauth_client_secret
        oauth = AlpacaOAuthClient(
            client_id=settings.alpaca_oauth_client_id, client_secret=secret.get_secret_value() if secret else None,
            authorize_url=settings.alpaca_oauth_authorize_url, token_url=settings.alpaca_oauth_token_url,
            redirect_uri=settings.alpaca_oauth_redirect_uri, scope=settings.alpaca_oauth_scope)
        state, verifier = new_state(), new_code_verifier()
        approved = httpx.get(oauth.authorization_url(state, verifier), follow_redirects=False)
        assert approved.status_code == 302, approved.text
        back = urlsplit(approved.headers["location"])
        query = {k: v[0] for k, v in parse_qs(back.query).items()}
        assert f"{back.scheme}://{back.netloc}{back.path}" == settings.alpaca_oauth_redirect_uri
        assert query["state"] == state
        token = oauth.exchange(query["code"], verifier, settings.alpaca_oauth_redirect_uri)
        client = TradingClient(oauth_token=token.access_token, paper=True,
                               url_override=settings.alpaca_trading_base_url)
        assert str(client.get_account().account_number).startswith("PA")
    finally:
        stack.stop()


@pytest.mark.parametrize("offset", range(7))
def test_past_fills_fall_on_trading_days_whatever_today_is(offset):
    """A fill dated on a weekend would find no daily bar in ml-scorer (dead-lettered)."""
    standin = alpaca_dev.load_standin_module().AlpacaStandin()
    today = datetime(2026, 11, 30, tzinfo=UTC).date() + timedelta(days=offset)
    fills = alpaca_dev.past_fills(standin, STANDIN_KEY_ID, today)
    days = [datetime.fromisoformat(f["transaction_time"].replace("Z", "+00:00")).date() for f in fills]
    assert all(d.weekday() < 5 for d in days), days
    assert days == sorted(days) and len(set(days)) == len(days)
