"""Embedded Kafka-protocol broker: librdkafka's mock cluster, driven through ctypes.

The ``confluent-kafka`` wheel bundles librdkafka, whose mock cluster
(``rd_kafka_mock_cluster_new``, see librdkafka ``src/rdkafka_mock.h``) is an
in-memory broker that speaks the Kafka wire protocol on 127.0.0.1 (an ephemeral
port per broker). Any Kafka client can use it: aiokafka, confluent-kafka, kcat.

What the mock cluster does and does not do (measured against librdkafka 2.16):

* produce/fetch with keys, headers and batches; consumer groups with
  FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit and
  OffsetFetch, so committed offsets survive a consumer and are resumed by the next
  member of the same group;
* **topic auto-creation**: a Metadata request that names an unknown topic creates it
  (aiokafka's producer and consumer and confluent-kafka's ``list_topics(topic=...)``
  all send one before producing or fetching) with **4 partitions**, the mock
  cluster's fixed default, replication factor ``min(3, brokers)``. Create topics up
  front (:meth:`EmbeddedKafka.create_topic`, :func:`ensure_topics`) when the
  partition count matters;
* **no CreateTopics API**: admin clients get UNSUPPORTED_FEATURE (confluent-kafka)
  or IncompatibleBrokerVersion (aiokafka 0.14). Only the process holding the
  cluster handle can create a topic with a chosen partition count;
* a second consumer joining a group that already has a live member fails at
  SyncGroup (INVALID_REQUEST), so consumer-group *rebalancing* needs a real Kafka
  (tests marked ``kafka_group``);
* after the last member leaves a group (LeaveGroup), the next JoinGroup is answered
  only when the rebalance started by the leave times out, i.e. after about the
  leaver's ``session_timeout_ms`` (aiokafka default 10 s): use a short session
  timeout for consumers that restart against the mock. The first rebalance of a
  new group is immediate (``group.initial.rebalance.delay.ms`` is set to 0 here;
  Kafka's default is 3 s);
* everything is in memory and lost on :meth:`EmbeddedKafka.close`.

The cluster runs on librdkafka's own threads: the process only has to keep the
handle alive (no polling), which is what ``python -m bsopt_common.embedded.kafka``
does for a dev runner.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import glob
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterable
from functools import lru_cache
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

log = logging.getLogger(__name__)

RD_KAFKA_PRODUCER = 0
RD_KAFKA_RESP_ERR_NO_ERROR = 0
RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS = 36
MOCK_AUTO_CREATE_PARTITIONS = 4
"""Partitions of a topic the mock cluster creates on a Metadata request (fixed in librdkafka)."""

_ERRSTR_SIZE = 512


class EmbeddedKafkaError(RuntimeError):
    """librdkafka could not be loaded, or a mock-cluster call failed."""


def _candidate_library_paths() -> list[str]:
    import confluent_kafka

    pkg = os.path.dirname(os.path.abspath(confluent_kafka.__file__))
    site = os.path.dirname(pkg)
    dirs = [
        os.path.join(site, "confluent_kafka.libs"),  # auditwheel (manylinux)
        pkg,
        os.path.join(pkg, ".libs"),
        os.path.join(pkg, ".dylibs"),  # delocate (macOS)
        site,
    ]
    paths: list[str] = []
    for d in dirs:
        for pattern in ("librdkafka*.so*", "librdkafka*.dylib", "librdkafka*.dll"):
            paths.extend(sorted(glob.glob(os.path.join(d, pattern))))
    if found := ctypes.util.find_library("rdkafka"):
        paths.append(found)
    return paths


@lru_cache(maxsize=1)
def _librdkafka() -> ctypes.CDLL:
    """Load the librdkafka that confluent-kafka itself uses and declare the C signatures.

    ``BSOPT_LIBRDKAFKA`` (a file path) overrides the search. Raises
    :class:`EmbeddedKafkaError` when no librdkafka with the mock-cluster API is found.
    """
    override = os.environ.get("BSOPT_LIBRDKAFKA")
    candidates = [override] if override else _candidate_library_paths()
    lib = None
    for path in candidates:
        try:
            candidate = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(candidate, "rd_kafka_mock_cluster_new"):
            lib = candidate
            break
    if lib is None:
        raise EmbeddedKafkaError(
            f"no librdkafka with the mock-cluster API found (tried {candidates}); "
            "install confluent-kafka>=2.4 or set BSOPT_LIBRDKAFKA"
        )
    vp, cp, ci, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t
    signatures: dict[str, tuple[object, list[object]]] = {
        "rd_kafka_version_str": (cp, []),
        "rd_kafka_conf_new": (vp, []),
        "rd_kafka_conf_set": (ci, [vp, cp, cp, cp, sz]),
        "rd_kafka_conf_destroy": (None, [vp]),
        "rd_kafka_new": (vp, [ci, vp, cp, sz]),
        "rd_kafka_destroy": (None, [vp]),
        "rd_kafka_err2str": (cp, [ci]),
        "rd_kafka_mock_cluster_new": (vp, [vp, ci]),
        "rd_kafka_mock_cluster_bootstraps": (cp, [vp]),
        "rd_kafka_mock_cluster_destroy": (None, [vp]),
        "rd_kafka_mock_topic_create": (ci, [vp, cp, ci, ci]),
        "rd_kafka_mock_set_controller_id": (ci, [vp, ci]),
        "rd_kafka_mock_group_initial_rebalance_delay_ms": (None, [vp, ctypes.c_int32]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def librdkafka_version() -> str:
    """Version string of the librdkafka that provides the mock cluster, e.g. ``"2.16.0"``."""
    return _librdkafka().rd_kafka_version_str().decode()


# Clusters started in this process, by bootstrap string, so ensure_topics can use the
# handle (the mock cluster has no CreateTopics API).
_RUNNING: dict[str, EmbeddedKafka] = {}
_RUNNING_LOCK = threading.Lock()


class EmbeddedKafka:
    """An in-memory Kafka-protocol cluster on 127.0.0.1 (librdkafka mock cluster).

    Usage::

        with EmbeddedKafka() as kafka:          # starts one broker
            kafka.create_topic("orders", partitions=2)
            producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)

    Not a durable broker: data lives in this process's memory until :meth:`close`.
    Methods are thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rk: int | None = None
        self._mcluster: int | None = None
        self._bootstrap: str | None = None
        self._n_brokers = 0

    def start(self, n_brokers: int = 1) -> str:
        """Start ``n_brokers`` brokers (each on its own ephemeral 127.0.0.1 port).

        Returns the bootstrap string ``"127.0.0.1:PORT[,127.0.0.1:PORT...]"``.
        Raises ``ValueError`` for ``n_brokers < 1``, ``RuntimeError`` if already
        started, :class:`EmbeddedKafkaError` if librdkafka fails.
        """
        if n_brokers < 1:
            raise ValueError(f"n_brokers must be >= 1, got {n_brokers}")
        lib = _librdkafka()
        with self._lock:
            if self._mcluster is not None:
                raise RuntimeError("EmbeddedKafka already started")
            conf = lib.rd_kafka_conf_new()
            errstr = ctypes.create_string_buffer(_ERRSTR_SIZE)
            # The parent handle has no bootstrap.servers on purpose; silence its
            # CONFWARN notice (level 5) but keep warnings and errors.
            if lib.rd_kafka_conf_set(conf, b"log_level", b"4", errstr, _ERRSTR_SIZE) != 0:
                lib.rd_kafka_conf_destroy(conf)
                raise EmbeddedKafkaError(f"rd_kafka_conf_set(log_level): {errstr.value.decode()}")
            rk = lib.rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, _ERRSTR_SIZE)
            if not rk:  # on failure conf is still ours
                lib.rd_kafka_conf_destroy(conf)
                raise EmbeddedKafkaError(f"rd_kafka_new: {errstr.value.decode()}")
            mcluster = lib.rd_kafka_mock_cluster_new(rk, n_brokers)
            if not mcluster:
                lib.rd_kafka_destroy(rk)
                raise EmbeddedKafkaError("rd_kafka_mock_cluster_new returned NULL")
            # Brokers are numbered 1..n; without this the cluster advertises a
            # controller that does not exist and admin clients wait for it until
            # they time out, instead of failing fast with UNSUPPORTED_FEATURE.
            lib.rd_kafka_mock_set_controller_id(mcluster, 1)
            # Kafka waits group.initial.rebalance.delay.ms (3 s) before the first
            # rebalance of a new group; the mock does too unless told otherwise.
            lib.rd_kafka_mock_group_initial_rebalance_delay_ms(mcluster, 0)
            bootstrap = lib.rd_kafka_mock_cluster_bootstraps(mcluster).decode()
            self._rk, self._mcluster, self._bootstrap = rk, mcluster, bootstrap
            self._n_brokers = n_brokers
        with _RUNNING_LOCK:
            _RUNNING[bootstrap] = self
        log.info("embedded Kafka (librdkafka %s mock cluster) on %s", librdkafka_version(), bootstrap)
        return bootstrap

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:PORT,..."``; raises ``RuntimeError`` before :meth:`start`."""
        if self._bootstrap is None:
            raise RuntimeError("EmbeddedKafka not started")
        return self._bootstrap

    @property
    def running(self) -> bool:
        return self._mcluster is not None

    def create_topic(self, name: str, partitions: int = 1, replication_factor: int = 1) -> bool:
        """Create ``name`` with ``partitions`` partitions.

        Returns True if created, False if it already existed (its partition count is
        left unchanged). ``replication_factor`` is capped at the broker count. Raises
        ``RuntimeError`` before :meth:`start`, ``ValueError`` for ``partitions < 1``,
        :class:`EmbeddedKafkaError` for any other librdkafka error.
        """
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        lib = _librdkafka()
        with self._lock:
            if self._mcluster is None:
                raise RuntimeError("EmbeddedKafka not started")
            rf = max(1, min(replication_factor, self._n_brokers))
            err = lib.rd_kafka_mock_topic_create(self._mcluster, name.encode(), partitions, rf)
        if err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS:
            return False
        if err != RD_KAFKA_RESP_ERR_NO_ERROR:
            raise EmbeddedKafkaError(f"create topic {name!r}: {lib.rd_kafka_err2str(err).decode()}")
        return True

    def close(self) -> None:
        """Destroy the cluster (closing its listeners and dropping all data), then the
        parent librdkafka handle. Idempotent."""
        with self._lock:
            mcluster, rk, bootstrap = self._mcluster, self._rk, self._bootstrap
            self._mcluster = self._rk = None
        if bootstrap is not None:
            with _RUNNING_LOCK:
                if _RUNNING.get(bootstrap) is self:
                    del _RUNNING[bootstrap]
        if mcluster:
            _librdkafka().rd_kafka_mock_cluster_destroy(mcluster)
        if rk:
            _librdkafka().rd_kafka_destroy(rk)

    def __enter__(self) -> EmbeddedKafka:
        """Start one broker unless already started."""
        if self._mcluster is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmbeddedKafka(bootstrap_servers={self._bootstrap!r}, running={self.running})"


