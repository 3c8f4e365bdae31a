"""The venue-adapter seam: what a broker must implement to sit behind broker-gateway.

The paper broker (:mod:`bsopt_broker.adapters.paper`) is one venue; Alpaca
(:mod:`bsopt_broker.adapters.alpaca`) is another, and :mod:`bsopt_broker.adapters.router`
routes each account id to its venue. The servicer and the trade importer see only this :class:`Broker` protocol.
After NautilusTrader's ``adapters/_template/execution.py``:

====================  ========  ===========================================================
method                required  what it does
====================  ========  ===========================================================
``create_account``    paper     open an account with starting cash (Alpaca: InvalidArgument)
``get_account``       yes       cash and positions of the user's account
``submit_market_order``  yes    balance guard, then a market order; idempotent per
                                ``client_order_id``
``fills_between``     yes       the account's executions in ``[start, end)``, oldest first;
                                ``on_page`` (optional) told after each page read
====================  ========  ===========================================================

Errors: ``NotFound`` for an account that is not the user's, ``InvalidArgument`` for a
malformed request, ``OrderRejected`` (FAILED_PRECONDITION) when the guard refuses,
``Unavailable`` when the venue cannot be reached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from bsopt_broker.domain.records import Account, AccountKind, Fill, MarketOrder, OrderResult
from bsopt_common.errors import NotFound
from bsopt_common.money import Money


class AccountNotFound(NotFound):
    """No such account for this user."""


@dataclass(frozen=True, slots=True)
class FetchProgress:
    """How far ``fills_between`` got: pages read from the venue so far, fills inside the
    window so far, and the account's kind."""

    pages_fetched: int
    fills_seen: int
    account_kind: AccountKind


#: ``fills_between``'s optional progress callback, called after each page read (what it
#: raises stops the fetch).
OnPage = Callable[[FetchProgress], None]


class Broker(Protocol):
    """A trading venue."""

    @property
    def name(self) -> str:
        """The venue's name as accounts record it (``"paper"``, ``"alpaca"``)."""
        ...

    def create_account(self, user_id: str, initial_cash: Money) -> Account: ...

    def get_account(self, account_id: str, user_id: str) -> Account: ...

    def submit_market_order(self, order: MarketOrder) -> OrderResult: ...

    def fills_between(self, account_id: str, user_id: str, start: datetime, end: datetime, *,
                      on_page: OnPage | None = None) -> list[Fill]: ...
