"""Brute-force limits for credential checks, shared by every replica through Postgres.

Guessing a password or a client secret online is the attack RFC 9700 §4.3 (and RFC 6749
§10.10, "the authorization server MUST prevent attackers from guessing access tokens,
authorization codes, refresh tokens, resource owner passwords, and client credentials")
asks servers to make impractical. One :class:`Limiter` serves every place that checks a
credential: the login form (keys per account and per IP), the token endpoint's client
authentication (per ``client_id`` and per IP), and later the device-code verification
page (RFC 8628 §5.1 asks for the same against user-code guessing).

Keys (:class:`ThrottleKey`): ``<scope>:<kind>:<HMAC-SHA256(throttle_key_secret, value)>``,
e.g. ``login:account:…``, ``login:ip:…``, ``client:client:…``. Nothing raw is stored:
neither IP addresses (an IPv6 address counts as its /64, which one host usually owns)
nor usernames. Scopes keep counters apart (a login failure does not slow down a
client's secret checks).

Policy per kind (:class:`Policy`, from the settings ``throttle_*``; addresses at the
token endpoint have their own, ``throttle_client_ip_free_failures``): the first
``free_failures`` consecutive failures cost nothing; failure ``free_failures + k`` blocks
the key for ``min(base_delay · 2^(k-1), max_delay)`` seconds after it (exponential
backoff); a key whose policy locks (accounts) is locked for ``lock_seconds`` when its
failures reach ``lock_failures``; its counter then starts again from zero. Attempts refused
while blocked or locked are not checked at all and do not count. Failures older than
``throttle_window_seconds`` (since the last one) are forgotten; a success resets the
account/client key (never the IP key: one's own valid account must not wash an
address's record).

Storage: ``auth.login_throttle`` (one row per key). A failure is one
``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` (atomic per key; the row stays locked
until the transaction ends, so the lock decision and its audit line happen exactly once
even with concurrent failures on several replicas). Times come from the database clock
(``now()``), so replicas never disagree about a delay. The lock is logged as
``auth.account_locked`` on the ``bsopt_auth.audit`` logger (no secrets, hashed IP).

Checks without a round trip (``throttle_check_cache_seconds``, on while ``serve`` runs):
a key a check found no row for is remembered as clear in this process for that long, so
the token endpoint's hot path (a client that authenticates fine, from an address with no
failures) reads nothing. A failure recorded in this process forgets the key at once; one
recorded by another replica blocks here within the cache's lifetime (1 s by default).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session, sessionmaker

from bsopt_auth.config import AuthSettings
from bsopt_auth.models import LoginThrottle
from bsopt_auth.rfc6749.errors import InvalidClientError, OAuth2Error
from bsopt_common.db import database_key, session_scope

log = logging.getLogger(__name__)
audit = logging.getLogger("bsopt_auth.audit")

#: Stable audit event name of a temporary account lock.
ACCOUNT_LOCKED_EVENT = "auth.account_locked"
#: One failure in this many also purges rows that no longer block anything.
_PURGE_ONE_IN = 200

#: Keys a check found no row for, with when that answer goes stale (monotonic seconds),
#: per database URL; see the module docstring. Off while ``_clear_seconds`` is 0.
_clear: dict[tuple[str, str], float] = {}
_clear_lock = threading.Lock()
_clear_seconds = 0.0
_CLEAR_MAX_KEYS = 100_000


def configure_check_cache(seconds: float) -> None:
    """Remember keys found clear for ``seconds`` in this process (0: read every time)."""
    global _clear_seconds
    with _clear_lock:
        _clear_seconds = max(0.0, seconds)
        _clear.clear()


def _database_of(session_factory: sessionmaker[Session]) -> str:
    """The database a factory's engine points at, as a cache key: its URL without the
    password. Not the engine's ``id()``, which a later engine may reuse, inheriting the
    dead engine's "clear" entries; and every engine on one database sees the same
    counters, so a failure recorded through one drops the entry for all of them."""
    return database_key(session_factory.kw.get("bind"))


@dataclass(frozen=True)
class Policy:
    """How failures of one kind of key are limited (see the module docstring)."""

    free_failures: int
    base_delay_seconds: float
    max_delay_seconds: float
    #: 0: never lock (backoff only).
    lock_failures: int = 0
    lock_seconds: float = 0.0

    def delay_after(self, failures: int) -> float:
        """Seconds a key is blocked after its ``failures``-th consecutive failure."""
        over = failures - self.free_failures
        if over <= 0:
            return 0.0
        return min(self.base_delay_seconds * 2.0 ** min(over - 1, 62), self.max_delay_seconds)


@dataclass(frozen=True)
class ThrottleKey:
    """A counter: ``key`` is what is stored (hashed value), ``kind`` picks the policy."""

    key: str
    kind: str
    policy: Policy


def _hmac_hex(secret: bytes, value: str) -> str:
    return hmac.new(secret, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def normalize_ip(address: str | None) -> str:
    """The address a per-IP counter is kept for: IPv4 as is, IPv6 as its /64."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class Limiter:
    """Per-key failure counters in ``auth.login_throttle``. Blocking calls: run them in a
    thread from async code. Cheap to build (one per request is fine)."""

    def __init__(self, settings: AuthSettings, session_factory: sessionmaker[Session]) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self._secret = settings.derived_secret("throttle")
        backoff = {"base_delay_seconds": settings.throttle_base_delay_seconds,
                   "max_delay_seconds": settings.throttle_max_delay_seconds}
        #: Keys :meth:`retry_after` found a row for (a reset of any other is a no-op).
        self.seen: set[str] = set()
        self.policies = {
            "account": Policy(settings.throttle_account_free_failures, **backoff,
                              lock_failures=settings.throttle_account_lock_failures,
                              lock_seconds=settings.throttle_account_lock_seconds),
            "ip": Policy(settings.throttle_ip_free_failures, **backoff),
            "client": Policy(settings.throttle_client_free_failures, **backoff),
            "client_ip": Policy(settings.throttle_client_ip_free_failures, **backoff),
        }

    # ------------------------------------------------------------------ keys

    def hash_value(self, value: str) -> str:
        return _hmac_hex(self._secret, value)

    def key(self, scope: str, kind: str, value: str) -> ThrottleKey:
        """The counter of ``value`` (an account name, an IP, a client_id) in ``scope``.
        Addresses at the token endpoint have their own policy (``client_ip``)."""
        policy = self.policies["client_ip" if (scope, kind) == (CLIENT_SCOPE, "ip") else kind]
        return ThrottleKey(f"{scope}:{kind}:{self.hash_value(value)}", kind, policy)

    def account_key(self, scope: str, username: str) -> ThrottleKey:
        return self.key(scope, "account", username)

    def ip_key(self, scope: str, address: str | None) -> ThrottleKey:
        return self.key(scope, "ip", normalize_ip(address))

    def client_key(self, client_id: str) -> ThrottleKey:
        return self.key("client", "client", client_id)

    def ip_hash(self, address: str | None) -> str:
        """The hashed address for log lines (a prefix: enough to correlate)."""
        return self.hash_value(normalize_ip(address))[:16]

    # ------------------------------------------------------------------ checks

    def retry_after(self, keys: Sequence[ThrottleKey]) -> float | None:
        """Seconds until every key may try again, or None when none is blocked or locked."""
        if not keys:
            return None
        by_key = {k.key: k for k in keys}
        database = _database_of(self.session_factory) if _clear_seconds > 0 else ""
        if _clear_seconds > 0:
            now_mono = time.monotonic()
            if all(_clear.get((database, k), 0.0) > now_mono for k in by_key):
                self.seen = set()
                return None
        window = self.settings.throttle_window_seconds
        with session_scope(self.session_factory) as session:
            now = session.scalar(select(text("now()")))
            rows = session.execute(
                select(LoginThrottle.key, LoginThrottle.failures, LoginThrottle.last_failure_at,
                       LoginThrottle.locked_until).where(LoginThrottle.key.in_(by_key))
            ).all()
        assert isinstance(now, datetime)
        self.seen = {row[0] for row in rows}
        if _clear_seconds > 0:
            fresh_until = time.monotonic() + _clear_seconds
            with _clear_lock:
                if len(_clear) > _CLEAR_MAX_KEYS:
                    _clear.clear()
                for k in by_key.keys() - self.seen:
                    _clear[(database, k)] = fresh_until
        wait = 0.0
        for key, failures, last_failure_at, locked_until in rows:
            if locked_until is not None:
                wait = max(wait, (locked_until - now).total_seconds())
            if last_failure_at is not None and (now - last_failure_at).total_seconds() <= window:
                until = by_key[key].policy.delay_after(failures) - (now - last_failure_at).total_seconds()
                wait = max(wait, until)
        return wait if wait > 0 else None

    def record_failure(self, keys: Sequence[ThrottleKey], *, ip_hash: str = "", subject: str = "") -> None:
        """Count one failure on each key; lock the keys whose policy says so. ``ip_hash``
        and ``subject`` (a user id, never a secret) only go to the audit line."""
        if not keys:
            return
        if _clear_seconds > 0:
            database = _database_of(self.session_factory)
            with _clear_lock:
                for k in keys:
                    _clear.pop((database, k.key), None)
        with session_scope(self.session_factory) as session:
            for k in sorted(keys, key=lambda k: k.key):  # one lock order: no deadlocks
                failures = session.execute(_UPSERT_FAILURE, {
                    "key": k.key, "window": self.settings.throttle_window_seconds,
                }).scalar_one()
                policy = k.policy
                if policy.lock_failures and failures >= policy.lock_failures:
                    session.execute(_LOCK, {"key": k.key, "lock": policy.lock_seconds})
                    audit.warning(
                        "%s key=%s ip=%s subject=%s failures=%d locked_seconds=%g",
                        ACCOUNT_LOCKED_EVENT, k.key.rsplit(":", 1)[1][:16], ip_hash or "-",
                        subject or "-", failures, policy.lock_seconds,
                        extra={"event": ACCOUNT_LOCKED_EVENT, "throttle_key": k.key, "ip_hash": ip_hash,
                               "subject": subject, "failures": failures,
                               "locked_seconds": policy.lock_seconds},
                    )
                    _audit().record(session, self.settings, ACCOUNT_LOCKED_EVENT, outcome="failure", user_id=subject or None, ip_hash=ip_hash or None, reason="too_many_failures", details={"failures": str(failures)})  # noqa: E501
            if random.randrange(_PURGE_ONE_IN) == 0:  # not security relevant
                self._purge(session)

    def reset(self, keys: Sequence[ThrottleKey]) -> None:
        """Forget the failures of ``keys`` (after a success). A lock stays until it expires."""
        if not keys:
            return
        with session_scope(self.session_factory) as session:
            session.execute(
                delete(LoginThrottle).where(
                    LoginThrottle.key.in_([k.key for k in keys]),
                    (LoginThrottle.locked_until.is_(None)) | (LoginThrottle.locked_until <= text("now()")),
                )
            )

    def _purge(self, session: Session) -> None:
        """Delete rows that block nothing any more (out of the window, lock expired)."""
        session.execute(_PURGE, {"window": self.settings.throttle_window_seconds})

    def purge(self) -> None:
        with session_scope(self.session_factory) as session:
            self._purge(session)