def held_cluster(bootstrap: str) -> EmbeddedKafka | None:
    """The running :class:`EmbeddedKafka` of this process with this bootstrap string, if any."""
    with _RUNNING_LOCK:
        return _RUNNING.get(bootstrap)


def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int = 1,
    *,
    replication_factor: int = -1,
    timeout_seconds: float = 15.0,
) -> dict[str, int]:
    """Make sure every topic in ``topics`` exists; return ``{topic: partition count}``.

    * an :class:`EmbeddedKafka` started in this process (matched by ``bootstrap``):
      created through the mock-cluster handle with ``partitions`` partitions;
    * a real Kafka: CreateTopics through ``confluent_kafka.admin.AdminClient``
      (``replication_factor=-1`` means the broker's ``default.replication.factor``,
      Kafka >= 2.4); TOPIC_ALREADY_EXISTS is not an error;
    * a mock cluster in another process (no CreateTopics API, the admin client gets
      UNSUPPORTED_FEATURE): the topic is auto-created by a Metadata request and gets
      :data:`MOCK_AUTO_CREATE_PARTITIONS` partitions whatever ``partitions`` says
      (a warning is logged); pre-create such topics with ``--topic NAME:PARTITIONS``
      on ``python -m bsopt_common.embedded.kafka``.

    An existing topic keeps its partition count. Raises
    ``confluent_kafka.KafkaException`` on any other broker error or when the topics
    are not visible in metadata within ``timeout_seconds``.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    names = list(dict.fromkeys(topics))
    if not names:
        return {}
    if (held := held_cluster(bootstrap)) is not None:
        for name in names:
            held.create_topic(name, partitions, replication_factor if replication_factor > 0 else 1)
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    auto_created: list[str] = []
    if held is None:
        futures = admin.create_topics(
            [NewTopic(n, partitions, replication_factor) for n in names],
            request_timeout=timeout_seconds,
            operation_timeout=timeout_seconds,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=timeout_seconds + 5)
            except KafkaException as exc:
                code = exc.args[0].code()
                if code == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                if code == KafkaError._UNSUPPORTED_FEATURE:
                    auto_created.append(name)  # the metadata request below auto-creates it
                    continue
                raise
    counts = _wait_for_topics(admin, names, timeout_seconds)
    for name in auto_created:
        if counts[name] != partitions:
            log.warning(
                "broker %s has no CreateTopics API (librdkafka mock cluster in another process?): "
                "topic %r has %d partitions, not the %d asked for",
                bootstrap, name, counts[name], partitions,
            )
    return counts


def _wait_for_topics(admin: AdminClient, names: list[str], timeout_seconds: float) -> dict[str, int]:
    """Poll metadata until every topic has a leader for each partition."""
    import time

    from confluent_kafka import KafkaError, KafkaException

    deadline = time.monotonic() + timeout_seconds
    counts: dict[str, int] = {}
    while True:
        for name in names:
            if name in counts:
                continue
            # A Metadata request naming the topic; brokers that auto-create topics
            # (the mock cluster always does) create it here.
            md = admin.list_topics(topic=name, timeout=max(1.0, deadline - time.monotonic()))
            t = md.topics.get(name)
            if t is not None and t.error is None and t.partitions and all(
                p.leader >= 0 for p in t.partitions.values()
            ):
                counts[name] = len(t.partitions)
        if len(counts) == len(names):
            return counts
        if time.monotonic() > deadline:
            missing = [n for n in names if n not in counts]
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"topics not ready: {missing}"))
        time.sleep(0.1)


def _parse_topic(spec: str) -> tuple[str, int]:
    name, _, parts = spec.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"bad topic spec {spec!r}, expected NAME[:PARTITIONS]")
    try:
        return name, int(parts) if parts else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad partition count in {spec!r}") from None


def main(argv: list[str] | None = None) -> int:
    """``python -m bsopt_common.embedded.kafka``: run a broker until SIGINT/SIGTERM.

    Prints the bootstrap string as the first line of stdout (flushed), then blocks;
    exits 0 after a signal, having closed the cluster.
    """
    parser = argparse.ArgumentParser(
        prog="python -m bsopt_common.embedded.kafka",
        description="Run an in-memory Kafka-protocol broker (librdkafka mock cluster) on 127.0.0.1 "
        "until SIGINT/SIGTERM. Prints the bootstrap string on the first line of stdout.",
    )
    parser.add_argument("--brokers", type=int, default=1, help="number of brokers (default 1)")
    parser.add_argument(
        "--topic", action="append", type=_parse_topic, default=[], metavar="NAME[:PARTITIONS]",
        help="create a topic up front (repeatable; default 1 partition). Topics created later "
        f"by clients get {MOCK_AUTO_CREATE_PARTITIONS} partitions.",
    )
    parser.add_argument("--bootstrap-file", help="also write the bootstrap string to this file")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")

    kafka = EmbeddedKafka()
    kafka.start(args.brokers)
    try:
        for name, partitions in args.topic:
            kafka.create_topic(name, partitions)
        if args.bootstrap_file:
            with open(args.bootstrap_file, "w") as fh:
                fh.write(kafka.bootstrap_servers + "\n")
        print(kafka.bootstrap_servers, flush=True)
        while not stop.wait(0.5):
            pass
        log.info("signal received, stopping embedded Kafka on %s", kafka.bootstrap_servers)
    finally:
        kafka.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
