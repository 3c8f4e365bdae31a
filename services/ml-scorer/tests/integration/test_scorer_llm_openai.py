"""The OpenAI-compatible reflection provider, with the real ``openai`` client, against a
local stand-in of the chat-completions API on 127.0.0.1 (issue 9 §2): a valid answer is
used; an invalid JSON answer, a guardrail-violating answer, an HTTP error and a timeout
each give the template (the timeout within its bound); the request asks for temperature
0 and JSON mode; and, scoring a real trade, what the stand-in received holds no trade,
user or account id, symbol or token."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from bsopt.broker_gateway.v1 import events_pb2 as broker_events
from bsopt_common import codec, migrations
from bsopt_common.db import create_db_engine, make_session_factory, session_scope
from bsopt_common.events import Outbox
from bsopt_common.marketdata import bundled_provider
from bsopt_common.money import Money
from bsopt_common.vocabulary import Side
from bsopt_scorer import models
from bsopt_scorer.config import ScorerSettings
from bsopt_scorer.domain.features import TradeFeatures
from bsopt_scorer.domain.reflections import TEMPLATE_PROVIDER, Reflector, template_text
from bsopt_scorer.reflections import OpenAICompatibleLLM, reflection_tone, reflector_from, set_reflection_tone
from bsopt_scorer.scoring import TradeScorer

VALID = ("You bought after a +6.2% 5-day run-up with RSI 72.4, so check whether the plan came first. "
         "Habit: write your exit level before you place the next order.")


@dataclass
class StandIn:
    """A chat-completions endpoint (``POST /v1/chat/completions``) answering per ``mode``."""

    mode: str = "valid"
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def content(self, request: dict[str, Any]) -> str:
        facts = json.loads(request["messages"][-1]["content"])
        if self.mode == "invalid-json":
            return "Sure! Here is your reflection: {text: oops"
        text = "This setup is guaranteed profit. Habit: buy GOOGL now." if self.mode == "guaranteed" else VALID
        return json.dumps({"text": text, "tone": facts["tone"], "bias": facts["label"]})


def _handler(stand_in: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            stand_in.requests.append(body)
            stand_in.headers.append({k.lower(): v for k, v in self.headers.items()})
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": {"message": "not found"}})
                return
            if stand_in.mode == "http-500":
                self._send(500, {"error": {"message": "boom", "type": "server_error"}})
                return
            if stand_in.delay_s:
                time.sleep(stand_in.delay_s)
            self._send(200, {
                "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": stand_in.content(body)}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            })

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out
                pass

    return Handler


@pytest.fixture
def stand_in() -> Iterator[tuple[StandIn, str]]:
    state = StandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


F = TradeFeatures(rsi_14=72.4, atr_14=14.2, bollinger_position=1.08, change_1d=0.011, change_5d=0.062,
                  close_usd=1010.0)


def reflect(url: str, tone: str = "supportive", timeout_s: float = 5.0) -> Any:
    llm = OpenAICompatibleLLM(url, "coach-test", api_key="sk-test-secret", timeout_s=timeout_s)
    return Reflector(llm).reflect("BUY", "FOMO", "fomo.run_up_5d", F, tone)  # type: ignore[arg-type]


def test_valid_answer_is_used_with_temperature_0_and_json_mode(stand_in: tuple[StandIn, str]) -> None:
    state, url = stand_in
    out = reflect(url, "strict")
    assert (out.text, out.tone, out.bias, out.provider) == (VALID, "strict", "FOMO", "openai:coach-test")
    [req] = state.requests
    assert req["temperature"] == 0
    assert req["response_format"] == {"type": "json_object"}
    assert req["model"] == "coach-test"
    assert [m["role"] for m in req["messages"]] == ["system", "user"]
    assert '"required"' in req["messages"][0]["content"]  # the schema is in the prompt
    assert json.loads(req["messages"][1]["content"])["features"]["rsi_14"] == 72.4
    assert state.headers[0]["authorization"] == "Bearer sk-test-secret"


@pytest.mark.parametrize("mode", ["invalid-json", "guaranteed", "http-500"])
def test_bad_answers_fall_back_to_the_template(stand_in: tuple[StandIn, str], mode: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    state, url = stand_in
    state.mode = mode
    out = reflect(url)
    assert out.provider == TEMPLATE_PROVIDER
    assert out.text == template_text("BUY", "FOMO", F, "supportive")
    assert len(state.requests) == 1  # no retries
    assert "using the template" in caplog.text


def test_timeout_falls_back_within_the_timeout(stand_in: tuple[StandIn, str]) -> None:
    state, url = stand_in
    state.delay_s = 3.0
    started = time.monotonic()
    out = reflect(url, timeout_s=0.5)
    elapsed = time.monotonic() - started
    assert out.provider == TEMPLATE_PROVIDER
    assert elapsed < 0.5 + 0.5, elapsed
    assert len(state.requests) == 1


def test_unreachable_provider_falls_back() -> None:
    out = reflect("http://127.0.0.1:9/v1", timeout_s=1.0)
    assert out.provider == TEMPLATE_PROVIDER


def test_settings_off_by_default_and_on_with_base_url_and_model(stand_in: tuple[StandIn, str]) -> None:
    _, url = stand_in
    assert reflector_from(ScorerSettings()).provider is None
    settings = ScorerSettings(llm_base_url=url, llm_model="coach-test", llm_timeout_s=2, llm_cache_size=7)
    reflector = reflector_from(settings)
    assert reflector.provider_name == "openai:coach-test" and reflector.cache_size == 7


# ----------------------------------------------------------------- scoring, end to end


@pytest.fixture(scope="module")
def session_factory(postgres_url: str) -> Iterator[Any]:
    engine = create_db_engine(postgres_url)
    migrations.upgrade("bsopt_scorer", engine, models.SCHEMA)
    yield make_session_factory(engine)
    engine.dispose()


def imported(trade_id: str, user_id: str, side: Side = Side.BUY) -> broker_events.TradeImported:
    return broker_events.TradeImported(
        trade_id=trade_id, user_id=user_id, account_id="acct-7f3e9c1d-secret-account", broker="paper",
        symbol="GOOGL", side=codec.SIDE.to_pb(side), quantity=3, price=codec.money_pb(Money("1095.06", "USD")),
        executed_at=codec.timestamp(datetime(2018, 1, 26, tzinfo=UTC)))


def test_scoring_sends_no_ids_and_stores_provider_and_tone(stand_in: tuple[StandIn, str],
                                                           session_factory: Any) -> None:
    state, url = stand_in
    llm_scorer = TradeScorer(bundled_provider(), Outbox(models.SCHEMA),
                             Reflector(OpenAICompatibleLLM(url, "coach-test", api_key="sk-token-abc123")))
    template_scorer = TradeScorer(bundled_provider(), Outbox(models.SCHEMA))
    with session_scope(session_factory) as session:
        assert reflection_tone(session, "user-42-secret") == "supportive"
        set_reflection_tone(session, "user-42-secret", "strict")
        set_reflection_tone(session, "user-42-secret", "strict")  # idempotent
        with pytest.raises(ValueError, match="tone"):
            set_reflection_tone(session, "user-42-secret", "harsh")
    with session_scope(session_factory) as session:
        by_llm = llm_scorer.score(imported("trade-llm-91b2", "user-42-secret"), session)
        by_template = template_scorer.score(imported("trade-tpl-91b2", "user-43"), session)
    assert by_llm.reflection == VALID
    assert by_template.label == by_llm.label  # the tag does not depend on the provider
    assert by_template.reflection == template_text("BUY", by_template.label.value, by_template.features,
                                                   "supportive")
    [req] = state.requests
    sent = json.dumps(req) + json.dumps(state.headers[0].get("user-agent", ""))
    for secret in ("trade-llm-91b2", "user-42-secret", "acct-7f3e9c1d", "GOOGL", "sk-token-abc123", "1095"):
        assert secret not in sent, secret
    assert json.loads(req["messages"][1]["content"])["tone"] == "strict"
    with session_scope(session_factory) as session:
        rows = dict(session.execute(select(models.scored_trades.c.trade_id,
                                           models.scored_trades.c.reflection_provider)).all())
    assert rows == {"trade-llm-91b2": "openai:coach-test", "trade-tpl-91b2": TEMPLATE_PROVIDER}
