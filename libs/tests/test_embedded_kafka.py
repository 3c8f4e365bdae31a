"""The embedded Kafka-compatible broker (Tansu, a child process) and the ``kafka_bootstrap``
fixture, exercised with aiokafka, the client the services use.

The consumer-group and topic tests run against whatever ``kafka_bootstrap`` resolves to
(a real Kafka when ``TEST_KAFKA_BOOTSTRAP_SERVERS`` is set), with the consumer timeouts
of ``kafka_group_settings``; the rest test the launcher itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from bsopt_common.embedded.kafka import (
    AUTO_CREATE_PARTITIONS,
    FAST_GROUP_SETTINGS,
    BrokerStartError,
    EmbeddedKafka,
    ensure_topics,
    ensure_topics_async,
    group_settings,
    port_is_free,
    running_broker,
)

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _port(bootstrap: str) -> int:
    host, port = bootstrap.rsplit(":", 1)
    assert host == "127.0.0.1", bootstrap
    return int(port)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still "exists": look at its state.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


async def _cluster(bootstrap: str) -> dict:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await admin.describe_cluster()
    finally:
        await admin.close()


def _consumer(bootstrap: str, topic: str, group: str, settings: dict[str, int]) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", **settings,
    )


async def _collect(consumer: AIOKafkaConsumer, n: int, timeout: float = 30.0) -> list[ConsumerRecord]:
    got: list[ConsumerRecord] = []

    async def _loop() -> None:
        while len(got) < n:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                got.extend(records)

    await asyncio.wait_for(_loop(), timeout)
    return got


async def _nothing_more(consumer: AIOKafkaConsumer, seconds: float = 0.5) -> list[ConsumerRecord]:
    batches = await consumer.getmany(timeout_ms=int(seconds * 1000))
    return [r for records in batches.values() for r in records]


# --------------------------------------------------------------------- the launcher


async def test_start_answers_metadata_and_close_kills_the_child_and_frees_the_port(tmp_path) -> None:
    kafka = EmbeddedKafka(log_path=tmp_path / "tansu.log")
    with pytest.raises(RuntimeError):
        _ = kafka.bootstrap_servers
    bootstrap = kafka.start()
    try:
        assert bootstrap == kafka.bootstrap_servers == f"127.0.0.1:{kafka.port}"
        port, proc = _port(bootstrap), kafka.process
        pid = proc.pid
        assert kafka.running and _alive(pid)
        assert running_broker(bootstrap) is kafka
        assert group_settings(bootstrap) == FAST_GROUP_SETTINGS
        cluster = await _cluster(bootstrap)
        assert [(b["host"], b["port"]) for b in cluster["brokers"]] == [("127.0.0.1", port)]
        with pytest.raises(RuntimeError, match="already started"):
            kafka.start()
    finally:
        kafka.close()
    kafka.close()  # idempotent
    assert not kafka.running
    assert proc.returncode is not None  # terminated and reaped by close()
    assert not _alive(pid)
    assert running_broker(bootstrap) is None and group_settings(bootstrap) == {}
    assert not _accepts(port) and port_is_free(port)
    assert "tansu" in (tmp_path / "tansu.log").read_text().lower()


async def test_restarts_on_the_same_port_and_storage_is_memory_only() -> None:
    topic = _unique("kept")
    with EmbeddedKafka() as kafka:
        port = kafka.port
        assert await ensure_topics_async(kafka.bootstrap_servers, [topic], 3) == {topic: 3}
    with EmbeddedKafka(port) as again:  # the port was freed; nothing of the old broker is left
        assert again.port == port
        admin = AIOKafkaAdminClient(bootstrap_servers=again.bootstrap_servers)
        await admin.start()
        try:
            assert topic not in await admin.list_topics()
        finally:
            await admin.close()


def test_port_in_use_is_refused() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        kafka = EmbeddedKafka(port)
        with pytest.raises(BrokerStartError, match="in use"):
            kafka.start()
        assert not kafka.running


_PARENT = textwrap.dedent("""
    import sys, time
    from bsopt_common.embedded.kafka import EmbeddedKafka
    kafka = EmbeddedKafka()
    kafka.start()
    print(kafka.process.pid, kafka.bootstrap_servers, flush=True)
    time.sleep(600)
