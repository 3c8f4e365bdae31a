"""``VenueRouter``: the one :class:`~bsopt_broker.domain.venue.Broker` the servicer and the
trade importer see, in front of the built-in paper venue and the Alpaca venue.

An account id that names an entry of the accounts file (``BSOPT_BROKER_ACCOUNTS_FILE``)
goes to the :class:`~bsopt_broker.adapters.alpaca.broker.AlpacaBroker`; every other id to
the paper broker. New accounts are always paper: Alpaca accounts are opened at Alpaca and
listed in the accounts file, never created through the API.

An account id that is a broker connection id (a user's own Alpaca account connected
from the API, :class:`~bsopt_broker.connections.service.ConnectedAccounts`) goes to that
connection's Alpaca venue: another user's or a revoked connection is NOT_FOUND, and a
paused one refuses orders (FAILED_PRECONDITION) while its account and imports stay
readable.

Every record leaving the router carries ``account_kind``: ``PAPER`` for the paper venue,
for Alpaca what detection decided (paper or live).

:meth:`replace_alpaca` swaps the Alpaca pool for a new one atomically (one reference
assignment): a call reads the pool once, so an order in flight finishes on the pool it
started on, and every later call sees the new one. Orders of one Alpaca account are
serialised by a per-account lock of the router that outlives the pools, so an order
started on the old pool and one on the new never both spend the same cash.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from bsopt_broker.adapters.alpaca.accounts import AlpacaAccountConfig
from bsopt_broker.adapters.alpaca.broker import AlpacaBroker, AlpacaOrderResult
from bsopt_broker.adapters.alpaca.detection import AccountKind as AlpacaKind
from bsopt_broker.domain.records import Account, AccountKind, Fill, MarketOrder, Order, OrderResult
from bsopt_broker.domain.venue import Broker, FetchProgress, OnPage
from bsopt_common.money import Money

ACCOUNTS_FILE_ENV = "BSOPT_BROKER_ACCOUNTS_FILE"
PAPER = "paper"
ALPACA = "alpaca"

if TYPE_CHECKING:
    from bsopt_broker.connections.service import ConnectedAccounts
    from bsopt_broker.order_journal import OrderJournal

R = TypeVar("R", Account, Order, Fill)


@dataclass(frozen=True, slots=True)
class _AlpacaPool:
    broker: AlpacaBroker | None
    accounts: Mapping[str, AlpacaAccountConfig]


def _kind(kind: AlpacaKind) -> AccountKind:
    return AccountKind(kind.value)


def _with_kind(record: R, kind: AccountKind) -> R:
    return record if record.account_kind is kind else dataclasses.replace(record, account_kind=kind)


class VenueRouter:
    """Routes each call by account id: Alpaca accounts of the accounts file, else paper.

    ``name`` is the paper venue's (the venue new accounts open at); :meth:`venue_name`
    names the venue of one account.
    """

    def __init__(self, paper: Broker, alpaca: AlpacaBroker | None = None,
                 alpaca_accounts: Mapping[str, AlpacaAccountConfig] | None = None, *,
                 connections: ConnectedAccounts | None = None, journal: OrderJournal | None = None):
        self.paper = paper
        self.connections = connections
        #: Where Alpaca orders are stored with their timing (``bsopt_broker.order_journal``).
        self.journal = journal
        self._pool = _AlpacaPool(alpaca, dict(alpaca_accounts or {}) if alpaca is not None else {})
        self._order_locks: dict[str, threading.Lock] = {}
        self._order_locks_guard = threading.Lock()

    @property
    def name(self) -> str:
        return self.paper.name

    # -- the Alpaca pool -----------------------------------------------------------------

    def replace_alpaca(self, alpaca: AlpacaBroker | None, accounts: Mapping[str, AlpacaAccountConfig]) -> None:
        """Make ``alpaca`` (over ``accounts``, entries by name) the Alpaca venue from now on."""
        self._pool = _AlpacaPool(alpaca, dict(accounts) if alpaca is not None else {})

    @property
    def alpaca_account_ids(self) -> frozenset[str]:
        """The account ids (entry names) the Alpaca venue serves now."""
        return frozenset(self._pool.accounts)

    def is_alpaca(self, account_id: str) -> bool:
        """An account of the accounts file or a broker connection id."""
        return account_id in self._pool.accounts or (self.connections is not None
                                                     and self.connections.knows(account_id))

    def venue_name(self, account_id: str) -> str:
        """``"alpaca"`` for an account of the accounts file, else ``"paper"``."""
        return ALPACA if self.is_alpaca(account_id) else self.paper.name

    def _alpaca_for(self, account_id: str, user_id: str = "", *, ordering: bool = False) -> AlpacaBroker | None:
        pool = self._pool  # read once: the whole call runs on this pool
        if account_id in pool.accounts:
            return pool.broker
        if self.connections is not None:
            return self.connections.venue(account_id, user_id, ordering=ordering)
        return None

    def _order_lock(self, account_id: str) -> threading.Lock:
        with self._order_locks_guard:
            return self._order_locks.setdefault(account_id, threading.Lock())

    # -- Broker --------------------------------------------------------------------------

    def create_account(self, user_id: str, initial_cash: Money) -> Account:
        """A new paper account (Alpaca accounts come from the accounts file)."""
        return _with_kind(self.paper.create_account(user_id, initial_cash), AccountKind.PAPER)

    def get_account(self, account_id: str, user_id: str) -> Account:
        """Raises AccountNotFound (also for another user's Alpaca account), Unavailable."""
        alpaca = self._alpaca_for(account_id, user_id)
        if alpaca is None:
            return _with_kind(self.paper.get_account(account_id, user_id), AccountKind.PAPER)
        account = alpaca.get_account(account_id, user_id)
        return _with_kind(account, _kind(account.kind))

    def submit_market_order(self, order: MarketOrder) -> OrderResult:
        """Raises AccountNotFound, OrderRejected (FAILED_PRECONDITION), Unavailable."""
        alpaca = self._alpaca_for(order.account_id, order.user_id, ordering=True)
        if alpaca is None:
            result = self.paper.submit_market_order(order)
            return _kinded_result(result, AccountKind.PAPER)
        with self._order_lock(order.account_id):
            alpaca_result = alpaca.submit_market_order(order)
        if self.journal is not None:
            self.journal.record(order, alpaca_result)
        return _kinded_result(alpaca_result, _kind(alpaca_result.kind))

    def fills_between(self, account_id: str, user_id: str, start: datetime, end: datetime, *,
                      on_page: OnPage | None = None) -> list[Fill]:
        """Raises AccountNotFound, Unavailable, UnsupportedFill (a fractional Alpaca fill).
        ``on_page``: passed to the venue (told after each page)."""
        alpaca = self._alpaca_for(account_id, user_id)
        if alpaca is None:
            paper = (self.paper.fills_between(account_id, user_id, start, end) if on_page is None else
                     self.paper.fills_between(account_id, user_id, start, end,
                                              on_page=lambda p: on_page(FetchProgress(
                                                  p.pages_fetched, p.fills_seen, AccountKind.PAPER))))
            return [_with_kind(f, AccountKind.PAPER) for f in paper]
        # the Alpaca venue marks the fills with the account's detected kind
        return alpaca.fills_between(account_id, user_id, start, end, on_page=on_page)


class VenueView:
    """The router under one venue's name, for what records the venue by name (the trade
    importer's dedupe keys and events): ``VenueView(router, "alpaca")`` imports Alpaca
    accounts as ``"alpaca"``. Every call still goes through the router."""

    def __init__(self, router: VenueRouter, name: str):
        self._router = router
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def create_account(self, user_id: str, initial_cash: Money) -> Account:
        return self._router.create_account(user_id, initial_cash)

    def get_account(self, account_id: str, user_id: str) -> Account:
        return self._router.get_account(account_id, user_id)

    def submit_market_order(self, order: MarketOrder) -> OrderResult:
        return self._router.submit_market_order(order)

    def fills_between(self, account_id: str, user_id: str, start: datetime, end: datetime, *,
                      on_page: OnPage | None = None) -> list[Fill]:
        return self._router.fills_between(account_id, user_id, start, end, on_page=on_page)


def _kinded_result(result: OrderResult, kind: AccountKind) -> OrderResult:
    order = _with_kind(result.order, kind)
    fills = tuple(_with_kind(f, kind) for f in result.fills)
    account = _with_kind(result.account, kind)
    if isinstance(result, AlpacaOrderResult):
        return dataclasses.replace(result, order=order, fills=fills, account=account)
    return OrderResult(order=order, fills=fills, account=account, replayed=result.replayed)
