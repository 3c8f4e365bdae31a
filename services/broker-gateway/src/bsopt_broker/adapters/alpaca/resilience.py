"""The one retry policy and the per-account circuit breaker of the Alpaca adapter.

Retried (:func:`retryable`): HTTP 429 and 5xx answers (alpaca-py's :class:`APIError`) and
connection errors (nothing or a cut-off request reached Alpaca). Not retried: other 4xx
(the request itself is wrong, or a 422 duplicate that the caller answers by a look-up)
and read timeouts (a request that took ``request_timeout_s`` already; an order is then
looked up by ``client_order_id``). The wait before a retry is Alpaca's ``Retry-After``
(seconds, or an HTTP date) when it sends one, else exponential backoff with full jitter.
Bounded twice: at most ``attempts`` tries, and no retry is started whose wait would end
``total_s`` or later after the first try began.

alpaca-py has a retry loop of its own (``RESTClient._retry``: 429 and 504, a fixed wait);
:func:`disable_builtin_retries` turns it off on a client, so this is the only policy.

:class:`CircuitBreaker`: one per account. ``failures`` consecutive failed calls (after
their retries) open it; while open, calls are refused at once with :class:`CircuitOpen`
(an :class:`~bsopt_common.errors.Unavailable`, gRPC ``UNAVAILABLE``) without any request.
After ``cooldown_s`` one trial call is let through (half-open); its success closes the
breaker, its failure opens it for another cooldown.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import requests
from alpaca.common.exceptions import APIError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_before_delay
from tenacity.wait import wait_base, wait_random_exponential

from bsopt_common.errors import Unavailable

T = TypeVar("T")

log = logging.getLogger("bsopt_broker.alpaca")


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of an alpaca-py :class:`APIError`; None for anything else."""
    if isinstance(exc, APIError):
        status = exc.status_code
        return status if isinstance(status, int) else None
    return None


def retryable(exc: BaseException) -> bool:
    """True for an answer or failure worth another try: HTTP 429, HTTP 5xx, a connection error."""
    status = status_of(exc)
    if status is not None:
        return status == 429 or status >= 500
    return isinstance(exc, requests.ConnectionError)


def unavailability(exc: BaseException) -> bool:
    """True when ``exc`` means Alpaca is unreachable or overloaded (what the breaker counts):
    a retryable failure, or a timeout."""
    return retryable(exc) or isinstance(exc, requests.RequestException)


def retry_after_s(exc: BaseException | None) -> float | None:
    """``Retry-After`` of an HTTP error answer, in seconds (>= 0); None when absent or unreadable."""
    if not isinstance(exc, APIError) or exc.response is None:
        return None
    raw = exc.response.headers.get("Retry-After")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class _RetryAfterOrBackoff(wait_base):
    """``Retry-After`` (plus up to ``jitter_s`` of jitter) when given, else full-jitter backoff."""

    def __init__(self, initial_s: float, max_s: float):
        self._backoff = wait_random_exponential(multiplier=initial_s, max=max_s)
        self._jitter_s = initial_s

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        hinted = retry_after_s(outcome.exception() if outcome is not None else None)
        if hinted is not None:
            return hinted + random.uniform(0, self._jitter_s)
        return float(self._backoff(retry_state))


