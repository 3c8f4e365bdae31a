"""The embedded Kafka-protocol broker (librdkafka mock cluster) and the ``kafka_bootstrap``
fixture, exercised with aiokafka, the client the services use.

The consumer-group tests run against whatever ``kafka_bootstrap`` resolves to (a real
Kafka when ``TEST_KAFKA_BOOTSTRAP_SERVERS`` is set); the rest test EmbeddedKafka itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from bsopt_common.embedded.kafka import (
    MOCK_AUTO_CREATE_PARTITIONS,
    EmbeddedKafka,
    ensure_topics,
    held_cluster,
    librdkafka_version,
)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _ports(bootstrap: str) -> list[int]:
    hosts = [hp.rsplit(":", 1) for hp in bootstrap.split(",")]
    assert all(h == "127.0.0.1" for h, _ in hosts), bootstrap
    return [int(p) for _, p in hosts]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _group_timeouts(bootstrap: str) -> dict[str, int]:
    """On the mock cluster, a member joining after the previous one left waits for the
    group's rebalance timeout (the leaver's session timeout), so keep it short there.
    A real Kafka rejects session timeouts below group.min.session.timeout.ms (6 s)."""
    if held_cluster(bootstrap) is not None:
        return {"session_timeout_ms": 1000, "heartbeat_interval_ms": 300}
    return {}


def _consumer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **_group_timeouts(bootstrap),
    )


async def _collect(consumer: AIOKafkaConsumer, n: int, timeout: float = 30.0) -> list[ConsumerRecord]:
    got: list[ConsumerRecord] = []

    async def _loop() -> None:
        while len(got) < n:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got.extend(records)

    await asyncio.wait_for(_loop(), timeout)
    return got


async def _nothing_more(consumer: AIOKafkaConsumer, seconds: float = 1.0) -> list[ConsumerRecord]:
    batches = await consumer.getmany(timeout_ms=int(seconds * 1000))
    return [r for records in batches.values() for r in records]


# ------------------------------------------------------------------ EmbeddedKafka itself


def test_start_returns_loopback_bootstrap_and_close_releases_ports() -> None:
    kafka = EmbeddedKafka()
    with pytest.raises(RuntimeError):
        _ = kafka.bootstrap_servers
    bootstrap = kafka.start(3)
    try:
        assert bootstrap == kafka.bootstrap_servers
        ports = _ports(bootstrap)
        assert len(ports) == 3 and len(set(ports)) == 3
        assert all(_accepts(p) for p in ports)
        assert held_cluster(bootstrap) is kafka
        with pytest.raises(RuntimeError, match="already started"):
            kafka.start()
    finally:
        kafka.close()
    kafka.close()  # idempotent
    assert not kafka.running
    assert held_cluster(bootstrap) is None
    assert not any(_accepts(p) for p in ports)
    assert librdkafka_version().startswith("2.")


def test_start_rejects_zero_brokers() -> None:
    with pytest.raises(ValueError):
        EmbeddedKafka().start(0)


def test_create_topic_and_ensure_topics_on_held_cluster() -> None:
    with EmbeddedKafka() as kafka:
        assert kafka.create_topic("orders", partitions=3) is True
        assert kafka.create_topic("orders", partitions=5) is False  # exists: unchanged
        counts = ensure_topics(kafka.bootstrap_servers, ["orders", "fills", "fills"], partitions=2)
        assert counts == {"orders": 3, "fills": 2}
        with pytest.raises(ValueError):
            kafka.create_topic("bad", partitions=0)
    with pytest.raises(RuntimeError):
        kafka.create_topic("late")


async def test_topics_are_auto_created_with_four_partitions_on_metadata_request() -> None:
    with EmbeddedKafka() as kafka:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
        await producer.start()
        try:
            meta = await producer.send_and_wait("never-created", b"v")
            assert meta.offset == 0
            assert producer.client.cluster.partitions_for_topic("never-created") == set(
                range(MOCK_AUTO_CREATE_PARTITIONS)
            )
        finally:
            await producer.stop()


def _spawn_broker(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bsopt_common.embedded.kafka", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline().strip() if proc.stdout else ""
    if not line:
        proc.kill()
        raise AssertionError(f"broker process printed no bootstrap: {proc.communicate(timeout=10)}")
    return proc, line


async def test_broker_process_serves_clients_until_sigterm() -> None:
    """``python -m bsopt_common.embedded.kafka`` only holds the handle; the mock cluster's
    own threads serve clients, and SIGTERM shuts it down cleanly (exit 0)."""
    proc, bootstrap = _spawn_broker("--topic", "prices:3", "--topic", "single")
    try:
        ports = _ports(bootstrap)
        assert held_cluster(bootstrap) is None  # not ours: no handle in this process
        # No CreateTopics API: existing topics keep their count, new ones get the default.
        counts = await asyncio.to_thread(ensure_topics, bootstrap, ["prices", "single", "later"], 2)
        assert counts == {"prices": 3, "single": 1, "later": MOCK_AUTO_CREATE_PARTITIONS}

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
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0
    assert not any(_accepts(p) for p in ports)


# --------------------------------------------- consumer groups through kafka_bootstrap


async def test_manual_commit_resume_and_redelivery(kafka_bootstrap: str, kafka_topics) -> None:
    """Keys and headers round-trip; a new member of the group resumes after the committed
    offset (no re-read of committed records) and gets the uncommitted ones again."""
    topic, group = _unique("orders"), _unique("group")
    assert kafka_topics([topic]) == {topic: 1}
    tp = TopicPartition(topic, 0)

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(6):
            await producer.send_and_wait(
                topic, f"value-{i}".encode(), key=f"key-{i}".encode(),
                headers=[("trace-id", f"t{i}".encode()), ("schema", b"v1")],
            )

        first = _consumer(kafka_bootstrap, topic, group)
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

        second = _consumer(kafka_bootstrap, topic, group)
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
        third = _consumer(kafka_bootstrap, topic, group)
        await third.start()
        try:
            fresh = await _collect(third, 1)
            assert [(r.offset, r.value) for r in fresh] == [(6, b"value-6")]
            assert await _nothing_more(third) == []
        finally:
            await third.stop()
    finally:
        await producer.stop()


async def test_other_group_reads_from_the_beginning(kafka_bootstrap: str, kafka_topics) -> None:
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
        consumer = _consumer(kafka_bootstrap, topic, group)
        await consumer.start()
        try:
            got = await _collect(consumer, 3)
            await consumer.commit()
        finally:
            await consumer.stop()
        assert [r.value for r in got] == [b"0", b"1", b"2"]


@pytest.mark.kafka_group
async def test_two_live_consumers_split_partitions(kafka_bootstrap: str, kafka_topics) -> None:
    """Rebalancing: a second member joining a live group takes over one of the two
    partitions. Needs a real Kafka (the mock cluster fails SyncGroup with
    INVALID_REQUEST for a member joining a live group); skipped otherwise by the
    ``kafka_group`` marker handling in the bsopt pytest plugin."""
    topic, group = _unique("split"), _unique("group")
    assert kafka_topics([topic], partitions=2) == {topic: 2}
    a = _consumer(kafka_bootstrap, topic, group)
    b = _consumer(kafka_bootstrap, topic, group)
    try:
        await a.start()
        await asyncio.wait_for(_until_assigned(a, 2), 60)
        try:
            await b.start()

            async def _balanced() -> None:
                while not (len(a.assignment()) == 1 and len(b.assignment()) == 1):
                    await asyncio.gather(a.getmany(timeout_ms=200), b.getmany(timeout_ms=200))

            await asyncio.wait_for(_balanced(), 90)
            assert a.assignment() | b.assignment() == {TopicPartition(topic, 0), TopicPartition(topic, 1)}

            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
            await producer.start()
            try:
                for i in range(10):
                    await producer.send_and_wait(topic, str(i).encode(), partition=i % 2)
            finally:
                await producer.stop()

            got_a: list[ConsumerRecord] = []
            got_b: list[ConsumerRecord] = []

            async def _drain() -> None:
                while len(got_a) + len(got_b) < 10:
                    ra, rb = await asyncio.gather(a.getmany(timeout_ms=200), b.getmany(timeout_ms=200))
                    got_a.extend(r for rs in ra.values() for r in rs)
                    got_b.extend(r for rs in rb.values() for r in rs)

            await asyncio.wait_for(_drain(), 60)
            assert {r.partition for r in got_a} == {tp.partition for tp in a.assignment()}
            assert {r.partition for r in got_b} == {tp.partition for tp in b.assignment()}
            assert sorted(int(r.value) for r in got_a + got_b) == list(range(10))
        finally:
            await b.stop()
    finally:
        await a.stop()


async def _until_assigned(consumer: AIOKafkaConsumer, n: int) -> None:
    while len(consumer.assignment()) < n:
        await consumer.getmany(timeout_ms=200)


def test_kafka_bootstrap_fixture_source(kafka_bootstrap: str) -> None:
    """Without TEST_KAFKA_BOOTSTRAP_SERVERS and Docker the fixture is our embedded broker."""
    if os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS"):
        assert kafka_bootstrap == os.environ["TEST_KAFKA_BOOTSTRAP_SERVERS"]
    elif held_cluster(kafka_bootstrap) is None:
        pytest.skip("kafka_bootstrap is a testcontainers Kafka")
    else:
        assert _ports(kafka_bootstrap)
