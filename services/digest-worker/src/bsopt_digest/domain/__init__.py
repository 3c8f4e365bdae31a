"""Pure domain logic of the digest worker: weekly digests of scored trades.

No Kafka or protobuf imports; amounts are :class:`bsopt_common.money.Money`.
:class:`WeeklyDigest` maps onto ``bsopt.digest_worker.v1.DigestReady`` (see
:mod:`bsopt_digest.domain.digest`).
"""

from bsopt_digest.domain.digest import (
    BIAS_LABELS,
    CURRENCY_SYMBOLS,
    DIGEST_NAMESPACE,
    LABELS,
    ScoredTradeRecord,
    WeeklyDigest,
    build_weekly_digests,
    digest_id,
    format_money,
    iso_week,
)

__all__ = [
    "BIAS_LABELS",
    "CURRENCY_SYMBOLS",
    "DIGEST_NAMESPACE",
    "LABELS",
    "ScoredTradeRecord",
    "WeeklyDigest",
    "build_weekly_digests",
    "digest_id",
    "format_money",
    "iso_week",
]
