"""The token endpoint's hot path while serving: throttle keys found clear are trusted for
``throttle_check_cache_seconds`` (a block recorded anywhere still applies within it, and
at once when recorded here), and audit facts of token responses are written in batches
(``audit_batch_seconds``), flushed when the app stops. Real Postgres, the real app."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select, text

from bsopt_auth import audit
from bsopt_auth.app import create_app
from bsopt_auth.models import AuditEvent
from bsopt_auth.throttle import ClientAuthGuard, TooManyAttemptsError, configure_check_cache
from bsopt_common.topics import AUTH_AUDIT


@pytest.fixture
def check_cache():
    configure_check_cache(0.5)
    yield 0.5
    configure_check_cache(0)


def test_a_clear_key_is_trusted_for_the_cache_lifetime_only(settings, session_factory, check_cache) -> None:
    guard = ClientAuthGuard(settings, session_factory, None, [("client_id", "hot-path-client")], "198.51.100.7")
    guard.check()  # reads: no rows, both keys remembered as clear
    key = guard.client_key
    assert key is not None
    # another replica blocks the client (a row this process has not seen)
    with session_factory() as s, s.begin():
        s.execute(text("INSERT INTO auth.login_throttle (key, failures, last_failure_at, locked_until) "
                       "VALUES (:k, 1, now(), now() + interval '60 seconds')"), {"k": key.key})
    guard.check()  # still trusted as clear: no round trip
    time.sleep(check_cache + 0.1)
    with pytest.raises(TooManyAttemptsError):
        guard.check()  # stale: read again, blocked
    with session_factory() as s, s.begin():
        s.execute(text("DELETE FROM auth.login_throttle WHERE key = :k"), {"k": key.key})


def test_a_failure_recorded_here_applies_at_once(settings, session_factory, check_cache) -> None:
    guard = ClientAuthGuard(settings, session_factory, None, [("client_id", "hot-path-2")], "198.51.100.8")
    guard.check()
    with session_factory() as s, s.begin():  # as if this process had failed many times already
        s.execute(text("INSERT INTO auth.login_throttle (key, failures, last_failure_at) VALUES (:k, :n, now())"),
                  {"k": guard.client_key.key, "n": settings.throttle_client_free_failures})
    guard.failed()  # the failure over the limit, recorded here: the key is forgotten as clear
    with pytest.raises(TooManyAttemptsError):
        guard.check()


async def test_token_responses_are_audited_in_batches_and_flushed_on_stop(settings, engine, session_factory,
                                                                          oauth) -> None:
    audit.configure_batching(0.05)
    try:
        app = create_app(settings, engine)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=settings.issuer) as http:
            def count() -> int:
                with session_factory() as s:
                    return s.scalar(select(func.count()).select_from(AuditEvent).where(
                        AuditEvent.event_type == audit.TOKEN_ISSUED, AuditEvent.client_id == "bsopt-admin")) or 0

            before = count()
            for _ in range(5):
                resp = await http.post("/oauth2/token", auth=("bsopt-admin", "dev-bsopt-admin-secret"),
                                       data={"grant_type": "client_credentials", "resource": "urn:bsopt:auth-server"})
                assert resp.status_code == 200, resp.text
            last = await http.post("/oauth2/token", auth=("bsopt-admin", "dev-bsopt-admin-secret"),
                                   data={"grant_type": "client_credentials", "resource": "urn:bsopt:auth-server"})
            assert last.status_code == 200
        # the lifespan ended: the writer flushed everything queued
        assert count() - before == 6
    finally:
        audit.configure_batching(0)


async def test_batched_facts_keep_the_time_they_happened_and_each_has_its_outbox_event(
        settings, engine, session_factory) -> None:
    audit.configure_batching(1.0)  # a long interval: the write comes well after the responses
    try:
        app = create_app(settings, engine)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=settings.issuer) as http:
            started = datetime.now(UTC)
            for _ in range(3):
                resp = await http.post("/oauth2/token", auth=("bsopt-admin", "dev-bsopt-admin-secret"),
                                       data={"grant_type": "client_credentials", "resource": "urn:bsopt:auth-server"})
                assert resp.status_code == 200, resp.text
            answered = datetime.now(UTC)
            await asyncio.sleep(1.5)  # the writer's next batch
        with session_factory() as s:
            rows = s.execute(select(AuditEvent.id, AuditEvent.occurred_at).where(
                AuditEvent.event_type == audit.TOKEN_ISSUED, AuditEvent.occurred_at >= started)).all()
            staged = set(s.scalars(select(audit.OUTBOX.table.c.event_id).where(
                audit.OUTBOX.table.c.topic == AUTH_AUDIT.name)))
        assert len(rows) == 3
        assert all(started <= when <= answered for _, when in rows), (started, answered, rows)
        assert {str(row_id) for row_id, _ in rows} <= staged
    finally:
        audit.configure_batching(0)