class RetryPolicy:
    """Retries of one call to Alpaca (see the module's docstring for what is retried).

    ``attempts``: tries in all (>= 1; 1 = no retry). ``total_s``: no retry starts at or after
    this many seconds since the first try. ``initial_wait_s``/``max_wait_s``: the backoff's
    first window and cap, seconds. Raises :class:`ValueError` for a setting out of range.
    """

    def __init__(self, *, attempts: int, total_s: float, initial_wait_s: float, max_wait_s: float,
                 sleep: Callable[[float], None] = time.sleep):
        if attempts < 1:
            raise ValueError(f"retry attempts must be >= 1, not {attempts}")
        if total_s < 0 or initial_wait_s < 0 or max_wait_s < initial_wait_s:
            raise ValueError("retry times must be >= 0, and max_wait_s >= initial_wait_s")
        self.attempts, self.total_s = attempts, total_s
        self._retrying = Retrying(
            retry=retry_if_exception(retryable),
            wait=_RetryAfterOrBackoff(initial_wait_s, max_wait_s),
            stop=stop_after_attempt(attempts) | stop_before_delay(total_s),
            sleep=sleep, reraise=True, before_sleep=self._log_retry)

    def call(self, fn: Callable[[], T], label: str = "") -> T:
        """``fn()``, retried; the last exception is re-raised once the policy gives up.
        ``label`` names the call in the warning logged before each retry (no secret in it)."""
        return self._retrying(_invoke, label, fn)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        status = status_of(exc) if exc is not None else None
        what = f"HTTP {status}" if status is not None else type(exc).__name__
        log.warning("alpaca %s: %s, try %d of %d again in %.2fs", state.args[0], what, state.attempt_number + 1,
                    self.attempts, state.upcoming_sleep)


def _invoke(label: str, fn: Callable[[], T]) -> T:
    return fn()


def disable_builtin_retries(client: object) -> None:
    """Turn off alpaca-py's own retry loop on a ``RESTClient`` (``TradingClient``): with
    ``_retry = 0`` its ``_request`` tries once and raises :class:`APIError` for a 429 too."""
    if not hasattr(client, "_retry") or not hasattr(client, "_retry_codes"):
        raise TypeError("alpaca-py's RESTClient no longer has _retry/_retry_codes: check its retry loop")
    client._retry = 0  # type: ignore[attr-defined]
    client._retry_codes = []  # type: ignore[attr-defined]


class CircuitOpen(Unavailable):
    """The account's circuit breaker is open: the call was refused without a request."""


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive-failure circuit breaker of one account (thread-safe).

    ``failures``: consecutive failures that open it (>= 1). ``cooldown_s``: seconds it stays
    open before one trial call is let through. ``clock``: monotonic seconds.
    """

    def __init__(self, name: str, *, failures: int, cooldown_s: float,
                 clock: Callable[[], float] = time.monotonic):
        if failures < 1 or cooldown_s < 0:
            raise ValueError("breaker failures must be >= 1 and cooldown_s >= 0")
        self.name = name
        self._threshold, self._cooldown_s, self._clock = failures, cooldown_s, clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state

    def before(self) -> None:
        """Admit a call, or raise :class:`CircuitOpen` (open, or half-open with its trial in flight)."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return
            waited = self._clock() - self._opened_at
            if self._state is BreakerState.OPEN and waited >= self._cooldown_s:
                self._state = BreakerState.HALF_OPEN  # this call is the trial
                return
            half_open = self._state is BreakerState.HALF_OPEN
            left = max(0.0, self._cooldown_s - waited)
        then = "a trial call is in flight" if half_open else f"trying again in {left:.1f}s"
        raise CircuitOpen(f"Alpaca account {self.name!r} is unavailable: {self._threshold} calls in a row "
                          f"failed; {then}")

    def success(self) -> None:
        """Alpaca answered (any answer but 429/5xx): close the breaker."""
        with self._lock:
            if self._state is not BreakerState.CLOSED:
                log.info("alpaca account %s: circuit breaker closed", self.name)
            self._state, self._failures = BreakerState.CLOSED, 0

    def failure(self) -> None:
        """A call failed after its retries: count it; open at the threshold or after a failed trial."""
        with self._lock:
            self._failures += 1
            if self._state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
                if self._state is not BreakerState.OPEN:
                    log.warning("alpaca account %s: circuit breaker open for %gs after %d failed calls",
                                self.name, self._cooldown_s, self._failures)
                self._state, self._opened_at = BreakerState.OPEN, self._clock()


class TimeoutSession(requests.Session):
    """alpaca-py's clients send without a timeout: set as a client's ``_session``, every
    request it sends gets ``timeout_s`` (seconds; connect and read) unless it names one."""

    def __init__(self, timeout_s: float):
        super().__init__()
        self._timeout_s = timeout_s

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout_s)
        return super().request(method, url, *args, **kwargs)  # type: ignore[arg-type]