_UPSERT_FAILURE = text(
    "INSERT INTO auth.login_throttle AS t (key, failures, last_failure_at) VALUES (:key, 1, now()) "
    "ON CONFLICT (key) DO UPDATE SET "
    "failures = CASE WHEN t.last_failure_at < now() - make_interval(secs => :window) THEN 1 "
    "ELSE t.failures + 1 END, "
    "last_failure_at = now() "
    "RETURNING failures"
)
_LOCK = text(
    "UPDATE auth.login_throttle SET failures = 0, locked_until = now() + make_interval(secs => :lock) "
    "WHERE key = :key"
)
_PURGE = text(
    "DELETE FROM auth.login_throttle WHERE last_failure_at < now() - make_interval(secs => :window) "
    "AND (locked_until IS NULL OR locked_until < now())"
)


def _audit() -> ModuleType:
    from bsopt_auth import audit as trail  # bsopt_auth.audit imports this module

    return trail


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` delta-seconds (RFC 9110 §10.2.3): a whole number, at least 1."""
    return str(max(1, math.ceil(seconds)))


class TooManyAttemptsError(OAuth2Error):
    """Too many failed client authentications from this client_id or address: 429 (RFC
    6585 §4) with ``Retry-After``. The code is RFC 6749 §4.1.2.1's
    ``temporarily_unavailable`` (the §5.2 list has none for rate limits); the client's
    credentials were not checked."""

    error = "temporarily_unavailable"
    status_code = 429

    def __init__(self, retry_after_seconds: float) -> None:
        self.retry_after = retry_after_header(retry_after_seconds)
        super().__init__(f"too many failed client authentications; retry after {self.retry_after} seconds")

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "Retry-After": self.retry_after}


#: Throttle scope of client authentication (token endpoint, and any endpoint that
#: authenticates clients the same way: revocation, introspection).
CLIENT_SCOPE = "client"


class ClientAuthGuard:
    """The brute-force limits around one client authentication: per claimed ``client_id``
    and per IP. :meth:`check` before authenticating (raises
    :class:`TooManyAttemptsError`), :meth:`failed` on ``invalid_client``,
    :meth:`succeeded` after it passed. Blocking: run in a thread."""

    def __init__(self, settings: AuthSettings, session_factory: sessionmaker[Session], authorization: str | None,
                 items: Sequence[tuple[str, str]], client_ip: str | None) -> None:
        self.limiter = Limiter(settings, session_factory)
        self.client_ip = client_ip
        client_id = next((v for k, v in items if k == "client_id"), None)
        if authorization:
            from bsopt_auth.rfc6749.client_auth import parse_basic_authorization

            try:
                client_id = parse_basic_authorization(authorization)[0]
            except InvalidClientError:
                pass
        self.client_key = self.limiter.client_key(client_id[:255]) if client_id else None
        self.keys = [self.limiter.ip_key(CLIENT_SCOPE, client_ip), *([self.client_key] if self.client_key else [])]

    def check(self) -> None:
        if (wait := self.limiter.retry_after(self.keys)) is not None:
            raise TooManyAttemptsError(wait)

    def failed(self) -> None:
        self.limiter.record_failure(self.keys, ip_hash=self.limiter.ip_hash(self.client_ip))

    def succeeded(self) -> None:
        if self.client_key is not None and self.client_key.key in self.limiter.seen:
            self.limiter.reset([self.client_key])


__all__ = ["ACCOUNT_LOCKED_EVENT", "CLIENT_SCOPE", "ClientAuthGuard", "Limiter", "Policy", "ThrottleKey",
           "TooManyAttemptsError", "configure_check_cache", "normalize_ip", "retry_after_header"]
