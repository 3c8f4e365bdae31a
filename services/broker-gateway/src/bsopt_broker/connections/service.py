"""Connecting a user's own Alpaca account, and serving it as a venue account.

* :class:`ConnectionService`: start an OAuth connection (the authorization URL and a
  ``state`` bound to the user, single use, expiring), complete it (state + code), connect
  with API keys, list, pause, revoke. Credentials are checked against Alpaca's account
  endpoint (``GET /v2/account``, through alpaca-py's ``TradingClient``) and the account's
  kind (paper or live) decided by :mod:`bsopt_broker.adapters.alpaca.detection` before
  anything is stored; they are stored encrypted (:mod:`.crypto`).
* :class:`ConnectedAccounts`: what :class:`~bsopt_broker.adapters.router.VenueRouter`
  asks about an account id that is a connection id: an
  :class:`~bsopt_broker.adapters.alpaca.broker.AlpacaBroker` over one slot built from the
  stored credentials (``oauth_token`` or keys). Active: everything; paused: the account
  and imports are readable, orders are FAILED_PRECONDITION; revoked or another user's:
  NOT_FOUND.

Blocking: call from a worker thread.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.models import TradeAccount
from pydantic import SecretStr

from bsopt_broker.adapters.alpaca.accounts import AlpacaAccountConfig
from bsopt_broker.adapters.alpaca.broker import AlpacaBroker
from bsopt_broker.adapters.alpaca.detection import AccountKind, detect, kind_from_key_id
from bsopt_broker.adapters.alpaca.prices import LatestTradePrices
from bsopt_broker.adapters.alpaca.resilience import TimeoutSession, disable_builtin_retries
from bsopt_broker.config import BrokerSettings
from bsopt_broker.connections.oauth import AlpacaOAuthClient, new_code_verifier, new_state
from bsopt_broker.connections.store import (
    Connection,
    ConnectionMethod,
    ConnectionNotFound,
    ConnectionStatus,
    ConnectionStore,
)
from bsopt_common.errors import FailedPrecondition, InvalidArgument, Unavailable

log = logging.getLogger("bsopt_broker.connections")

ALPACA = "alpaca"
#: Longest key id / secret / code accepted (Alpaca's are 20 / 40 characters; codes short).
MAX_CREDENTIAL_LENGTH = 256


class ConnectedAccountConfig(AlpacaAccountConfig):
    """An Alpaca account a user connected: keys, or an OAuth access token (then the key
    fields are empty)."""

    oauth_token: SecretStr | None = None


@dataclass(frozen=True, slots=True)
class StartedConnection:
    authorize_url: str
    state: str
    expires_at: datetime


def _check_broker(broker: str) -> None:
    if broker not in ("", ALPACA):
        raise InvalidArgument(f"broker {broker!r} cannot be connected; only 'alpaca'")


def _check_text(name: str, value: str) -> None:
    if not value:
        raise InvalidArgument(f"{name} is required")
    if len(value) > MAX_CREDENTIAL_LENGTH or not value.isprintable() or value.strip() != value:
        raise InvalidArgument(f"{name} is malformed (printable, no surrounding spaces, at most "
                              f"{MAX_CREDENTIAL_LENGTH} characters)")


class AlpacaCredentialsCheck:
    """Reads the account with candidate credentials: proves they work and decides the kind."""

    def __init__(self, base_url: str | None, timeout_s: float = 10.0):
        self._base_url = base_url
        self._timeout_s = timeout_s

    def _read(self, paper: bool, *, key_id: str | None, secret: str | None, oauth_token: str | None) -> TradeAccount:
        if oauth_token is not None:
            client = TradingClient(oauth_token=oauth_token, paper=paper, url_override=self._base_url)
        else:
            client = TradingClient(api_key=key_id, secret_key=secret, paper=paper, url_override=self._base_url)
        client._session = TimeoutSession(self._timeout_s)
        disable_builtin_retries(client)
        account = client.get_account()
        assert isinstance(account, TradeAccount)
        return account

    def kind(self, account: str, *, paper: bool | None, key_id: str | None = None, secret: str | None = None,
             oauth_token: str | None = None) -> AccountKind:
        """The account's kind. Raises InvalidArgument (Alpaca refused the credentials),
        FailedPrecondition (the kind asked contradicts the evidence, or cannot be told),
        Unavailable (Alpaca unreachable or failing)."""
        hint = (AccountKind.PAPER if paper else AccountKind.LIVE) if paper is not None else kind_from_key_id(key_id)
        # With a base URL (a proxy, the stand-in) both kinds answer at the same place: one try.
        tries = [hint] if hint is not None else [AccountKind.PAPER] if self._base_url else [AccountKind.PAPER,
                                                                                             AccountKind.LIVE]
        refused: APIError | None = None
        for kind in tries:
            try:
                raw = self._read(kind is AccountKind.PAPER, key_id=key_id, secret=secret, oauth_token=oauth_token)
            except APIError as exc:
                if exc.status_code in (401, 403):
                    refused = exc
                    continue
                raise Unavailable(f"Alpaca answered HTTP {exc.status_code} reading the account") from None
            except requests.RequestException as exc:
                raise Unavailable(f"Alpaca cannot be reached: {type(exc).__name__}") from None
            probe = kind if self._base_url is None and hint is None else None
            return detect(account=account, key_id=key_id, override=paper, account_number=raw.account_number,
                          probe=probe).kind
        assert refused is not None
        raise InvalidArgument(f"Alpaca refused these credentials (HTTP {refused.status_code}): check the key id "
                              "and secret, and paper or live")


class ConnectionService:
    def __init__(self, store: ConnectionStore, oauth: AlpacaOAuthClient, check: AlpacaCredentialsCheck, *,
                 state_ttl_s: int):
        self.store = store
        self.oauth = oauth
        self.check = check
        self.state_ttl_s = state_ttl_s

    @classmethod
    def from_settings(cls, settings: BrokerSettings, store: ConnectionStore) -> ConnectionService:
        secret = settings.alpaca_oauth_client_secret
        oauth = AlpacaOAuthClient(
            client_id=settings.alpaca_oauth_client_id, client_secret=secret.get_secret_value() if secret else None,
            authorize_url=settings.alpaca_oauth_authorize_url, token_url=settings.alpaca_oauth_token_url,
            redirect_uri=settings.alpaca_oauth_redirect_uri, scope=settings.alpaca_oauth_scope)
        return cls(store, oauth, AlpacaCredentialsCheck(settings.alpaca_trading_base_url),
                   state_ttl_s=settings.alpaca_oauth_state_ttl_seconds)

    def start(self, user_id: str, *, broker: str, paper: bool, allow_live: bool) -> StartedConnection:
        """An authorization URL for the user's browser and its ``state`` (bound to
        ``user_id``, single use, expiring). Raises InvalidArgument (broker), OAuthNotConfigured."""
        _check_broker(broker)
        state, verifier = new_state(), new_code_verifier()
        url = self.oauth.authorization_url(state, verifier)
        assert self.oauth.redirect_uri is not None
        kind = AccountKind.PAPER if paper else AccountKind.LIVE
        expires = self.store.add_state(state, user_id=user_id, connection_id=str(uuid.uuid4()), broker=ALPACA,
                                       account_kind=kind.value, allow_live=allow_live and not paper,
                                       code_verifier=verifier, redirect_uri=self.oauth.redirect_uri,
                                       ttl_s=self.state_ttl_s)
        log.info("broker connection started for user %s (alpaca, %s)", user_id, kind.value)
        return StartedConnection(url, state, expires)

    def complete(self, state: str, code: str, user_id: str | None) -> Connection:
        """Complete a started connection: the state is used up first (a replay is refused
        even when the exchange then fails), the code exchanged (PKCE verifier sent), the
        token proved on the account of the kind asked at start, and the connection stored.
        ``user_id``: the caller's user when the call acts for one (must be the state's).
        Raises StateRefused / InvalidArgument, FailedPrecondition, Unavailable."""
        _check_text("code", code)
        pending = self.store.consume_state(state, user_id)
        token = self.oauth.exchange(code, pending.code_verifier, pending.redirect_uri)
        kind = self.check.kind(pending.connection_id, paper=pending.account_kind == AccountKind.PAPER.value,
                               oauth_token=token.access_token)
        connection = self.store.create(
            connection_id=pending.connection_id, user_id=pending.user_id, broker=pending.broker,
            method=ConnectionMethod.OAUTH, account_kind=kind.value, allow_live=pending.allow_live,
            scope=token.scope, credentials={"oauth_token": token.access_token})
        log.info("broker connection %s of user %s: alpaca %s by OAuth", connection.connection_id,
                 pending.user_id, kind.value)
        return connection

    def connect_with_keys(self, user_id: str, *, broker: str, key_id: str, secret: str, paper: bool | None,
                          allow_live: bool) -> Connection:
        """Check the keys on the account endpoint, then store them. Nothing is stored when
        Alpaca refuses them. Raises InvalidArgument, FailedPrecondition, Unavailable."""
        _check_broker(broker)
        _check_text("api_key_id", key_id)
        _check_text("api_secret_key", secret)
        connection_id = str(uuid.uuid4())
        kind = self.check.kind(connection_id, paper=paper, key_id=key_id, secret=secret)
        connection = self.store.create(
            connection_id=connection_id, user_id=user_id, broker=ALPACA, method=ConnectionMethod.API_KEY,
            account_kind=kind.value, allow_live=allow_live and kind is AccountKind.LIVE, scope="",
            credentials={"api_key_id": key_id, "api_secret_key": secret})
        log.info("broker connection %s of user %s: alpaca %s by API keys", connection_id, user_id, kind.value)
        return connection

    def list(self, user_id: str) -> list[Connection]:
        return self.store.list(user_id)

    def pause(self, user_id: str, connection_id: str) -> Connection:
        """Raises ConnectionNotFound (also another user's or a revoked one)."""
        return self.store.set_status(connection_id, user_id, ConnectionStatus.PAUSED)

    def resume(self, user_id: str, connection_id: str) -> Connection:
        """Active again (orders allowed). Raises ConnectionNotFound."""
        return self.store.set_status(connection_id, user_id, ConnectionStatus.ACTIVE)

    def revoke(self, user_id: str, connection_id: str) -> Connection:
        """Status revoked, credentials deleted. Raises ConnectionNotFound."""
        connection = self.store.set_status(connection_id, user_id, ConnectionStatus.REVOKED)
        log.info("broker connection %s of user %s revoked, credentials deleted", connection_id, user_id)
        return connection


class ConnectedAccounts:
    """Connection ids as venue accounts, for the router: one AlpacaBroker per connection,
    rebuilt when the row changes (``updated_at``), so every replica sees pauses and revokes."""

    def __init__(self, store: ConnectionStore, base_url: str | None, options: Mapping[str, Any] | None = None):
        self._store = store
        self._base_url = base_url
        self._options = dict(options or {})  # AlpacaBroker's keyword arguments (timeouts, retries, breaker)
        self._venues: dict[str, tuple[datetime, AlpacaBroker, LatestTradePrices]] = {}
        self._lock = threading.Lock()

    def knows(self, account_id: str) -> bool:
        """Is ``account_id`` a connection id (any owner, any status)?"""
        return bool(account_id) and self._store.find(account_id) is not None

    def venue(self, account_id: str, user_id: str, *, ordering: bool) -> AlpacaBroker | None:
        """The venue of a connection id; None when it is no connection id. Raises
        ConnectionNotFound (another user's, revoked), FailedPrecondition (paused, ``ordering``)."""
        if not account_id:
            return None
        found = self._store.find(account_id)
        if found is None:
            return None
        if found.user_id != user_id or found.status is ConnectionStatus.REVOKED:
            raise ConnectionNotFound(f"no Alpaca account {account_id!r} for this user")
        if ordering and found.status is ConnectionStatus.PAUSED:
            raise FailedPrecondition(f"broker connection {account_id!r} is paused: orders are refused until it "
                                     "is resumed (ResumeBrokerConnection)")
        return self._built(found)[0]

    def connection(self, account_id: str) -> Connection | None:
        """The connection of a connection id (any owner, any status), or None (the sell module)."""
        return self._store.find(account_id) if account_id else None

    def prices(self, account_id: str, user_id: str) -> LatestTradePrices:
        """The latest-trade price source of the user's connection, with its credentials (the
        sell module's comparison price). Raises ConnectionNotFound (also: revoked, another
        user's, no connection id)."""
        found = self._store.find(account_id) if account_id else None
        if found is None or found.user_id != user_id or found.status is ConnectionStatus.REVOKED:
            raise ConnectionNotFound(f"no Alpaca account {account_id!r} for this user")
        return self._built(found)[1]

    def _built(self, found: Connection) -> tuple[AlpacaBroker, LatestTradePrices]:
        account_id = found.connection_id
        with self._lock:
            cached = self._venues.get(account_id)
            if cached is not None and cached[0] == found.updated_at:
                return cached[1], cached[2]
        venue, prices = self._build(found)
        with self._lock:
            self._venues[account_id] = (found.updated_at, venue, prices)
        return venue, prices

    def _build(self, connection: Connection) -> tuple[AlpacaBroker, LatestTradePrices]:
        creds = self._store.credentials(connection.connection_id)
        token = creds.get("oauth_token")
        config = ConnectedAccountConfig(
            name=connection.connection_id, broker="alpaca", owner=connection.user_id,
            api_key_id=SecretStr(creds.get("api_key_id", "")),
            api_secret_key=SecretStr(creds.get("api_secret_key", "")),
            oauth_token=SecretStr(token) if token else None,
            paper=connection.account_kind == AccountKind.PAPER.value,
            base_url=self._base_url, allow_live=connection.allow_live)
        prices = LatestTradePrices(config)
        return AlpacaBroker({connection.connection_id: config}, prices, **self._options), prices
