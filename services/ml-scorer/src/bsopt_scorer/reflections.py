"""Reflections in the running service: the OpenAI-compatible provider, the reflector
built from settings, and each user's reflection tone (``scorer.reflection_settings``).

The pure parts (schema, guardrails, templates, fallback and cache) are
:mod:`bsopt_scorer.domain.reflections`.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import openai
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from bsopt_scorer import models
from bsopt_scorer.config import ScorerSettings
from bsopt_scorer.domain.reflections import (
    DEFAULT_TONE,
    TONES,
    ReflectionPrompt,
    Reflector,
    Tone,
    check_tone,
)

log = logging.getLogger(__name__)


class InvalidAnswer(ValueError):
    """The model's answer is not one JSON object."""


class OpenAICompatibleLLM:
    """An :class:`~bsopt_scorer.domain.reflections.LLMService` over a chat-completions
    API (the ``openai`` client: OpenAI, vLLM, Ollama, ...): temperature 0, JSON mode
    (``response_format={"type": "json_object"}``), one attempt (no retries) with connect and
    read timeouts of ``timeout_s`` (the answer must start within it). It sends the prompt's
    system text (rules and schema) and its facts (feature summaries), nothing else. Raises
    the client's errors (timeout, connection, HTTP status) and :class:`InvalidAnswer`; the
    reflector turns each into the template."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout_s: float = 10.0):
        self.model = model
        self.name = f"openai:{model}"[:64]
        self.timeout_s = timeout_s
        # vLLM and Ollama need no key, but the client wants one
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "unused", timeout=timeout_s,
                                    max_retries=0)

    def generate(self, prompt: ReflectionPrompt, schema: dict[str, Any]) -> dict[str, Any]:
        completion = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "system", "content": prompt.system(schema)},
                      {"role": "user", "content": prompt.user()}],
            temperature=0,
            response_format={"type": "json_object"},
            timeout=self.timeout_s,
        )
        if not completion.choices:
            raise InvalidAnswer("no choices")
        content = completion.choices[0].message.content
        if not content:
            raise InvalidAnswer("empty content")
        try:
            answer = json.loads(content)
        except json.JSONDecodeError as exc:
            raise InvalidAnswer(f"not JSON: {exc.msg}") from None
        if not isinstance(answer, dict):
            raise InvalidAnswer(f"not a JSON object: {type(answer).__name__}")
        return answer


def reflector_from(settings: ScorerSettings) -> Reflector:
    """The templates alone, or the OpenAI-compatible provider when ``LLM_BASE_URL`` and
    ``LLM_MODEL`` are set (templates as its fallback)."""
    if not settings.llm_enabled():
        return Reflector(None, cache_size=settings.llm_cache_size)
    assert settings.llm_base_url is not None and settings.llm_model is not None
    provider = OpenAICompatibleLLM(settings.llm_base_url, settings.llm_model, api_key=settings.llm_secret(),
                                   timeout_s=settings.llm_timeout_s)
    log.info("reflections from %s at %s (timeout %.1fs), templates as fallback", provider.name,
             settings.llm_base_url, settings.llm_timeout_s)
    return Reflector(provider, cache_size=settings.llm_cache_size)


def reflection_tone(session: Session, user_id: str) -> Tone:
    """The user's tone, ``supportive`` unless set."""
    tone = session.execute(select(models.reflection_settings.c.tone)
                           .where(models.reflection_settings.c.user_id == user_id)).scalar_one_or_none()
    return tone if tone in TONES else DEFAULT_TONE


def set_reflection_tone(session: Session, user_id: str, tone: str) -> Tone:
    """Store the user's tone (idempotent upsert). Raises ValueError for another tone."""
    checked = check_tone(tone)
    now = datetime.now(UTC)
    stmt = pg_insert(models.reflection_settings).values(user_id=user_id, tone=checked, updated_at=now)
    session.execute(stmt.on_conflict_do_update(index_elements=["user_id"],
                                               set_={"tone": checked, "updated_at": now}))
    return checked
