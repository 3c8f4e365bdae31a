"""Every protected endpoint refuses what RFC 6750 §3 says it must, before any backend is
called (the backends here are closed ports: reaching one would answer 503, not 401),
and says so as problem+json with the Bearer challenge."""

from __future__ import annotations

import pytest

# (method, path, JSON body, scope the endpoint needs)
ENDPOINTS = [
    ("GET", "/v1/me", None, None),
    ("POST", "/v1/training-jobs", {
        "symbol": "GOOGL", "train_start": "2020-01-01", "train_end": "2021-12-31",
        "test_start": "2022-02-01", "test_end": "2022-12-31", "total_timesteps": 2048,
    }, "training:write"),
    ("GET", "/v1/training-jobs/job-1", None, "training:read"),
    ("POST", "/v1/training-jobs/job-1/paper-trading", {"account_id": "acct-1"}, "training:write"),
    ("POST", "/v1/accounts", {"broker": "paper", "initial_cash": {"amount": "10000", "currency": "USD"}},
     "trades:write"),
    ("GET", "/v1/accounts/acct-1", None, "trades:read"),
    ("POST", "/v1/accounts/acct-1/imports", {"start": "2024-01-01", "end": "2024-02-01"}, "trades:write"),
    ("GET", "/v1/imports/imp-1", None, "trades:read"),
    ("GET", "/v1/trades", None, "trades:read"),
    ("GET", "/v1/digests/latest", None, "trades:read"),
]
IDS = [f"{m} {p}" for m, p, _, _ in ENDPOINTS]
ALL = "training:read training:write trades:read trades:write"


def _without(scope: str) -> str:
    return " ".join(s for s in ALL.split() if s != scope)


@pytest.mark.parametrize(("method", "path", "body", "scope"), ENDPOINTS, ids=IDS)
async def test_no_token_is_401_with_bearer_challenge(client, method, path, body, scope):
    resp = await client.request(method, path, json=body)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["status"] == 401


@pytest.mark.parametrize("kind", ["wrong_audience", "expired", "unknown_key"])
@pytest.mark.parametrize(("method", "path", "body", "scope"), ENDPOINTS, ids=IDS)
async def test_invalid_token_is_401_invalid_token(client, tokens, kind, method, path, body, scope):
    token = getattr(tokens, kind)()
    resp = await client.request(method, path, json=body, headers=tokens.bearer(token))
    assert resp.status_code == 401, resp.text
    assert 'error="invalid_token"' in resp.headers["www-authenticate"]
    assert resp.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(("method", "path", "body", "scope"), [e for e in ENDPOINTS if e[3]],
                         ids=[i for i, e in zip(IDS, ENDPOINTS, strict=True) if e[3]])
async def test_missing_scope_is_403_insufficient_scope(client, tokens, method, path, body, scope):
    resp = await client.request(method, path, json=body, headers=tokens.bearer(tokens.user(_without(scope))))
    assert resp.status_code == 403, resp.text
    challenge = resp.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert f'scope="{scope}"' in challenge
    assert resp.json()["detail"] == f"token lacks scope(s): {scope}"


async def test_token_error_messages_never_echo_the_token(client, tokens):
    token = tokens.expired()
    resp = await client.get("/v1/me", headers=tokens.bearer(token))
    assert resp.status_code == 401
    assert token not in resp.text
    assert token not in resp.headers["www-authenticate"]
