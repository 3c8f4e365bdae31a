"""``POST /v1/training-jobs/{id}:cancel`` and the trainer's quota end to end: the real API
in front of a real rl-trainer (gRPC, training for real) on a real Postgres and Kafka.
A running job answers 202 and stops within seconds; a queued one answers 200
``cancelled``; another user's job is 404; a submit over the queued quota is 429 with
``Retry-After``."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from bsopt_api.config import ApiSettings
from bsopt_common.testing.identity import service_identity
from bsopt_common.testing.services import ServiceThread, free_port
from bsopt_trainer.bootstrap import serve as serve_trainer
from bsopt_trainer.config import TrainerSettings

JOB = {"symbol": "GOOGL", "train_start": "2009-05-22", "train_end": "2016-11-30",
       "test_start": "2017-01-03", "test_end": "2017-03-31", "total_timesteps": 1024}
LONG = {**JOB, "total_timesteps": 131_072}  # the Transformer alone would train over a minute


@pytest.fixture(scope="module")
def trainer_target(postgres_url, kafka_bootstrap, test_issuer, tmp_path_factory):
    port = free_port()
    settings = TrainerSettings(
        database_url=postgres_url, kafka_bootstrap_servers=kafka_bootstrap, port=port,
        **service_identity(test_issuer, "rl-trainer"),
        broker_gateway_target=f"127.0.0.1:{free_port()}", artifacts_dir=tmp_path_factory.mktemp("artifacts"),
        max_queued_jobs_per_user=1, cancel_poll_seconds=0.5)
    with ServiceThread(lambda stop: serve_trainer(settings, stop), port=port):
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def api_settings(settings_for, trainer_target) -> ApiSettings:
    return settings_for(rl_trainer_target=trainer_target, grpc_timeout_seconds=30.0)


async def poll(client: httpx.AsyncClient, location: str, headers, done, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        resp = await client.get(location, headers=headers)
        assert resp.status_code == 200, resp.text
        if done(resp.json()):
            return resp.json()
        assert time.monotonic() < deadline, resp.json()
        await asyncio.sleep(0.2)


async def test_cancel_running_and_queued_jobs_and_the_queued_quota(client, tokens):
    alice, bob = tokens.bearer(tokens.user()), tokens.bearer(tokens.user())
    resp = await client.post("/v1/training-jobs", json=LONG, headers=alice)
    assert resp.status_code == 202, resp.text
    running = resp.headers["location"]
    await poll(client, running, alice, lambda j: j["status"] == "running" and j["progress"] > 0, 120)

    # the worker is busy: bob's job waits queued; one queued job is bob's quota here
    resp = await client.post("/v1/training-jobs", json=JOB, headers=bob)
    assert resp.status_code == 202 and resp.json()["status"] == "queued"
    assert resp.json()["cancel_requested"] is False
    queued = resp.headers["location"]
    resp = await client.post("/v1/training-jobs", json=JOB, headers=bob)
    assert resp.status_code == 429, resp.text
    assert int(resp.headers["retry-after"]) > 0
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["grpc_status"] == "RESOURCE_EXHAUSTED"

    resp = await client.post(f"{queued}:cancel", headers=alice)  # not alice's job
    assert resp.status_code == 404, resp.text
    resp = await client.post(f"{queued}:cancel", headers=bob)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "cancelled" and resp.json()["finished_at"]

    started = time.monotonic()
    resp = await client.post(f"{running}:cancel", headers=alice)
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "running" and resp.json()["cancel_requested"] is True
    job = await poll(client, running, alice, lambda j: j["status"] == "cancelled", 10)
    assert time.monotonic() - started < 10
    assert job["results"] is None and job["progress"] < 0.5

    resp = await client.post(f"{running}:cancel", headers=alice)  # again: still cancelled
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"


async def test_cancel_of_an_unknown_job_is_404(client, tokens):
    resp = await client.post("/v1/training-jobs/no-such-job:cancel", headers=tokens.bearer(tokens.user()))
    assert resp.status_code == 404
    assert resp.json()["grpc_status"] == "NOT_FOUND"


async def test_cancel_needs_the_write_scope(client, tokens):
    resp = await client.post("/v1/training-jobs/any:cancel",
                             headers=tokens.bearer(tokens.user(scope="training:read")))
    assert resp.status_code == 403


async def test_backend_calls_carry_the_users_exchanged_token_one_exchange_per_scope(client, tokens, test_issuer):
    """resource-api reaches rl-trainer only with the user's token exchanged (RFC 8693) for
    the scope each call needs: one exchange for the submit (trainer:jobs.write), one for
    every read after it (trainer:jobs.read, cached); rl-trainer files the job under the
    token's user, so the same user reads it back and another user cannot."""
    owner = tokens.bearer(tokens.user())
    before = test_issuer.exchange_requests
    resp = await client.post("/v1/training-jobs", json=JOB, headers=owner)
    assert resp.status_code == 202, resp.text
    location = resp.headers["location"]
    for _ in range(3):
        resp = await client.get(location, headers=owner)
        assert resp.status_code == 200, resp.text
    assert test_issuer.exchange_requests - before == 2
    resp = await client.get(location, headers=tokens.bearer(tokens.user()))
    assert resp.status_code == 404
    await client.post(f"{location}:cancel", headers=owner)  # leave the worker free
    await poll(client, location, owner, lambda j: j["status"] in ("cancelled", "succeeded", "failed"), 60)
