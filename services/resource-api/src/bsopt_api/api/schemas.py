"""Request and response bodies of ``/v1`` (pydantic). Requests reject unknown fields,
so a misspelt field is a 422, not a silently ignored default.

Money is ``{"amount": "<decimal string>", "currency": "<ISO 4217>"}`` (:class:`Money`);
other units are in the names (``_bps``: basis points); fractions are plain floats
(0.1 = 10 %); dates are ISO ``YYYY-MM-DD``; instants RFC 3339.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

# --- money ---------------------------------------------------------------------------------


class Money(BaseModel):
    """An exact amount and its currency. The amount is a decimal string (a number is
    accepted on input) with at most 9 decimals."""

    model_config = ConfigDict(extra="forbid")

    amount: Decimal = Field(max_digits=28, decimal_places=9, examples=["10000.00"])
    currency: str = Field(pattern=r"^[A-Z]{3}$", examples=["USD"])


class PositiveMoney(Money):
    amount: Decimal = Field(gt=0, max_digits=28, decimal_places=9, examples=["10000.00"])


# --- requests ------------------------------------------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainingJobCreate(_Request):
    """A PPO training job: train on ``[train_start, train_end]``, evaluate on
    ``[test_start, test_end]`` (inclusive ISO dates; the test window after the train
    window)."""

    symbol: str = Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9.^=\-]+$", examples=["GOOGL"])
    train_start: date
    train_end: date
    test_start: date
    test_end: date
    #: Bars in one observation.
    window_size: int = Field(16, ge=2, le=1024)
    #: PPO environment steps per model.
    total_timesteps: int = Field(gt=0, le=100_000_000)
    #: Cost of every position change, basis points of traded notional.
    transaction_cost_bps: float = Field(10.0, ge=0, le=10_000)
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _windows_in_order(self) -> TrainingJobCreate:
        if not self.train_start < self.train_end:
            raise ValueError("train_start must be before train_end")
        if not self.train_end < self.test_start:
            raise ValueError("test_start must be after train_end (no overlap of train and test windows)")
        if not self.test_start <= self.test_end:
            raise ValueError("test_start must not be after test_end")
        return self


#: Printable text: no control characters (NUL included), which no id contains.
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"


class PaperTradingRun(_Request):
    #: broker-gateway account (of the caller) that receives the orders.
    account_id: str = Field(min_length=1, max_length=255, pattern=PRINTABLE)


class AccountCreate(_Request):
    broker: Literal["paper"] = "paper"
    #: Starting cash of the paper account; its currency becomes the account's (USD only for paper).
    initial_cash: PositiveMoney


def _date_or_datetime(value: object) -> object:
    """ISO date ``YYYY-MM-DD`` -> that day's midnight UTC; anything else to pydantic."""
    if isinstance(value, str) and len(value) == 10:
        try:
            d = date.fromisoformat(value)
        except ValueError:
            return value
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 is after year 9999 in UTC
        raise ValueError("instant is out of range: in UTC it must lie within years 0001-9999") from None


#: An instant given as an ISO date (midnight UTC) or an RFC 3339 date-time (no offset = UTC).
Instant = Annotated[datetime, BeforeValidator(_date_or_datetime), AfterValidator(_utc)]


class TradesImportCreate(_Request):
    """Import the account's broker trades executed in the half-open window ``[start, end)``."""

    start: Instant
    end: Instant

    @model_validator(mode="after")
    def _window_not_empty(self) -> TradesImportCreate:
        if not self.start < self.end:
            raise ValueError("start must be before end (the window [start, end) is empty)")
        return self


# --- responses -----------------------------------------------------------------------------


class Me(BaseModel):
    sub: str
    client_id: str
    scopes: list[str]


class TrainingJobSpec(BaseModel):
    symbol: str
    train_start: str
    train_end: str
    test_start: str
    test_end: str
    window_size: int
    total_timesteps: int
    transaction_cost_bps: float
    seed: int


class EvaluationMetrics(BaseModel):
    #: Compounded return over the test window, fraction.
    total_return: float
    #: Annualised Sharpe ratio of daily returns (252 days, zero risk-free rate); null
    #: when undefined, with the reason in ``sharpe_undefined_reason``.
    sharpe: float | None = None
    sharpe_undefined_reason: str | None = None
    #: Largest peak-to-trough fall of equity, fraction (positive).
    max_drawdown: float
    #: Number of position changes.
    trades: int


class TrainingResults(BaseModel):
    model: str
    window: int
    timesteps: int
    #: Wall-clock training time of the agent, seconds.
    seconds: float
    agent: EvaluationMetrics
    mlp_baseline: EvaluationMetrics
    buy_and_hold: EvaluationMetrics
    checkpoint_uri: str


class TrainingJob(BaseModel):
    job_id: str
    #: "queued", "running", "succeeded", "failed" or "cancelled".
    status: str
    #: Fraction of timesteps done, 0..1.
    progress: float
    #: The owner cancelled the job while it ran; it becomes "cancelled" within seconds.
    cancel_requested: bool
    spec: TrainingJobSpec
    results: TrainingResults | None
    error: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None


