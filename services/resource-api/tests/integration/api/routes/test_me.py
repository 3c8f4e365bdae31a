"""``GET /v1/me`` answers who the token says the caller is."""

from __future__ import annotations


async def test_me_returns_subject_client_and_sorted_scopes(client, tokens):
    token = tokens.user("trades:read training:read", sub="u-42")
    resp = await client.get("/v1/me", headers=tokens.bearer(token))
    assert resp.status_code == 200
    assert resp.json() == {
        "sub": "u-42", "client_id": "bsopt-cli", "scopes": ["trades:read", "training:read"],
    }


async def test_me_needs_no_particular_scope(client, tokens):
    resp = await client.get("/v1/me", headers=tokens.bearer(tokens.user("", sub="u-7")))
    assert resp.status_code == 200
    assert resp.json()["scopes"] == []
