"""The suite's shared domain vocabulary: enumerations that several services' domains
speak and that the contracts in ``proto/`` encode (see :mod:`bsopt_common.codec` for the
wire mapping). Pure Python: ``domain/`` packages import these.

Each member's *name* is its proto enum name without the type prefix (``Side.BUY`` <->
``SIDE_BUY``), so the codec needs no hand-written map. Values are what stores and JSON
hold; a ``StrEnum`` member compares equal to its value (``Side.BUY == "BUY"``).
"""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    """Side of an order or fill (``bsopt.broker_gateway.v1.Side``)."""

    BUY = "BUY"
    SELL = "SELL"


class BiasLabel(StrEnum):
    """Behavioural-bias tag of a scored trade (``bsopt.ml_scorer.v1.BiasLabel``), in
    display order."""

    FOMO = "FOMO"
    """Buying after a run-up (chasing)."""
    PANIC = "PANIC"
    """Selling into a sharp drop."""
    DISCIPLINE = "DISCIPLINE"
    """A trade that follows the plan against the crowd's emotion."""
    NONE = "NONE"
    """No bias rule fired."""


class JobStatus(StrEnum):
    """Lifecycle of a training job (``bsopt.rl_trainer.v1.JobStatus``):
    ``QUEUED -> RUNNING -> SUCCEEDED | FAILED``; ``QUEUED | RUNNING -> CANCELLED`` on the
    owner's request."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
