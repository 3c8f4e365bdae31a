"""The Alpaca activities pager's optional page callback: told after each page (pages and
in-window fills so far); without it the pager reads exactly as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bsopt_broker.adapters.alpaca.activities import alpaca_fills

START = datetime(2026, 11, 1, tzinfo=UTC)


def activity(i: int, at: datetime) -> dict[str, Any]:
    return {"id": f"{at:%Y%m%d%H%M%S}000::{i:08d}", "activity_type": "FILL", "transaction_time": at.isoformat(),
            "type": "fill", "price": "10", "qty": "1", "side": "buy", "symbol": "AAPL", "order_id": f"o-{i}"}


class Pages:
    """A RestClient answering ``pages`` in order (newest first, as Alpaca does)."""

    def __init__(self, pages: list[list[dict[str, Any]]]):
        self.pages = pages
        self.asked: list[dict[str, Any]] = []

    def get(self, path: str, data: Any = None, **kwargs: Any) -> Any:
        self.asked.append(dict(data))
        return self.pages[len(self.asked) - 1]


def month(n: int, outside: int = 0) -> list[list[dict[str, Any]]]:
    acts = [activity(i, START + timedelta(hours=i)) for i in range(n)]
    acts += [activity(n + i, START - timedelta(days=2, hours=i)) for i in range(outside)]  # before the window
    newest_first = sorted(acts, key=lambda a: a["transaction_time"], reverse=True)
    return [newest_first[i:i + 100] for i in range(0, len(newest_first), 100)] or [[]]


@pytest.mark.parametrize(("n", "outside", "expected"), [
    (250, 0, [(1, 100), (2, 200), (3, 250)]),
    (200, 3, [(1, 100), (2, 200), (3, 200)]),  # the last page: only fills outside the window
    (0, 0, [(1, 0)]),
])
def test_each_page_is_reported(n, outside, expected):
    told: list[tuple[int, int]] = []
    client = Pages(month(n, outside))
    fills = alpaca_fills(client, "acct", START - timedelta(days=3) + timedelta(days=2, hours=12),
                         START + timedelta(days=30), on_page=lambda pages, seen: told.append((pages, seen)))
    assert told == expected and len(fills) == n


def test_without_a_callback_nothing_changes():
    with_cb, without = Pages(month(250)), Pages(month(250))
    a = alpaca_fills(with_cb, "acct", START, START + timedelta(days=30), on_page=lambda *_: None)
    b = alpaca_fills(without, "acct", START, START + timedelta(days=30))
    assert a == b and with_cb.asked == without.asked and len(a) == 250


def test_a_raising_callback_stops_the_fetch():
    client = Pages(month(250))

    def stop(pages: int, seen: int) -> None:
        if pages == 2:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        alpaca_fills(client, "acct", START, START + timedelta(days=30), on_page=stop)
    assert len(client.asked) == 2
