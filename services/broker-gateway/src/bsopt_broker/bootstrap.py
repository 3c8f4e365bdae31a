"""Wire broker-gateway from settings: the runtime (database + migrations, token
verifier, outbox relay to Kafka), the venues (the paper broker, and the Alpaca accounts
of the accounts file behind a :class:`~bsopt_broker.adapters.router.VenueRouter`), the
trade importer, and gRPC.

The accounts file (``BSOPT_BROKER_ACCOUNTS_FILE``) is read before anything starts: a
malformed file or a missing secret raises
:class:`~bsopt_broker.adapters.alpaca.accounts.AccountsFileError` naming the entry and
the field, and the service does not start. While serving, SIGHUP (or
:meth:`BrokerGateway.reload_accounts`) reads it again: a valid file replaces the Alpaca
pool atomically, an invalid one is logged and the accounts in use stay.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Mapping
from typing import Any

from bsopt_broker import models
from bsopt_broker.adapters.alpaca.accounts import AccountsFileError, AlpacaAccountConfig, load_accounts
from bsopt_broker.adapters.alpaca.broker import AlpacaBroker
from bsopt_broker.adapters.alpaca.prices import LatestTradePrices
from bsopt_broker.adapters.paper import PaperBroker
from bsopt_broker.adapters.router import ALPACA, VenueRouter, VenueView
from bsopt_broker.config import BrokerSettings
from bsopt_broker.connections.service import ConnectedAccounts, ConnectionService
from bsopt_broker.connections.store import ConnectionStore
from bsopt_broker.import_jobs import ImportJobs
from bsopt_broker.order_journal import OrderJournal
from bsopt_broker.sell import SellModule
from bsopt_broker.servicer import BrokerGatewayServicer, grpc_service
from bsopt_broker.trade_import import TradeImporter
from bsopt_common.grpc_server import serve_grpc
from bsopt_common.marketdata import MarketDataProvider, bundled_provider
from bsopt_common.service import ServiceRuntime
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE

log = logging.getLogger("bsopt_broker.bootstrap")


def alpaca_venue(accounts: Mapping[str, AlpacaAccountConfig], **options: Any) -> AlpacaBroker | None:
    """The Alpaca venue over ``accounts`` (prices: the latest trade from Alpaca's market
    data); None for no accounts. ``options``: AlpacaBroker's keyword arguments
    (:meth:`BrokerSettings.alpaca_options`). Creates no connection: clients are made on first use."""
    prices = LatestTradePrices.from_accounts(accounts)
    return None if prices is None else AlpacaBroker(accounts, prices, **options)


class BrokerGateway:
    """One broker-gateway process: :meth:`run` serves until ``stop`` is set.

    Raises AccountsFileError at construction for a malformed accounts file.
    """

    def __init__(self, settings: BrokerSettings, market_data: MarketDataProvider | None = None):
        self.settings = settings
        self.market_data = market_data
        self._reload_lock = threading.Lock()
        # The key of the stored broker credentials: a bad or dev-only key stops start-up here.
        self._cipher = settings.credentials_cipher()
        accounts = load_accounts(settings.accounts_file) if settings.accounts_file else {}
        self._alpaca = (alpaca_venue(accounts, **settings.alpaca_options()), accounts)
        self.router: VenueRouter | None = None
        self.sells: SellModule | None = None
        self.jobs: ImportJobs | None = None
        if accounts:
            log.info("accounts file %s: %d Alpaca account(s): %s", settings.accounts_file, len(accounts),
                     ", ".join(sorted(accounts)))

    def reload_accounts(self) -> bool:
        """Read the accounts file again. True when it was valid and its accounts replace
        the Alpaca pool (orders in flight finish on the old one); False when there is no
        accounts file or it is invalid (logged, naming entry and field; the accounts in
        use stay). Thread-safe; blocking (reads files)."""
        path = self.settings.accounts_file
        if path is None:
            log.warning("accounts reload: no accounts file configured (BSOPT_BROKER_ACCOUNTS_FILE)")
            return False
        with self._reload_lock:
            try:
                accounts = load_accounts(path)
            except AccountsFileError as exc:
                log.error("accounts reload refused, the accounts in use stay: %s", exc)
                return False
            venue = alpaca_venue(accounts, **self.settings.alpaca_options())
            self._alpaca = (venue, accounts)
            if self.router is not None:
                self.router.replace_alpaca(venue, accounts)
            if self.sells is not None:  # the sell workers restart over the new pool
                self.sells.replace(accounts, LatestTradePrices.from_accounts(accounts))
        log.info("accounts reload: %s: %d Alpaca account(s): %s", path, len(accounts), ", ".join(sorted(accounts)))
        return True

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading the accounts file")
        future = asyncio.get_running_loop().run_in_executor(None, self.reload_accounts)
        future.add_done_callback(_log_failure)

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        runtime = ServiceRuntime(settings, schema=models.SCHEMA, migrations_package="bsopt_broker",
                                 audience=BROKER_GATEWAY_AUDIENCE)
        loop = asyncio.get_running_loop()
        # Signal handlers can only be installed from the main thread (tests run serve()
        # in a thread and call reload_accounts() instead).
        on_signal = threading.current_thread() is threading.main_thread()
        async with runtime.running():
            paper = PaperBroker(runtime.session_factory, self.market_data or bundled_provider(),
                                settings.paper_commission_bps)
            with self._reload_lock:
                alpaca, accounts = self._alpaca
                store = ConnectionStore(runtime.session_factory, self._cipher)
                self.router = router = VenueRouter(
                    paper, alpaca, accounts, connections=ConnectedAccounts(store, settings.alpaca_trading_base_url,
                                                                    settings.alpaca_options()),
                    journal=OrderJournal(runtime.session_factory))
                # The sell workers (one thread per Alpaca account with rules) sell through the
                # router, like PlaceOrder: same per-account lock, balance guard and timing.
                self.sells = sells = SellModule(
                    router, accounts, LatestTradePrices.from_accounts(accounts), runtime.session_factory,
                    runtime.outbox, notify=lambda: loop.call_soon_threadsafe(runtime.outbox.notify))
            if stale := await asyncio.to_thread(store.sealed_with_other_keys):
                log.warning("%d broker connection(s) have credentials sealed with a previous key: run "
                            "`python -m bsopt_broker reseal-credentials`, then drop the previous key", stale)
            servicer = BrokerGatewayServicer(
                router, TradeImporter(runtime.session_factory, router, runtime.outbox), runtime.outbox,
                connections=ConnectionService.from_settings(settings, store),
                alpaca_importer=TradeImporter(runtime.session_factory, VenueView(router, ALPACA), runtime.outbox),
                sells=sells)
            # Background imports (StartImport): a small thread pool; jobs left queued or
            # running by an earlier process are run again here.
            self.jobs = jobs = ImportJobs(
                runtime.session_factory, runtime.outbox, servicer.importer_for,
                notify=lambda: loop.call_soon_threadsafe(runtime.outbox.notify), workers=2)
            servicer.jobs = jobs
            await asyncio.to_thread(jobs.start)
            await asyncio.to_thread(sells.start)
            if on_signal:
                loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
            try:
                await serve_grpc(stop, host=settings.host, port=settings.port, verifier=runtime.verifier,
                                 services=[grpc_service(servicer)])
            finally:
                if on_signal:
                    loop.remove_signal_handler(signal.SIGHUP)
                await asyncio.to_thread(sells.stop)
                self.sells = None
                await asyncio.to_thread(jobs.stop)
                self.jobs = None


def _log_failure(future: asyncio.Future[bool]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.error("accounts reload failed, the accounts in use stay: %s: %s", type(exc).__name__, exc)


async def serve(settings: BrokerSettings, stop: asyncio.Event, market_data: MarketDataProvider | None = None) -> None:
    """Serve until ``stop`` is set. Raises AccountsFileError before anything starts when
    the accounts file is malformed or names a secret that cannot be read."""
    await BrokerGateway(settings, market_data).run(stop)
