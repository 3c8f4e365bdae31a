"""The registry of Kafka topics: the one place a topic is defined.

Each :class:`Topic` carries its name (``<domain>.<event>.v1``), its payload message type
(from ``proto/``), how the partition key and the CloudEvents subject are read from a
payload, and the OAuth ``client_id``\\ s allowed to publish it. Producers stage events with
``Outbox.add(session, TOPIC, message)`` (the payload type is checked, key and subject
derived); consumers declare ``{TOPIC: handler}`` and get the payload type and the
allowed producers from here. A new topic is one entry below.

A platform team's Kafka ACLs follow :func:`producer_acls`: one producer per topic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from bsopt.auth_server.v1 import events_pb2 as auth_events
from bsopt.broker_gateway.v1 import events_pb2 as broker_events
from bsopt.digest_worker.v1 import events_pb2 as digest_events
from bsopt.ml_scorer.v1 import events_pb2 as scorer_events
from bsopt.rl_trainer.v1 import events_pb2 as trainer_events

M = TypeVar("M", bound=Message)


@dataclass(frozen=True, eq=False)
class Topic(Generic[M]):
    """A Kafka topic and its contract."""

    name: str
    payload: type[M]
    key: Callable[[M], str]
    """Partition key of a payload: the aggregate id whose events must stay ordered."""
    subject: Callable[[M], str]
    """CloudEvents ``subject`` of a payload (``<collection>/<id>``)."""
    producers: frozenset[str]
    """OAuth client ids allowed to publish (consumers refuse anyone else's event)."""

    def __repr__(self) -> str:
        return f"Topic({self.name!r})"

    def __hash__(self) -> int:
        return hash(self.name)

    def check(self, message: Message) -> M:
        """``message`` if it is this topic's payload type; TypeError otherwise."""
        if not isinstance(message, self.payload):
            raise TypeError(f"{self.name} carries {self.payload.DESCRIPTOR.full_name}, "
                            f"not {type(message).__name__}")
        return message

    @property
    def dlq(self) -> str:
        """The dead-letter topic of this topic."""
        return dlq_topic(self.name)


def dlq_topic(name: str) -> str:
    return f"{name}.dlq"


def _topic(name: str, payload: type[M], key: Callable[[M], str], subject: Callable[[M], str],
           *producers: str) -> Topic[M]:
    return Topic(name, payload, key, subject, frozenset(producers))


TRAINING_REQUESTED = _topic(
    "training.requested.v1", trainer_events.TrainingRequested,
    lambda m: m.job_id, lambda m: f"jobs/{m.job_id}", "rl-trainer")
TRAINING_PROGRESS = _topic(
    "training.progress.v1", trainer_events.TrainingProgress,
    lambda m: m.job_id, lambda m: f"jobs/{m.job_id}", "rl-trainer")
TRAINING_COMPLETED = _topic(
    "training.completed.v1", trainer_events.TrainingCompleted,
    lambda m: m.job_id, lambda m: f"jobs/{m.job_id}", "rl-trainer")
TRADES_IMPORTED = _topic(
    "trades.imported.v1", broker_events.TradeImported,
    lambda m: m.user_id, lambda m: f"trades/{m.trade_id}", "broker-gateway")
TRADES_SCORED = _topic(
    "trades.scored.v1", scorer_events.TradeScored,
    lambda m: m.trade.user_id, lambda m: f"trades/{m.trade.trade_id}", "ml-scorer")
DIGESTS_READY = _topic(
    "digests.ready.v1", digest_events.DigestReady,
    lambda m: m.user_id, lambda m: f"digests/{m.digest_id}", "digest-worker")
#: broker-gateway's sell module: one event per position it decided to sell (stop-loss,
#: take-profit, close-all) and the outcome; keyed by the account, so its decisions stay ordered.
SELLS_DECIDED = _topic(
    "sells.decided.v1", broker_events.SellDecision,
    lambda m: m.account_id, lambda m: f"sell-decisions/{m.decision_id}", "broker-gateway")
#: broker-gateway's background trade imports (StartImport): one event when a job starts,
#: one per page read from the venue, one when it ends (done or failed); keyed by the user.
IMPORTS_PROGRESS = _topic(
    "imports.progress.v1", broker_events.ImportProgress,
    lambda m: m.user_id, lambda m: f"imports/{m.import_id}", "broker-gateway")
#: The authorization server's audit trail (``auth.audit_events``); keyed by the user, else
#: the client, else the event, so one subject's facts stay ordered.
AUTH_AUDIT = _topic(
    "auth.audit.v1", auth_events.AuditEvent,
    lambda m: m.user_id or m.client_id or m.audit_id, lambda m: f"audit-events/{m.audit_id}", "auth-server")

#: Every topic, by name.
TOPICS: Mapping[str, Topic[Any]] = {
    t.name: t for t in (
        TRAINING_REQUESTED, TRAINING_PROGRESS, TRAINING_COMPLETED, TRADES_IMPORTED, TRADES_SCORED, DIGESTS_READY,
        AUTH_AUDIT, SELLS_DECIDED, IMPORTS_PROGRESS,
    )
}


def producer_acls() -> dict[str, list[str]]:
    """``{topic: [client ids allowed to write]}``, for Kafka ACLs (and the docs)."""
    return {name: sorted(t.producers) for name, t in TOPICS.items()}