""")


@linux_only
def test_broker_dies_with_its_parent() -> None:
    """No orphan: SIGKILL of the process that started the broker takes the broker down."""
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline().split() if parent.stdout else []
        assert len(line) == 2, f"parent printed {line!r}"
        pid, port = int(line[0]), _port(line[1])
        assert _alive(pid) and _accepts(port)
    finally:
        parent.kill()
        parent.wait()
    assert _wait_gone(pid), f"Tansu (pid {pid}) outlived its parent"
    assert not _accepts(port)


def _spawn_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bsopt_common.embedded.kafka", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline().strip() if proc.stdout else ""
    if not line:
        proc.kill()
        raise AssertionError(f"broker process printed no bootstrap: {proc.communicate(timeout=10)}")
    return proc, line


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_python_m_prints_bootstrap_serves_clients_and_stops_on_signal(sig: signal.Signals) -> None:
    proc, bootstrap = _spawn_cli("--topic", "prices:3", "--topic", "single")
    try:
        port = _port(bootstrap)
        assert running_broker(bootstrap) is None  # another process's broker
        counts = await ensure_topics_async(bootstrap, ["prices", "single", "later"], 2)
        assert counts == {"prices": 3, "single": 1, "later": 2}

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for p in range(3):
                await producer.send_and_wait("prices", f"p{p}".encode(), partition=p)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer("prices", bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        try:
            got = await _collect(consumer, 3)
        finally:
            await consumer.stop()
        assert sorted((r.partition, r.value) for r in got) == [(0, b"p0"), (1, b"p1"), (2, b"p2")]
    finally:
        proc.send_signal(sig)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0, proc.stderr.read() if proc.stderr else ""
    assert not _accepts(port)  # the Tansu child went with it


# -------------------------------------------------------- topics on kafka_bootstrap


async def test_ensure_topics_creates_once_and_reports_real_partition_counts(kafka_bootstrap: str) -> None:
    a, b, c = _unique("a"), _unique("b"), _unique("c")
    assert await ensure_topics_async(kafka_bootstrap, [a, b, b], 3) == {a: 3, b: 3}
    # Existing topics keep their count; only the new one gets the count asked for.
    assert await ensure_topics_async(kafka_bootstrap, [a, c], 5) == {a: 3, c: 5}
    # The blocking form also works from inside a running event loop.
    assert ensure_topics(kafka_bootstrap, [b, c]) == {b: 3, c: 5}
    assert ensure_topics(kafka_bootstrap, []) == {}
    with pytest.raises(ValueError):
        ensure_topics(kafka_bootstrap, [_unique("bad")], 0)


def test_kafka_topics_fixture(kafka_topics) -> None:
    name = _unique("fixture")
    assert kafka_topics(name, partitions=2) == {name: 2}
    assert kafka_topics([name]) == {name: 2}


async def test_named_topics_are_auto_created_with_four_partitions(kafka_bootstrap: str) -> None:
    if running_broker(kafka_bootstrap) is None:
        pytest.skip("auto-creation defaults are the embedded broker's")
    topic = _unique("never-created")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        assert (await producer.send_and_wait(topic, b"v")).offset == 0
        assert producer.client.cluster.partitions_for_topic(topic) == set(range(AUTO_CREATE_PARTITIONS))
    finally:
        await producer.stop()


async def test_idempotent_producer_is_not_supported_by_the_embedded_broker(kafka_bootstrap: str) -> None:
    """Documents a Tansu limitation (InitProducerId answers UnknownError); if this starts
    failing, Tansu gained idempotent producers: update the module docstring."""
    if running_broker(kafka_bootstrap) is None:
        pytest.skip("a limitation of the embedded broker only")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    try:
        with pytest.raises(KafkaError):
            await producer.start()
            await asyncio.wait_for(producer.send_and_wait(_unique("idem"), b"v"), 15)
    finally:
        await producer.stop()


# ---------------------------------------------- consumer groups through kafka_bootstrap


async def test_manual_commit_resume_and_redelivery(kafka_bootstrap: str, kafka_topics, kafka_group_settings) -> None:
    """Keys and headers round-trip; a new member of the group resumes after the committed
    offset (no re-read of committed records) and gets the uncommitted ones again."""
    topic, group = _unique("orders"), _unique("group")
    assert kafka_topics([topic]) == {topic: 1}
    tp = TopicPartition(topic, 0)
    settings = kafka_group_settings

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(6):
            await producer.send_and_wait(
                topic, f"value-{i}".encode(), key=f"key-{i}".encode(),
                headers=[("trace-id", f"t{i}".encode()), ("schema", b"v1")],
            )

        first = _consumer(kafka_bootstrap, topic, group, settings)
        await first.start()
        try:
            records = await _collect(first, 6)
            assert [r.offset for r in records] == list(range(6))
            assert [(r.key, r.value) for r in records] == [
                (f"key-{i}".encode(), f"value-{i}".encode()) for i in range(6)
            ]
            assert [list(r.headers) for r in records] == [
                [("trace-id", f"t{i}".encode()), ("schema", b"v1")] for i in range(6)
            ]
            # Processed 0..2 only: commit the offset of the next record to read.
            await first.commit({tp: records[2].offset + 1})
            assert await first.committed(tp) == 3
        finally:
            await first.stop()

        second = _consumer(kafka_bootstrap, topic, group, settings)
        await second.start()
        try:
            redelivered = await _collect(second, 3)
            assert [(r.offset, r.value) for r in redelivered] == [
                (i, f"value-{i}".encode()) for i in range(3, 6)
            ]
            assert await _nothing_more(second) == []
            await second.commit()  # everything consumed so far: offset 6
            assert await second.committed(tp) == 6
        finally:
            await second.stop()

        await producer.send_and_wait(topic, b"value-6", key=b"key-6")
        third = _consumer(kafka_bootstrap, topic, group, settings)
        await third.start()
        try:
            fresh = await _collect(third, 1)
            assert [(r.offset, r.value) for r in fresh] == [(6, b"value-6")]
            assert await _nothing_more(third) == []
        finally:
            await third.stop()
    finally:
        await producer.stop()


async def test_other_group_reads_from_the_beginning(kafka_bootstrap: str, kafka_topics, kafka_group_settings) -> None:
    topic = _unique("fills")
    kafka_topics([topic])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, str(i).encode(), key=b"k")
    finally:
        await producer.stop()
    for group in (_unique("a"), _unique("b")):
        consumer = _consumer(kafka_bootstrap, topic, group, kafka_group_settings)
        await consumer.start()
        try:
            got = await _collect(consumer, 3)
            await consumer.commit()
        finally:
            await consumer.stop()
        assert [r.value for r in got] == [b"0", b"1", b"2"]


async def _until_assigned(consumer: AIOKafkaConsumer, n: int) -> None:
    while len(consumer.assignment()) != n:
        await consumer.getmany(timeout_ms=100)


async def test_two_live_consumers_split_partitions(kafka_bootstrap: str, kafka_topics, kafka_group_settings) -> None:
    """Rebalancing: a second member joining a live group takes over half of the four
    partitions, each member reads only its own; when it leaves, the first gets all four
    back."""
    topic, group = _unique("split"), _unique("group")
    assert kafka_topics([topic], partitions=4) == {topic: 4}
    everything = {TopicPartition(topic, p) for p in range(4)}
    a = _consumer(kafka_bootstrap, topic, group, kafka_group_settings)
    b = _consumer(kafka_bootstrap, topic, group, kafka_group_settings)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await a.start()
        await asyncio.wait_for(_until_assigned(a, 4), 60)
        try:
            await b.start()

            async def _balanced() -> None:
                while not (len(a.assignment()) == 2 and len(b.assignment()) == 2):
                    await asyncio.gather(a.getmany(timeout_ms=100), b.getmany(timeout_ms=100))

            await asyncio.wait_for(_balanced(), 90)
            assert a.assignment() | b.assignment() == everything

            for i in range(20):
                await producer.send_and_wait(topic, str(i).encode(), partition=i % 4)
            got_a: list[ConsumerRecord] = []
            got_b: list[ConsumerRecord] = []

            async def _drain() -> None:
                while len(got_a) + len(got_b) < 20:
                    ra, rb = await asyncio.gather(a.getmany(timeout_ms=100), b.getmany(timeout_ms=100))
                    got_a.extend(r for rs in ra.values() for r in rs)
                    got_b.extend(r for rs in rb.values() for r in rs)

            await asyncio.wait_for(_drain(), 60)
            assert {r.partition for r in got_a} == {tp.partition for tp in a.assignment()}
            assert {r.partition for r in got_b} == {tp.partition for tp in b.assignment()}
            assert sorted(int(r.value) for r in got_a + got_b) == list(range(20))
            await a.commit()
            await b.commit()
        finally:
            await b.stop()  # LeaveGroup: a takes b's partitions over
        await asyncio.wait_for(_until_assigned(a, 4), 60)
        for i in range(20, 24):
            await producer.send_and_wait(topic, str(i).encode(), partition=i % 4)
        later = await _collect(a, 4)
        assert sorted(int(r.value) for r in later) == [20, 21, 22, 23]
    finally:
        await a.stop()
        await producer.stop()


def test_kafka_bootstrap_fixture_source(kafka_bootstrap: str, kafka_group_settings) -> None:
    """Without TEST_KAFKA_BOOTSTRAP_SERVERS and Docker the fixture is our embedded broker,
    and only then are the fast group settings used."""
    if os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS"):
        assert kafka_bootstrap == os.environ["TEST_KAFKA_BOOTSTRAP_SERVERS"]
        assert kafka_group_settings == {}
    elif running_broker(kafka_bootstrap) is None:
        assert kafka_group_settings == {}  # testcontainers Kafka
    else:
        assert _port(kafka_bootstrap)
        assert kafka_group_settings == FAST_GROUP_SETTINGS
