"""Probes answer without a token."""

from __future__ import annotations


async def test_healthz_and_readyz(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


async def test_unknown_path_is_404_problem(client):
    resp = await client.get("/v1/nope")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"
