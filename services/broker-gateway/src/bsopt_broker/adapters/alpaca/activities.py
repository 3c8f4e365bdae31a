"""An Alpaca account's executions: its ``FILL`` account activities, paged, as domain :class:`Fill`.

Source: Alpaca Trading API v2, "Account Activities"
(https://docs.alpaca.markets/reference/getaccountactivitiesbyactivitytype-1):
``GET /v2/account/activities/FILL`` with ``after``/``until`` (RFC 3339 timestamps),
``direction`` (``asc``/``desc``, default ``desc``), ``page_size`` (default and maximum
100) and ``page_token`` (the ``id`` of the last activity of the previous page). Each fill
activity is ``{"activity_type": "FILL", "id": "20220202135509981::2d7be4ff-...",
"transaction_time": RFC 3339, "type": "fill" | "partial_fill", "price", "qty", "side",
"symbol", "leaves_qty", "order_id", "cum_qty", "order_status"}`` (amounts as decimal strings).

alpaca-py 0.44 has no activities method on ``TradingClient`` (its ``TradeActivity`` model
also requires an ``account_id`` the Trading API does not send), so the pages are read
through the client's public REST helper ``client.get(path, params)``: same session,
keys, base URL and 429 retries as every other call of the client.

Normalisation: one :class:`Fill` per activity; ``trade_id`` = the activity id (Alpaca's
execution id, the dedupe key of imports), ``order_id`` = Alpaca's order id, so the partial
fills of one order are separate fills sharing an ``order_id``. ``fee`` is always 0 USD:
Alpaca's fill activities carry no commission (Alpaca charges none on equities; regulatory
pass-through fees such as TAF/SEC are separate ``FEE`` activities, not imported here).
Blocking; call from a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from alpaca.common.exceptions import APIError

from bsopt_broker.adapters.alpaca.guard import usd
from bsopt_broker.domain.records import Fill
from bsopt_common.errors import InvalidArgument, Unavailable
from bsopt_common.vocabulary import Side

#: Alpaca's maximum (and default) ``page_size`` of account activities.
PAGE_SIZE = 100
#: How far back an import reaches when no window is given.
DEFAULT_WINDOW = timedelta(days=30)
FILL_PATH = "/account/activities/FILL"
# The window sent to Alpaca is widened by this margin on both sides and the result cut
# to [start, end) here: whether Alpaca's after/until are strict does not matter then.
_MARGIN = timedelta(seconds=1)
_SIDES = {"buy": Side.BUY, "sell": Side.SELL, "sell_short": Side.SELL}


class RestClient(Protocol):
    """What is used of alpaca-py's ``TradingClient`` (``alpaca.common.rest.RESTClient.get``)."""

    def get(self, path: str, data: dict[str, Any] | str | None = None, **kwargs: Any) -> Any: ...


#: Runs one request (a thunk) and returns its result: the broker's retry policy and
#: circuit breaker (``AlpacaBroker._call``); by default the request as it is.
Call = Callable[[Callable[[], Any]], Any]


#: Told after each page read: ``(pages read so far, fills inside the window so far)``.
OnPage = Callable[[int, int], None]


def _direct(fn: Callable[[], Any]) -> Any:
    return fn()


class UnsupportedFill(InvalidArgument):
    """An Alpaca fill the domain cannot hold (a fractional quantity, an unknown side):
    the import is refused as a whole rather than importing part of an account."""


def default_window(now: datetime) -> tuple[datetime, datetime]:
    """The last 30 days as whole UTC days: ``[midnight of now's day - 30 days, next midnight)``.

    Whole days, so that every retry on the same UTC day asks for the same window (and
    gets the same import id, see :mod:`bsopt_broker.trade_import`)."""
    day = datetime.combine(now.astimezone(UTC).date(), time(0), UTC)
    return day - DEFAULT_WINDOW, day + timedelta(days=1)


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(raw: str) -> datetime:
    t = datetime.fromisoformat(raw)
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)