class PaperTradingResult(BaseModel):
    orders: int
    fills: int
    rejected: int
    #: Cash + position at the last test bar's close.
    final_equity: Money


class Position(BaseModel):
    symbol: str
    quantity: int
    average_price: Money


class Account(BaseModel):
    account_id: str
    broker: str
    #: ``"paper"`` (simulated money) or ``"live"`` (real money): the built-in paper broker is
    #: always paper; an Alpaca account is what broker-gateway detected. Null if not reported.
    account_kind: str | None
    #: Free cash; its currency is the account's currency.
    cash: Money
    positions: list[Position]
    created_at: str | None


class OrderTiming(BaseModel):
    """An order's path through broker-gateway (issue 8 §3)."""

    received_at: str | None
    balance_checked_ms: float | None
    sent_ms: float | None
    acknowledged_ms: float | None
    filled_ms: float | None


class Order(BaseModel):
    """An order of one account (``GET /v1/accounts/{id}/orders``)."""

    #: The broker's order id.
    order_id: str
    #: The caller's idempotency key; null where the broker does not report it (Alpaca
    #: orders read from its fills).
    client_order_id: str | None
    account_id: str
    #: ``"paper"`` (simulated money) or ``"live"`` (real money): the kind of the account.
    account_kind: str | None
    symbol: str
    #: ``"buy"`` or ``"sell"``.
    side: str
    quantity: int
    #: ``"filled"`` or ``"rejected"``.
    status: str
    #: Why it was rejected; null unless ``rejected``.
    reject_reason: str | None
    #: Shares filled, their volume-weighted average price and the commissions (null when
    #: nothing filled).
    filled_quantity: int
    average_price: Money | None
    fee: Money | None
    submitted_at: str | None
    filled_at: str | None
    #: ``filled_at - submitted_at``, milliseconds; null when not measured.
    fill_latency_ms: float | None
    #: Alpaca orders placed through bsopt: when the order was received and the
    #: milliseconds (monotonic clock) to each later step; null otherwise.
    timing: OrderTiming | None = None


class OrderPage(BaseModel):
    """Newest first; ``next_page_token`` (null on the last page) gives the next page."""

    orders: list[Order]
    next_page_token: str | None


class Fill(BaseModel):
    """An execution of one account (``GET /v1/accounts/{id}/fills``)."""

    #: The broker's trade id.
    trade_id: str
    #: The broker's order id.
    order_id: str
    #: The order's idempotency key, where known.
    client_order_id: str | None
    account_id: str
    #: ``"paper"`` or ``"live"``: the kind of the account.
    account_kind: str | None
    symbol: str
    #: ``"buy"`` or ``"sell"``.
    side: str
    quantity: int
    #: Execution price per share.
    price: Money | None
    #: Commission, where the broker reports one.
    fee: Money | None
    executed_at: str | None


class FillPage(BaseModel):
    """Newest first; ``next_page_token`` (null on the last page) gives the next page."""

    fills: list[Fill]
    next_page_token: str | None


class TradesImport(BaseModel):
    import_id: str
    trades_imported: int
    duplicates_skipped: int


class TradesImportJob(BaseModel):
    """A background import (``Prefer: respond-async``): one per (user, account, window)."""

    #: The import id (the same as a synchronous import of the window answers).
    import_id: str
    account_id: str
    #: ``"paper"`` or ``"alpaca"``.
    broker: str
    #: ``"queued"``, ``"running"``, ``"done"`` or ``"failed"``.
    status: str
    start: str | None
    end: str | None
    #: Pages read from the broker so far (Alpaca: 100 fills a page).
    pages_fetched: int
    #: Fills inside the window read so far.
    fills_seen: int
    #: Final once ``done`` (0 before).
    trades_imported: int
    duplicates_skipped: int
    #: Why it failed; null unless ``failed`` (posting the same window again retries it).
    error: str | None
    #: How many times it was started.
    attempts: int
    #: ``"paper"`` or ``"live"``; null until the first page was read.
    account_kind: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None


class TradeFeatures(BaseModel):
    rsi_14: float
    atr_14: float
    bollinger_position: float
    change_1d: float
    change_5d: float
    close_usd: float


class ScoredTrade(BaseModel):
    trade_id: str
    account_id: str
    symbol: str
    #: "buy" or "sell".
    side: str
    quantity: int
    price: Money
    executed_at: str | None
    #: "FOMO", "PANIC", "DISCIPLINE" or "NONE".
    label: str
    explanation: str
    reflection: str
    features: TradeFeatures
    scored_at: str | None


class Digest(BaseModel):
    digest_id: str
    period_start: str
    period_end: str
    trades: int
    label_counts: dict[str, int]
    #: Sells minus buys of the week.
    net_cash_flow: Money
    summary: str
    version: int
    updated_at: str | None
