"""The local stand-in of Alpaca's API as a process of the dev stack (``make up`` / ``make demo``).

``python -m bsopt_cli.alpaca_dev --port 8090`` serves the tests' ``AlpacaStandin``
(``services/broker-gateway/tests/alpaca_standin.py``, loaded by path from the source
checkout: dev only, it ships in no wheel) on 127.0.0.1 with one paper account: key id and
secret from ``BSOPT_ALPACA_STANDIN_KEY_ID`` / ``BSOPT_ALPACA_STANDIN_SECRET``,
``--cash`` USD, and :data:`PAST_FILLS` (three GOOGL round trips in the last 30 days, so
the account is flat and its cash is as given). Past fills have ids derived from the key id
and their times (whole days before today), so restarting on the same day serves the same
trade ids and an import skips the ones imported before. Prices (latest trades, fills):
:data:`PRICES`. In memory only: orders placed are gone when the process stops.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

#: The stand-in's source, in the checkout this CLI runs from (an editable install).
STANDIN_FILE = Path(__file__).resolve().parents[4] / "services" / "broker-gateway" / "tests" / "alpaca_standin.py"
KEY_ID_ENV = "BSOPT_ALPACA_STANDIN_KEY_ID"
SECRET_ENV = "BSOPT_ALPACA_STANDIN_SECRET"
#: bsopt's OAuth client at the stand-in (the dev stack gives broker-gateway the same three).
OAUTH_CLIENT_ID_ENV = "BSOPT_ALPACA_STANDIN_OAUTH_CLIENT_ID"
OAUTH_CLIENT_SECRET_ENV = "BSOPT_ALPACA_STANDIN_OAUTH_CLIENT_SECRET"
OAUTH_REDIRECT_URI_ENV = "BSOPT_ALPACA_STANDIN_OAUTH_REDIRECT_URI"
#: Latest-trade and fill prices, USD. GOOGL stays below the bundled 2017-2018 closes the
#: demo's agent sizes its buys with, so its orders pass the $5,000 minimum balance.
PRICES = {"GOOGL": Decimal("750.00"), "AAPL": Decimal("100.00")}
#: (days before today, side, quantity, price) of the seeded fills, at 15:30 UTC.
PAST_FILLS = ((26, "buy", 10, "742.10"), (22, "sell", 10, "761.35"), (18, "buy", 12, "748.00"),
              (14, "sell", 12, "739.90"), (10, "buy", 8, "752.40"), (6, "sell", 8, "757.05"))
_NAMESPACE = uuid.UUID("0b6f3f38-5c1e-4d0e-9a0c-7d2a4e7a1f55")


class StandinUnavailable(RuntimeError):
    """The stand-in's source is not here (an installed CLI, not a source checkout)."""


def load_standin_module() -> ModuleType:
    """The stand-in module, loaded from :data:`STANDIN_FILE`."""
    name = "bsopt_cli_alpaca_standin"
    if name in sys.modules:
        return sys.modules[name]
    if not STANDIN_FILE.is_file():
        raise StandinUnavailable(f"the local Alpaca stand-in ({STANDIN_FILE}) exists only in a source checkout; "
                                 "set BSOPT_ALPACA_API_KEY_ID and BSOPT_ALPACA_API_SECRET_KEY to use a real "
                                 "Alpaca paper account instead")
    spec = importlib.util.spec_from_file_location(name, STANDIN_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def past_fills(standin: Any, key_id: str, today: date) -> list[dict[str, Any]]:
    """:data:`PAST_FILLS` as Alpaca FILL activities, oldest first, with deterministic ids;
    a fill whose day falls on a weekend is moved to that week's Friday (markets are shut,
    and ml-scorer finds no daily bar to score it on)."""
    made = []
    for days, side, qty, price in PAST_FILLS:
        day = today - timedelta(days=days)
        day -= timedelta(days=max(0, day.weekday() - 4))  # a weekend day: that week's Friday (a trading day)
        at = datetime.combine(day, time(15, 30), UTC)
        order_id = str(uuid.uuid5(_NAMESPACE, f"{key_id}/order/{at.isoformat()}"))
        activity = standin.fill_activity(order_id, "GOOGL", side, qty, Decimal(price), at, cum_qty=qty,
                                         order_qty=qty)
        activity["id"] = f"{at:%Y%m%d%H%M%S}000::{uuid.uuid5(_NAMESPACE, f'{key_id}/fill/{at.isoformat()}')}"
        made.append(activity)
    return made


def build(key_id: str, secret: str, cash: Decimal, port: int, today: date | None = None) -> Any:
    """An ``AlpacaStandin`` on ``port`` with the one seeded paper account."""
    standin = load_standin_module().AlpacaStandin(prices=PRICES)
    standin.port, standin.base_url = port, f"http://127.0.0.1:{port}"
    account = standin.add_account(key_id, secret, cash=cash)
    account.activities.extend(past_fills(standin, key_id, today or datetime.now(UTC).date()))
    return standin


def configure_oauth(standin: Any, key_id: str, environ: Mapping[str, str]) -> bool:
    """Register bsopt's OAuth client from ``environ`` (the three ``*_OAUTH_*`` variables),
    approving every authorization at once as the paper account ``key_id`` (no Alpaca login
    page to click through offline). False, and nothing registered, when they are not all set."""
    client_id, secret, redirect_uri = (environ.get(OAUTH_CLIENT_ID_ENV, ""), environ.get(OAUTH_CLIENT_SECRET_ENV, ""),
                                       environ.get(OAUTH_REDIRECT_URI_ENV, ""))
    if not (client_id and secret and redirect_uri):
        return False
    standin.oauth.add_client(client_id, secret, redirect_uri)
    standin.oauth.approve_as = key_id
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bsopt_cli.alpaca_dev", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--cash", type=Decimal, default=Decimal(100_000))
    args = parser.parse_args(argv)
    key_id, secret = os.environ.get(KEY_ID_ENV, ""), os.environ.get(SECRET_ENV, "")
    if not key_id or not secret:
        print(f"{KEY_ID_ENV} and {SECRET_ENV} must be set", file=sys.stderr)
        raise SystemExit(2)
    from bsopt_common.http_server import serve_asgi
    from bsopt_common.runtime import run_until_signalled
    from bsopt_common.telemetry import setup_logging

    setup_logging("alpaca-standin", environment="dev")
    try:
        standin = build(key_id, secret, args.cash, args.port)
    except StandinUnavailable as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    configure_oauth(standin, key_id, os.environ)
    run_until_signalled(lambda stop: serve_asgi(standin.app, stop, host="127.0.0.1", port=args.port,
                                                grace_seconds=1.0))


if __name__ == "__main__":
    main()
