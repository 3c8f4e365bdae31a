"""``/v1/ws/coach`` over a real uvicorn with the ``websockets`` client: handshake
refusals, bearer subprotocol, replay with ``?after=``, live pushes to the right user
only, and closing when the token expires."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bsopt.broker_gateway.v1 import broker_gateway_pb2 as broker_pb
from bsopt.ml_scorer.v1 import ml_scorer_pb2 as scorer_pb
from bsopt_api import encoding, projections, stream
from bsopt_api.app import create_app
from bsopt_api.bootstrap import bootstrap
from bsopt_common import codec
from bsopt_common.db import session_scope
from bsopt_common.money import Money


def scored(user_id: str, **kw) -> scorer_pb.ScoredTrade:
    executed = Timestamp()
    executed.FromJsonString("2024-03-01T00:00:00Z")
    fields = dict(
        trade_id=f"t-{uuid.uuid4().hex[:10]}", user_id=user_id, account_id="acct-1", symbol="GOOGL",
        side=broker_pb.SIDE_BUY, quantity=10, price=codec.money_pb(Money.of("140.50", "USD")), executed_at=executed,
        label=scorer_pb.BIAS_LABEL_FOMO, explanation="bought after +9.1% in 5 days (RSI 78)",
        reflection="What did you know that the crowd did not?",
    )
    fields.update(kw)
    return scorer_pb.ScoredTrade(**fields)


def store(db, *trades: scorer_pb.ScoredTrade) -> list[dict]:
    """Store as the trades.scored.v1 consumer does: the coach message, then the stream event."""
    out = []
    with session_scope(db) as session:
        for t in trades:
            projections.record_coach_message(session, t)
            out.append(stream.append(session, t.user_id, stream.COACH_REFLECT, encoding.coach_message(t),
                                     dedupe_key=f"coach.reflect:{t.trade_id}"))
    return out


async def recv_json(ws, timeout: float = 5.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def assert_silent(ws, seconds: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), seconds)


# --- handshake ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [None, "wrong_audience", "expired", "unknown_key", "missing_scope"])
async def test_refused_handshake_never_opens(running_api, tokens, kind):
    headers = {}
    if kind == "missing_scope":
        headers = tokens.bearer(tokens.user("trades:write training:read"))
    elif kind is not None:
        headers = tokens.bearer(getattr(tokens, kind)())
    with pytest.raises(InvalidStatus) as refused:
        async with connect(running_api.ws_url, additional_headers=headers):
            pass
    # answered like the HTTP API (RFC 6750), with every security header (issue 6 §6: uvicorn's
    # own bare 403 carried none)
    response = refused.value.response
    expected = (403, "insufficient_scope") if kind == "missing_scope" else (401, "invalid_token")
    assert response.status_code == expected[0]
    assert f'error="{expected[1]}"' in response.headers["WWW-Authenticate"]
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Referrer-Policy"] and response.headers["Permissions-Policy"]


async def test_refusal_is_close_1008_before_accept(settings_for, token_provider, tokens):
    """On a server without the ASGI WebSocket Denial Response extension the app closes
    with 1008 and never sends websocket.accept."""
    settings = settings_for()
    app = create_app(settings, runtime=bootstrap(settings, token_provider=token_provider("resource-api")))
    sent: list[dict] = []
    incoming = [{"type": "websocket.connect"}]

    async def receive() -> dict:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict) -> None:
        sent.append(message)

    for headers in ([], [(b"authorization", f"Bearer {tokens.expired()}".encode())]):
        sent.clear()
        incoming[:] = [{"type": "websocket.connect"}]
        scope = {
            "type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "path": "/v1/ws/coach",
            "raw_path": b"/v1/ws/coach", "query_string": b"", "headers": headers, "subprotocols": [],
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "app": app,
        }
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)
        assert [m["type"] for m in sent] == ["websocket.close"]
        assert sent[0]["code"] == 1008


async def test_bad_after_is_refused(running_api, tokens):
    with pytest.raises(InvalidStatus):
        async with connect(running_api.ws_url + "?after=-1", additional_headers=tokens.bearer(tokens.user())):
            pass


async def test_token_as_bearer_subprotocol_for_browsers(running_api, tokens, db):
    user = tokens.new_user()
    first, = store(db, scored(user))
    token = tokens.user("trades:read", sub=user)
    async with connect(running_api.ws_url + "?after=0", subprotocols=["bearer", token]) as ws:
        assert ws.subprotocol == "bearer"
        assert (await recv_json(ws))["seq"] == first["seq"]


# --- replay and live ----------------------------------------------------------------------


async def test_after_replays_stored_messages_in_order_then_nothing_else(running_api, tokens, db):
    user, other = tokens.new_user(), tokens.new_user()
    a, _, b = store(db, scored(user), scored(other), scored(user, label=scorer_pb.BIAS_LABEL_PANIC,
                                                             side=broker_pb.SIDE_SELL))
    headers = tokens.bearer(tokens.user("trades:read", sub=user))

    async with connect(running_api.ws_url + "?after=0", additional_headers=headers) as ws:
        got = [await recv_json(ws), await recv_json(ws)]
        await assert_silent(ws)
    assert got == [a, b]
    assert got[1] == {
        "type": "coach.reflect", "id": b["id"], "seq": b["id"], "trade_id": got[1]["trade_id"], "label": "PANIC",
        "explanation": "bought after +9.1% in 5 days (RSI 78)",
        "reflection": "What did you know that the crowd did not?", "symbol": "GOOGL", "side": "sell",
        "executed_at": "2024-03-01T00:00:00Z",
    }

    async with connect(running_api.ws_url + f"?after={a['seq']}", additional_headers=headers) as ws:
        assert await recv_json(ws) == b
        await assert_silent(ws)

    async with connect(running_api.ws_url, additional_headers=headers) as ws:  # live only
        await assert_silent(ws)


async def test_live_message_reaches_only_that_users_sockets(running_api, tokens):
    user, other = tokens.new_user(), tokens.new_user()
    hub = running_api.runtime.hub
    async with (
        connect(running_api.ws_url, additional_headers=tokens.bearer(tokens.user(sub=user))) as mine1,
        connect(running_api.ws_url, additional_headers=tokens.bearer(tokens.user(sub=user))) as mine2,
        connect(running_api.ws_url, additional_headers=tokens.bearer(tokens.user(sub=other))) as theirs,
    ):
        for _ in range(50):  # the server registers a socket just after accepting it
            if hub.connections(user) == 2 and hub.connections(other) == 1:
                break
            await asyncio.sleep(0.05)
        message = {"type": "coach.reflect", "seq": 1, "trade_id": "t-live"}
        hub.publish_threadsafe(user, message)  # as the consumer's worker thread does
        assert await recv_json(mine1) == message
        assert await recv_json(mine2) == message
        await assert_silent(theirs)
    for _ in range(50):
        if hub.connections(user) == 0:
            break
        await asyncio.sleep(0.05)
    assert hub.connections(user) == 0


async def test_socket_closes_1008_when_the_token_expires(running_api, tokens):
    token = tokens.issuer.token(aud="urn:bsopt:resource-api", scope="trades:read", ttl_seconds=2)
    async with connect(running_api.ws_url, additional_headers=tokens.bearer(token)) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd.code == 1008
    assert "expired" in closed.value.rcvd.reason