def fetch_fill_activities(client: RestClient, start: datetime, end: datetime, *,
                          page_size: int = PAGE_SIZE, call: Call = _direct,
                          on_page: OnPage | None = None) -> list[dict[str, Any]]:
    """Every ``FILL`` activity with ``start <= transaction_time < end``, as Alpaca's JSON
    dicts, newest first (Alpaca's order), all pages read; each page request goes through
    ``call`` (so a retry repeats one page, not the import). ``on_page`` (optional) is called
    after each page with the pages and in-window fills read so far; what it raises stops
    the fetch.

    Raises Unavailable when Alpaca answers an error status that ``call`` lets through
    (alpaca-py's ``APIError``) or a page does not advance; whatever ``call`` raises
    (without one, ``requests`` exceptions)."""
    if not 1 <= page_size <= PAGE_SIZE:
        raise InvalidArgument(f"page_size must be 1..{PAGE_SIZE}, got {page_size}")
    params: dict[str, Any] = {"after": _rfc3339(start - _MARGIN), "until": _rfc3339(end + _MARGIN),
                              "direction": "desc", "page_size": page_size}
    found: list[dict[str, Any]] = []
    pages = 0
    while True:
        try:
            page = call(lambda query=dict(params): client.get(FILL_PATH, query))
        except APIError as exc:
            raise Unavailable(f"Alpaca refused the account activities request ({exc.status_code}): "
                              f"{exc.message}") from exc
        if not isinstance(page, list):
            raise Unavailable(f"Alpaca answered the account activities request with {type(page).__name__}, "
                              "not a list")
        found.extend(a for a in page if a.get("activity_type", "FILL") == "FILL"
                     and start <= _parse_time(a["transaction_time"]) < end)
        pages += 1
        if on_page is not None:
            on_page(pages, len(found))
        if len(page) < page_size:
            return found
        last = str(page[-1]["id"])
        if last == params.get("page_token"):
            raise Unavailable(f"Alpaca's account activities did not advance past page token {last!r}")
        params["page_token"] = last


def fill_from_activity(activity: Mapping[str, Any], account_id: str) -> Fill:
    """One Alpaca ``FILL`` activity as a :class:`Fill` of ``account_id`` (prices in USD,
    fee 0 USD). Raises UnsupportedFill for a fractional or non-positive quantity or an
    unknown side, KeyError for a missing field."""
    trade_id = str(activity["id"])
    try:
        qty = Decimal(str(activity["qty"]))
    except InvalidOperation as exc:
        raise UnsupportedFill(f"Alpaca fill {trade_id}: quantity {activity['qty']!r} is not a number") from exc
    if qty <= 0 or qty != qty.to_integral_value():
        raise UnsupportedFill(f"Alpaca fill {trade_id}: quantity {qty} is not a whole number of shares "
                              "(fractional shares are not supported)")
    side = _SIDES.get(str(activity["side"]))
    if side is None:
        raise UnsupportedFill(f"Alpaca fill {trade_id}: unknown side {activity['side']!r}")
    return Fill(trade_id=trade_id, order_id=str(activity["order_id"]), account_id=account_id,
                symbol=str(activity["symbol"]), side=side, quantity=int(qty), price=usd(str(activity["price"])),
                fee=usd(0), executed_at=_parse_time(str(activity["transaction_time"])))


def alpaca_fills(client: RestClient, account_id: str, start: datetime | None = None, end: datetime | None = None,
                 *, page_size: int = PAGE_SIZE, now: datetime | None = None, call: Call = _direct,
                 on_page: OnPage | None = None) -> list[Fill]:
    """The fills of ``account_id`` executed in ``[start, end)``, oldest first (ties by
    trade id); without a window, :func:`default_window` (the last 30 days). ``on_page``:
    see :func:`fetch_fill_activities` (without one, nothing changes).

    Raises InvalidArgument for a window whose end is not after its start, UnsupportedFill,
    Unavailable (see :func:`fetch_fill_activities`)."""
    if start is None or end is None:
        default_start, default_end = default_window(now or datetime.now(UTC))
        start, end = start or default_start, end or default_end
    if not end > start:
        raise InvalidArgument(f"window end ({end.isoformat()}) must be after start ({start.isoformat()})")
    fills = [fill_from_activity(a, account_id)
             for a in fetch_fill_activities(client, start, end, page_size=page_size, call=call,
                                                  on_page=on_page)]
    fills.sort(key=lambda f: (f.executed_at, f.trade_id))
    return fills
