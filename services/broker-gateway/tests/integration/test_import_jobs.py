"""Background trade imports (issue 8 §5): StartImport / GetImport over real gRPC, real
Postgres (job rows, outbox), the Kafka-protocol broker (imports.progress.v1), the local
Alpaca stand-in over real HTTP (slowed per account with ``delay_s``, failing with
``fail_next``), alpaca-py as the client."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
import yaml  # type: ignore[import-untyped]
from aiokafka import AIOKafkaConsumer
from sqlalchemy import select, text

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as pb
from bsopt.broker_gateway.v1 import broker_gateway_pb2_grpc as pb_grpc
from bsopt.broker_gateway.v1 import events_pb2
from bsopt_broker import models
from bsopt_broker.bootstrap import BrokerGateway
from bsopt_broker.config import BrokerSettings
from bsopt_broker.trade_import import import_id_of
from bsopt_common import codec
from bsopt_common.db import create_db_engine, make_session_factory
from bsopt_common.events import Outbox
from bsopt_common.money import Money
from bsopt_common.settings import BROKER_GATEWAY_AUDIENCE
from bsopt_common.testing.grpc_calls import grpc_calls
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_common.testing.standins import alpaca_standin_module

SCOPES = "broker:accounts broker:orders broker:import"
FILL_PATH = "/v2/account/activities/FILL"
END = datetime(2026, 11, 30, tzinfo=UTC)
START = END - timedelta(days=30)
SECRET_ENV = "IMPORT_JOBS_TEST_SECRET"
ACCOUNTS = {  # account name -> (owner, key id)
    "slow": ("imp-slow", "PKSLOW"), "twice": ("imp-twice", "PKTWICE"), "broken": ("imp-broken", "PKBROKEN"),
    "left": ("imp-left", "PKLEFT"), "sync": ("imp-sync", "PKSYNC"),
}


@pytest.fixture(scope="module")
def standin() -> Iterator[Any]:
    s = alpaca_standin_module().AlpacaStandin()
    for _, key in ACCOUNTS.values():
        s.add_account(key, "jobs-secret", cash=10_000)
    with s.serving():
        yield s


@pytest.fixture(scope="module")
def settings(tmp_path_factory, standin, service_database_urls, kafka_bootstrap, test_issuer) -> Iterator[Any]:
    path = tmp_path_factory.mktemp("accounts") / "accounts.yaml"
    path.write_text(yaml.safe_dump({"accounts": [
        {"name": name, "broker": "alpaca", "owner": owner, "api_key_id": key, "api_secret_key_env": SECRET_ENV,
         "base_url": standin.base_url} for name, (owner, key) in ACCOUNTS.items()]}), encoding="utf-8")
    os.environ[SECRET_ENV] = "jobs-secret"

    def make() -> BrokerSettings:
        # two tries per page and no circuit breaking: a lasting outage fails a job quickly
        return BrokerSettings(database_url=service_database_urls["broker-gateway"],
                              kafka_bootstrap_servers=kafka_bootstrap, port=free_port(), accounts_file=path,
                              alpaca_retry_attempts=2, alpaca_retry_total_seconds=2,
                              alpaca_breaker_failures=100, **service_identity(test_issuer, "broker-gateway"))
    yield make
    os.environ.pop(SECRET_ENV, None)


@pytest.fixture(scope="module")
def gateway(settings) -> Iterator[str]:
    s = settings()
    with ServiceThread(BrokerGateway(s).run, port=s.port):
        yield f"127.0.0.1:{s.port}"


@pytest.fixture(scope="module")
def session_factory(service_database_urls, gateway) -> Iterator[Any]:
    engine = create_db_engine(service_database_urls["broker-gateway"])
    yield make_session_factory(engine)
    engine.dispose()


def token(issuer: Any, user: str) -> str:
    return issuer.token(aud=BROKER_GATEWAY_AUDIENCE, scope=SCOPES, client_id="resource-api", sub=user,
                        act={"sub": "resource-api"})


call, refused = grpc_calls(pb_grpc.BrokerGatewayServiceStub)


def window(account_id: str, start: datetime = START, end: datetime = END) -> pb.StartImportRequest:
    return pb.StartImportRequest(account_id=account_id, start=codec.timestamp(start), end=codec.timestamp(end))


def seed_month(standin: Any, key: str) -> None:
    """250 fills inside [START, END) (3 pages of Alpaca's 100) and 2 outside."""
    standin.seed_fills(key, 250, START + timedelta(hours=1), END - timedelta(hours=1))
    standin.seed_fills(key, 2, END + timedelta(hours=1), END + timedelta(hours=2))


async def wait_for(target: str, tok: str, import_id: str, statuses: set[int], timeout: float = 60) -> tuple[
        pb.ImportJob, list[pb.ImportJob]]:
    """Poll GetImport until the job is in one of ``statuses``; returns it and every answer seen."""
    seen: list[pb.ImportJob] = []
    deadline = time.monotonic() + timeout
    while True:
        job = await call(target, "GetImport", pb.GetImportRequest(import_id=import_id), tok)
        seen.append(job)
        if job.status in statuses:
            return job, seen
        assert time.monotonic() < deadline, f"import {import_id} stuck at {pb.ImportStatus.Name(job.status)}"
        await asyncio.sleep(0.05)


def progress_rows(session_factory: Any, import_id: str) -> list[tuple[Any, events_pb2.ImportProgress]]:
    t = Outbox(models.SCHEMA).table
    with session_factory() as s:
        rows = s.execute(select(t).where(t.c.topic == "imports.progress.v1").order_by(t.c.created_at)).all()
    events = [(r, events_pb2.ImportProgress.FromString(r.payload)) for r in rows]
    return [(r, e) for r, e in events if e.import_id == import_id]


def fill_requests(standin: Any, key: str) -> int:
    return sum(1 for r in standin.requests if r[0] == key and r[2] == FILL_PATH)


def imported_events(session_factory: Any, import_id: str) -> int:
    t = Outbox(models.SCHEMA).table
    with session_factory() as s:
        payloads = s.execute(select(t.c.payload).where(t.c.topic == "trades.imported.v1")).scalars().all()
    return sum(1 for p in payloads if events_pb2.TradeImported.FromString(p).import_id == import_id)


async def test_start_returns_at_once_and_the_job_reports_each_page(gateway, test_issuer, standin, session_factory,
                                                                   kafka_bootstrap):
    owner, key = ACCOUNTS["slow"]
    seed_month(standin, key)
    tok = token(test_issuer, owner)
    await call(gateway, "GetAccount", pb.GetAccountRequest(account_id="slow"), tok)  # client made, kind detected
    standin.accounts[key].delay_s = 0.6  # every answer of this account: 3 pages take ~2 s

    began = time.monotonic()
    job = await call(gateway, "StartImport", window("slow"), tok)
    answered_in = time.monotonic() - began
    assert job.import_id == import_id_of(owner, "alpaca", "slow", START, END)
    assert job.status in (pb.IMPORT_STATUS_QUEUED, pb.IMPORT_STATUS_RUNNING)
    assert (job.account_id, job.broker, job.attempts, job.trades_imported) == ("slow", "alpaca", 1, 0)
    assert job.start.ToDatetime(tzinfo=UTC) == START and job.end.ToDatetime(tzinfo=UTC) == END

    done, seen = await wait_for(gateway, tok, job.import_id, {pb.IMPORT_STATUS_DONE, pb.IMPORT_STATUS_FAILED})
    took = time.monotonic() - began
    standin.accounts[key].delay_s = 0.0
    assert answered_in < took / 2, (answered_in, took)  # StartImport did not wait for the import
    assert done.status == pb.IMPORT_STATUS_DONE, done.error
    assert (done.pages_fetched, done.fills_seen, done.trades_imported, done.duplicates_skipped) == (3, 250, 250, 0)
    assert done.account_kind == pb.ACCOUNT_KIND_PAPER and done.error == ""
    assert done.HasField("started_at") and done.HasField("finished_at")
    assert seen[0].status != pb.IMPORT_STATUS_DONE  # seen before it ended
    assert any(s.status == pb.IMPORT_STATUS_RUNNING and 0 < s.pages_fetched < 3 for s in seen)  # per page
    assert imported_events(session_factory, job.import_id) == 250

    events = progress_rows(session_factory, job.import_id)
    assert [(e.status, e.pages_fetched, e.fills_seen) for _, e in events] == [
        (pb.IMPORT_STATUS_RUNNING, 0, 0), (pb.IMPORT_STATUS_RUNNING, 1, 100), (pb.IMPORT_STATUS_RUNNING, 2, 200),
        (pb.IMPORT_STATUS_RUNNING, 3, 250), (pb.IMPORT_STATUS_DONE, 3, 250)]
    for row, e in events:
        assert row.key == owner and row.subject == f"imports/{job.import_id}"
        assert (e.user_id, e.account_id, e.broker, e.error) == (owner, "slow", "alpaca", "")
        assert e.HasField("at")
    assert [e.account_kind for _, e in events] == [pb.ACCOUNT_KIND_UNSPECIFIED] + [pb.ACCOUNT_KIND_PAPER] * 4
    assert [(e.trades_imported, e.duplicates_skipped) for _, e in events][-1] == (250, 0)

    # ... and they reach the topic (the outbox relay publishes them)
    consumer = AIOKafkaConsumer("imports.progress.v1", bootstrap_servers=kafka_bootstrap,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        got: list[events_pb2.ImportProgress] = []
        deadline = asyncio.get_running_loop().time() + 20
        while len(got) < 5 and asyncio.get_running_loop().time() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                got += [e for m in msgs if (e := events_pb2.ImportProgress.FromString(m.value)).import_id
                        == job.import_id]
    finally:
        await consumer.stop()
    assert sorted((e.pages_fetched, e.status) for e in got) == sorted(
        (e.pages_fetched, e.status) for _, e in events)


async def test_the_same_window_twice_is_one_job_and_one_import(gateway, test_issuer, standin, session_factory):
    owner, key = ACCOUNTS["twice"]
    seed_month(standin, key)
    tok = token(test_issuer, owner)
    await call(gateway, "GetAccount", pb.GetAccountRequest(account_id="twice"), tok)
    standin.accounts[key].delay_s = 0.3
    first = await call(gateway, "StartImport", window("twice"), tok)
    second = await call(gateway, "StartImport", window("twice"), tok)  # while the first runs
    assert second.import_id == first.import_id and second.attempts == 1
    assert second.status in (pb.IMPORT_STATUS_QUEUED, pb.IMPORT_STATUS_RUNNING)
    done, _ = await wait_for(gateway, tok, first.import_id, {pb.IMPORT_STATUS_DONE, pb.IMPORT_STATUS_FAILED})
    standin.accounts[key].delay_s = 0.0
    assert (done.status, done.trades_imported, done.attempts) == (pb.IMPORT_STATUS_DONE, 250, 1)
    pages = fill_requests(standin, key)
    assert pages == 3

    again = await call(gateway, "StartImport", window("twice"), tok)  # after it ended: the job as it is
    assert (again.import_id, again.status, again.trades_imported, again.attempts) == (
        first.import_id, pb.IMPORT_STATUS_DONE, 250, 1)
    await asyncio.sleep(0.5)
    assert fill_requests(standin, key) == pages  # nothing ran again
    assert imported_events(session_factory, first.import_id) == 250
    assert [e.status for _, e in progress_rows(session_factory, first.import_id)].count(pb.IMPORT_STATUS_DONE) == 1
    with session_factory() as s:
        jobs = s.execute(text("SELECT count(*) FROM broker.import_jobs WHERE account_id = 'twice'")).scalar_one()
    assert jobs == 1

    # the synchronous ImportTrades of the same window: same id, same answer as before
    sync = await call(gateway, "ImportTrades", pb.ImportTradesRequest(
        account_id="twice", start=codec.timestamp(START), end=codec.timestamp(END)), tok)
    assert (sync.import_id, sync.trades_imported, sync.duplicates_skipped) == (first.import_id, 0, 250)


async def test_a_synchronous_import_is_recorded_as_the_windows_job(gateway, test_issuer, standin,
                                                                   session_factory):
    owner, key = ACCOUNTS["sync"]
    seed_month(standin, key)
    tok = token(test_issuer, owner)
    request = pb.ImportTradesRequest(account_id="sync", start=codec.timestamp(START), end=codec.timestamp(END))
    first = await call(gateway, "ImportTrades", request, tok)
    assert (first.trades_imported, first.duplicates_skipped) == (250, 0)
    job = await call(gateway, "GetImport", pb.GetImportRequest(import_id=first.import_id), tok)
    assert (job.status, job.trades_imported, job.duplicates_skipped, job.pages_fetched, job.attempts) == (
        pb.IMPORT_STATUS_DONE, 250, 0, 3, 1)
    assert job.account_kind == pb.ACCOUNT_KIND_PAPER and job.HasField("finished_at")
    statuses = [e.status for _, e in progress_rows(session_factory, first.import_id)]
    assert statuses[0] == pb.IMPORT_STATUS_RUNNING and statuses[-1] == pb.IMPORT_STATUS_DONE
    assert statuses.count(pb.IMPORT_STATUS_DONE) == 1

    # again: it runs again (all duplicates) and the job says so, one row still
    again = await call(gateway, "ImportTrades", request, tok)
    assert (again.import_id, again.trades_imported, again.duplicates_skipped) == (first.import_id, 0, 250)
    job = await call(gateway, "GetImport", pb.GetImportRequest(import_id=first.import_id), tok)
    assert (job.status, job.trades_imported, job.duplicates_skipped, job.attempts) == (
        pb.IMPORT_STATUS_DONE, 0, 250, 2)
    assert imported_events(session_factory, first.import_id) == 250  # each trade published once

    # while a background import of the window runs, a synchronous one leaves its job alone
    later = pb.ImportTradesRequest(account_id="sync", start=codec.timestamp(START - timedelta(days=1)),
                                   end=codec.timestamp(END))
    standin.accounts[key].delay_s = 0.3
    started = await call(gateway, "StartImport", pb.StartImportRequest(
        account_id="sync", start=later.start, end=later.end), tok)
    sync = await call(gateway, "ImportTrades", later, tok)
    standin.accounts[key].delay_s = 0.0
    assert sync.import_id == started.import_id and sync.trades_imported == 0
    done, _ = await wait_for(gateway, tok, started.import_id, {pb.IMPORT_STATUS_DONE, pb.IMPORT_STATUS_FAILED})
    assert (done.status, done.attempts) == (pb.IMPORT_STATUS_DONE, 1)


async def test_a_failed_job_says_why_and_can_be_started_again(gateway, test_issuer, standin, session_factory):
    owner, key = ACCOUNTS["broken"]
    seed_month(standin, key)
    tok = token(test_issuer, owner)
    await call(gateway, "GetAccount", pb.GetAccountRequest(account_id="broken"), tok)
    standin.fail_next(key, 500, times=1000, path=FILL_PATH)  # a lasting outage of the activities
    try:
        job = await call(gateway, "StartImport", window("broken"), tok)
        failed, _ = await wait_for(gateway, tok, job.import_id, {pb.IMPORT_STATUS_DONE, pb.IMPORT_STATUS_FAILED})
    finally:
        standin.clear_failures(key)
    assert failed.status == pb.IMPORT_STATUS_FAILED and failed.HasField("finished_at")
    assert "Unavailable" in failed.error and "broken" in failed.error
    assert (failed.trades_imported, failed.pages_fetched) == (0, 0)
    assert imported_events(session_factory, job.import_id) == 0  # nothing half-written
    events = progress_rows(session_factory, job.import_id)
    assert [e.status for _, e in events] == [pb.IMPORT_STATUS_RUNNING, pb.IMPORT_STATUS_FAILED]
    assert events[-1][1].error == failed.error

    retried = await call(gateway, "StartImport", window("broken"), tok)
    assert retried.import_id == job.import_id and retried.attempts == 2
    assert retried.status in (pb.IMPORT_STATUS_QUEUED, pb.IMPORT_STATUS_RUNNING, pb.IMPORT_STATUS_DONE)
    assert retried.error == ""
    done, _ = await wait_for(gateway, tok, job.import_id, {pb.IMPORT_STATUS_DONE, pb.IMPORT_STATUS_FAILED})
    assert (done.status, done.trades_imported, done.pages_fetched, done.attempts) == (
        pb.IMPORT_STATUS_DONE, 250, 3, 2)
    assert imported_events(session_factory, job.import_id) == 250


async def test_a_job_left_running_is_resumed_by_a_new_process(settings, test_issuer, standin, session_factory,
                                                              gateway):
    owner, key = ACCOUNTS["left"]
    seed_month(standin, key)
    import_id = import_id_of(owner, "alpaca", "left", START, END)
    with session_factory.begin() as s:  # what a crashed process leaves behind
        s.execute(models.import_jobs.insert().values(
            import_id=import_id, user_id=owner, broker="alpaca", account_id="left", window_start=START,
            window_end=END, status="running", pages_fetched=1, fills_seen=100, started_at=datetime.now(UTC)))
    s2 = settings()
    with ServiceThread(BrokerGateway(s2).run, port=s2.port):
        target = f"127.0.0.1:{s2.port}"
        done, _ = await wait_for(target, token(test_issuer, owner), import_id,
                                 {pb.IMPORT_STATUS_DONE, pb.IMPORT_STATUS_FAILED})
    assert (done.status, done.trades_imported, done.pages_fetched, done.fills_seen) == (
        pb.IMPORT_STATUS_DONE, 250, 3, 250)
    assert imported_events(session_factory, import_id) == 250


async def test_another_users_imports_and_bad_requests(gateway, test_issuer):
    owner, _ = ACCOUNTS["slow"]
    import_id = import_id_of(owner, "alpaca", "slow", START, END)
    stranger = token(test_issuer, "imp-stranger")
    err = await refused(gateway, "GetImport", pb.GetImportRequest(import_id=import_id), stranger)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await refused(gateway, "StartImport", window("slow"), stranger)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await refused(gateway, "GetImport", pb.GetImportRequest(import_id="no-such-import"),
                        token(test_issuer, owner))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    for request, field in ((pb.StartImportRequest(account_id="slow"), "start"), (window(""), "account_id"),
                           (window("slow", END, START), "after")):
        err = await refused(gateway, "StartImport", request, token(test_issuer, owner))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.details(), err.details()
    err = await refused(gateway, "GetImport", pb.GetImportRequest(), token(test_issuer, owner))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_paper_account_imports_in_one_page(gateway, test_issuer):
    tok = token(test_issuer, "imp-paper")
    account = await call(gateway, "CreateAccount", pb.CreateAccountRequest(
        initial_cash=codec.money_pb(Money.of(10_000, "USD"))), tok)
    await call(gateway, "PlaceOrder", pb.PlaceOrderRequest(
        account_id=account.account_id, client_order_id="paper-1", symbol="GOOGL", side=pb.SIDE_BUY, quantity=1,
        as_of=codec.timestamp(datetime(2017, 1, 3, tzinfo=UTC))), tok)
    start, end = datetime(2017, 1, 1, tzinfo=UTC), datetime(2017, 2, 1, tzinfo=UTC)
    job = await call(gateway, "StartImport", window(account.account_id, start, end), tok)
    assert job.broker == "paper"
    done, _ = await wait_for(gateway, tok, job.import_id, {pb.IMPORT_STATUS_DONE, pb.IMPORT_STATUS_FAILED})
    assert (done.status, done.pages_fetched, done.fills_seen, done.trades_imported, done.account_kind) == (
        pb.IMPORT_STATUS_DONE, 1, 1, 1, pb.ACCOUNT_KIND_PAPER)
