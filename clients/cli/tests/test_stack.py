"""The local stack's own infrastructure path (what `make up` / `make demo` use on a
machine with nothing installed): embedded Postgres with a `bsopt` database, the
embedded broker as a child process, and a clean stop that leaves no child behind."""

from __future__ import annotations

import asyncio

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy.engine import make_url

from bsopt_cli.stack import Stack
from bsopt_common.embedded.kafka import FAST_GROUP_SETTINGS


async def roundtrip(bootstrap: str) -> bytes:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait("stack.check.v1", b"hello", key=b"k")
    finally:
        await producer.stop()
    # The stack's own broker is the embedded Tansu: short group timeouts make the join 1 s, not 5 s.
    consumer = AIOKafkaConsumer("stack.check.v1", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id="stack-check", **FAST_GROUP_SETTINGS)
    await consumer.start()
    try:
        return (await asyncio.wait_for(consumer.getone(), 20)).value
    finally:
        await consumer.stop()


def test_embedded_postgres_and_kafka_start_and_stop_cleanly(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    stack = Stack(state_dir=tmp_path / "state")
    try:
        url = stack._start_postgres()
        assert make_url(url).database == "bsopt"
        u = make_url(url)
        with psycopg.connect(dbname="bsopt", user=u.username, host=u.query["host"]) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("bsopt",)
        bootstrap = stack._start_kafka()
        assert asyncio.run(roundtrip(bootstrap)) == b"hello"
        kafka = stack.children[0]
        assert kafka.name == "kafka" and kafka.proc.poll() is None
        assert bootstrap.startswith("127.0.0.1:")
    finally:
        stack.stop()
    assert kafka.proc.poll() is not None  # the broker process is gone
    assert kafka.log_path.is_file()
    assert stack.children == []
    assert (tmp_path / "state" / "postgres").is_dir()  # data persists for the next `make up`
