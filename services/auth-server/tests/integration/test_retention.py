"""Retention (bsopt_auth.retention) on real Postgres: expired rows go, live rows and rows
still inside the grace period stay, composite keys are respected, refresh tokens follow
their family."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from bsopt_auth import models as m
from bsopt_auth.retention import purge_expired

NOW = datetime.now(UTC)
GRACE = 3600.0


def _user_id(session_factory) -> uuid.UUID:
    with session_factory() as s:
        return s.scalar(select(m.User.id).where(m.User.username == "demo"))


def _rows(session_factory, model, **where) -> set[str]:
    table = model.__table__
    key = next(iter(table.primary_key.columns)) if len(table.primary_key.columns) == 1 else None
    with session_factory() as s:
        query = select(table)
        for name, value in where.items():
            query = query.where(table.c[name] == value)
        rows = s.execute(query).mappings().all()
    return {str(r[key.name]) if key is not None else str(r["jti"]) for r in rows}


@pytest.fixture
def seeded(session_factory):
    """For each table: one row long expired, one expired inside the grace, one live."""
    user = _user_id(session_factory)
    tag = uuid.uuid4().hex[:8]
    long_ago, recently, later = NOW - timedelta(days=3), NOW - timedelta(seconds=60), NOW + timedelta(hours=1)
    times = {"old": long_ago, "recent": recently, "live": later}
    families = {k: uuid.uuid4() for k in times}
    with session_factory.begin() as s:
        for k, when in times.items():
            s.add(m.ClientAssertionJti(client_id="digest-worker", jti=f"{tag}-{k}", expires_at=when))
            s.add(m.DPoPProofJti(jti_hash=f"{tag}-{k}", expires_at=when))
            s.add(m.RevokedAccessToken(jti=f"{tag}-{k}", expires_at=when))
            s.add(m.AuthorizationCode(
                code_hash=f"{tag}-{k}", client_id="bsopt-cli", user_id=user, redirect_uri="http://127.0.0.1/cb",
                code_challenge="x" * 43, code_challenge_method="S256", scope="openid", resource=[],
                auth_time=long_ago, expires_at=when))
            s.add(m.DeviceAuthorization(
                device_code_hash=f"{tag}-{k}", user_code_hash=f"{tag}-u-{k}", client_id="bsopt-cli", scope="openid",
                resource=[], status="pending", interval=5, expires_at=when))
            s.add(m.AuthSession(id=f"{tag}-{k}", user_id=user, auth_time=long_ago, last_seen_at=long_ago,
                                expires_at=when))
            s.add(m.TokenFamily(id=families[k], client_id="bsopt-cli", user_id=user, scope="openid", resource=[],
                                auth_time=long_ago, expires_at=when))
        s.flush()
        for k, when in times.items():
            s.add(m.RefreshToken(token_hash=f"{tag}-{k}", family_id=families[k], expires_at=min(when, later)))
    return tag, families


def test_expired_rows_go_and_the_rest_stay(session_factory, seeded) -> None:
    tag, families = seeded
    deleted = purge_expired(session_factory, grace_seconds=GRACE, now=NOW)

    # Replay windows end at expiry: the long-expired and the recently expired go.
    for model in (m.DPoPProofJti, m.RevokedAccessToken):
        left = {r for r in _rows(session_factory, model) if r.startswith(tag)}
        assert left == {f"{tag}-live"}, model
    # A composite key (client_id, jti): only the expired jtis of the client go, not all its rows.
    assert {j for j in _rows(session_factory, m.ClientAssertionJti, client_id="digest-worker")
            if j.startswith(tag)} == {f"{tag}-live"}
    # Codes, device grants, sessions, families: kept through the grace (a replayed code is
    # still recognised as used), deleted after it.
    for model in (m.AuthorizationCode, m.DeviceAuthorization, m.AuthSession):
        left = {r for r in _rows(session_factory, model) if r.startswith(tag)}
        assert left == {f"{tag}-recent", f"{tag}-live"}, model
    assert {uuid.UUID(r) for r in _rows(session_factory, m.TokenFamily)} >= {families["recent"], families["live"]}
    assert families["old"] not in {uuid.UUID(r) for r in _rows(session_factory, m.TokenFamily)}
    # The old family's refresh tokens went with it (ON DELETE CASCADE).
    assert {r for r in _rows(session_factory, m.RefreshToken) if r.startswith(tag)} == {f"{tag}-recent", f"{tag}-live"}
    assert deleted["token_families"] >= 1 and deleted["dpop_proof_jtis"] >= 2


def test_a_second_pass_finds_nothing_and_batches_cover_a_backlog(session_factory) -> None:
    purge_expired(session_factory, grace_seconds=GRACE, now=NOW)
    assert purge_expired(session_factory, grace_seconds=GRACE, now=NOW) == {}
    with session_factory.begin() as s:
        s.add_all(m.DPoPProofJti(jti_hash=f"backlog-{i}", expires_at=NOW - timedelta(days=1)) for i in range(25))
    assert purge_expired(session_factory, grace_seconds=GRACE, now=NOW, batch=10) == {"dpop_proof_jtis": 25}
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(m.DPoPProofJti).where(
            m.DPoPProofJti.jti_hash.like("backlog-%"))) == 0


def test_a_negative_grace_is_refused(session_factory) -> None:
    with pytest.raises(ValueError, match="grace_seconds"):
        purge_expired(session_factory, grace_seconds=-1)


def test_key_maintenance_runs_the_sweep(settings, session_factory) -> None:
    """``serve`` calls ``maintain`` at start-up and every key_maintenance_interval_seconds."""
    from bsopt_auth.bootstrap import maintain

    with session_factory.begin() as s:
        s.add(m.DPoPProofJti(jti_hash="via-maintain", expires_at=datetime.now(UTC) - timedelta(minutes=5)))
    maintain(settings, session_factory)
    with session_factory() as s:
        assert s.get(m.DPoPProofJti, "via-maintain") is None
