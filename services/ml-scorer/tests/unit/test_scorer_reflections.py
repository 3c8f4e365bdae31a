"""Reflections (issue 9 §2): the templates per label and tone satisfy the guardrails and
the schema, the guardrail checker refuses advice and promises, and the reflector falls
back to the template, caches accepted answers and sends no ids."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from bsopt_common.marketdata import bundled_provider
from bsopt_scorer.domain.features import TradeFeatures, indicator_frame
from bsopt_scorer.domain.reflections import (
    REFLECTION_SCHEMA,
    TEMPLATE_PROVIDER,
    TONES,
    ReflectionAnswer,
    ReflectionPrompt,
    Reflector,
    TemplateLLM,
    answer_violations,
    guardrail_violations,
    sentences,
    template_text,
)
from bsopt_scorer.domain.tags import tag_trade


def feat(**kw: float) -> TradeFeatures:
    base = dict(rsi_14=52.0, atr_14=2.5, bollinger_position=0.55, change_1d=0.002, change_5d=0.01, close_usd=100.0)
    base.update(kw)
    return TradeFeatures(**base)


NEUTRAL = feat()
CASES = [
    ("BUY", feat(change_5d=0.062, rsi_14=72.4), "FOMO", ["+6.2%", "72.4", "$2.50"]),
    ("SELL", feat(change_1d=-0.041, rsi_14=28.0), "PANIC", ["-4.1%", "28.0", "$2.50"]),
    ("BUY", feat(rsi_14=41.3, bollinger_position=0.22), "DISCIPLINE", ["41.3", "0.22", "pullback"]),
    ("SELL", feat(rsi_14=67.8, change_5d=0.034), "DISCIPLINE", ["67.8", "+3.4%", "strength"]),
    ("BUY", NEUTRAL, "NONE", ["52.0", "buy"]),
    ("SELL", NEUTRAL, "NONE", ["52.0", "sell"]),
]


# ------------------------------------------------------------------------- templates


@pytest.mark.parametrize("tone", TONES)
@pytest.mark.parametrize(("side", "features", "label", "numbers"), CASES)
def test_template_per_label_and_tone(side: str, features: TradeFeatures, label: str, numbers: list[str],
                                     tone: Any) -> None:
    tag = tag_trade(side, features)  # type: ignore[arg-type]
    assert tag.label == label
    reflection = Reflector().reflect(side, tag.label, tag.rule, features, tone)
    assert reflection.provider == TEMPLATE_PROVIDER
    assert (reflection.tone, reflection.bias) == (tone, label)
    assert guardrail_violations(reflection.text) == []
    _first, habit = sentences(reflection.text)
    assert habit.startswith("Habit:")
    for n in numbers:
        assert n in reflection.text
    # the answer is what the schema describes, and the reflector accepts it
    answer = TemplateLLM().generate(ReflectionPrompt(side, label, tag.rule, tone, features), REFLECTION_SCHEMA)
    ReflectionAnswer.model_validate(answer)
    assert answer_violations(answer, ReflectionPrompt(side, label, tag.rule, tone, features)) == []


@pytest.mark.parametrize(("side", "features", "label", "numbers"), CASES)
def test_tones_differ(side: str, features: TradeFeatures, label: str, numbers: list[str]) -> None:
    assert template_text(side, label, features, "supportive") != template_text(side, label, features, "strict")


def test_template_is_deterministic_and_refuses_unknowns() -> None:
    assert template_text("BUY", "FOMO", NEUTRAL, "strict") == template_text("BUY", "FOMO", NEUTRAL, "strict")
    with pytest.raises(ValueError, match="label"):
        template_text("BUY", "GREED", NEUTRAL, "supportive")
    with pytest.raises(ValueError, match="side"):
        template_text("SHORT", "NONE", NEUTRAL, "supportive")
    with pytest.raises(ValueError, match="tone"):
        template_text("BUY", "NONE", NEUTRAL, "harsh")  # type: ignore[arg-type]


def test_templates_pass_the_guardrails_on_real_googl_days() -> None:
    frame = indicator_frame(bundled_provider().fetch_history("GOOGL")).dropna()
    rows = [TradeFeatures(*r) for r in frame.itertuples(index=False)]
    labels = set()
    for f in rows[:: max(1, len(rows) // 300)]:
        for side in ("BUY", "SELL"):
            t = tag_trade(side, f)  # type: ignore[arg-type]
            labels.add((side, t.label))
            for tone in TONES:
                text = template_text(side, t.label, f, tone)
                assert guardrail_violations(text) == [], text
    assert len(labels) == 6


# ------------------------------------------------------------------------ guardrails

GOOD = ("You bought after a +6.2% run-up; was it planned? "
        "Habit: write down your exit before you place the next order.")


@pytest.mark.parametrize(("text", "why"), [
    ("You bought after a run-up. It was a guaranteed profit. Habit: write your exit.", "2 sentences"),
    ("You bought after a run-up and you will make money. Habit: write your exit.", "promise of profit"),
    ("That set-up has guaranteed profit for the patient. Habit: write your exit first.", "promise of profit"),
    ("This is a risk-free entry. Habit: write your exit first.", "promise of profit"),
    ("The trend is intact, so buy GOOGL again. Habit: write your exit first.", "financial advice"),
    ("The drop is not over, sell it now. Habit: write your exit first.", "financial advice"),
    ("You should buy more on the next dip. Habit: write your exit first.", "financial advice"),
    ("The price target of $150 is close. Habit: write your exit first.", "price target"),
    ("The stock will reach $200 by spring. Habit: write your exit first.", "price target"),
    ("You bought after a run-up with RSI 72.", "2 sentences"),
    ("You bought after a run-up. Write your exit next time.", "1 habit"),
    ("Habit: write your exit. You bought after a run-up.", "1 habit"),
    ("Habit: rest. Habit: write your exit.", "1 habit"),
    ("You bought after a run-up. Habit: be better.", "no concrete action"),
    ("You bought after a run-up. Habit: write your exit", "end a sentence"),
])
def test_guardrails_refuse(text: str, why: str) -> None:
    problems = guardrail_violations(text)
    assert any(why in p for p in problems), problems


def test_guardrails_accept_plain_reflection() -> None:
    assert guardrail_violations(GOOD) == []
    assert sentences("Close $1,010.00 at 1.08 and +6.2%. Habit: set a stop.") == [
        "Close $1,010.00 at 1.08 and +6.2%.", "Habit: set a stop."]


def test_schema_is_text_tone_bias_only() -> None:
    assert set(REFLECTION_SCHEMA["properties"]) == {"text", "tone", "bias"}
    assert set(REFLECTION_SCHEMA["required"]) == {"text", "tone", "bias"}
    assert REFLECTION_SCHEMA["additionalProperties"] is False
    assert REFLECTION_SCHEMA["properties"]["tone"]["enum"] == ["supportive", "strict"]


PROMPT = ReflectionPrompt("BUY", "FOMO", "fomo.run_up_5d", "strict", feat(change_5d=0.062))


@pytest.mark.parametrize(("answer", "why"), [
    ("just text", "not a JSON object"),
    ({"text": GOOD, "tone": "strict"}, "schema"),
    ({"text": GOOD, "tone": "strict", "bias": "FOMO", "extra": 1}, "schema"),
    ({"text": GOOD, "tone": "gentle", "bias": "FOMO"}, "schema"),
    ({"text": 5, "tone": "strict", "bias": "FOMO"}, "schema"),
    ({"text": GOOD, "tone": "supportive", "bias": "FOMO"}, "tone"),
    ({"text": GOOD, "tone": "strict", "bias": "PANIC"}, "bias"),
    ({"text": "You bought. You will make money. Habit: hold.", "tone": "strict", "bias": "FOMO"}, "sentences"),
])
def test_answers_refused(answer: object, why: str) -> None:
    problems = answer_violations(answer, PROMPT)
    assert any(why in p for p in problems), problems


def test_answer_accepted() -> None:
    assert answer_violations({"text": GOOD, "tone": "strict", "bias": "FOMO"}, PROMPT) == []


# ------------------------------------------------------------------------- reflector


class Fake:
    def __init__(self, answer: Any = None, error: Exception | None = None) -> None:
        self.name = "fake"
        self.answer = answer
        self.error = error
        self.prompts: list[ReflectionPrompt] = []
        self.lock = threading.Lock()

    def generate(self, prompt: ReflectionPrompt, schema: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.prompts.append(prompt)
        assert schema is REFLECTION_SCHEMA
        if self.error is not None:
            raise self.error
        return dict(self.answer(prompt)) if callable(self.answer) else self.answer


def good(prompt: ReflectionPrompt) -> dict[str, Any]:
    return {"text": GOOD, "tone": prompt.tone, "bias": prompt.label}


def test_provider_answer_is_used_and_cached() -> None:
    fake = Fake(good)
    r = Reflector(fake, cache_size=2)
    f = feat(change_5d=0.062)
    first = r.reflect("BUY", "FOMO", "fomo.run_up_5d", f, "supportive")
    assert (first.text, first.provider, first.tone) == (GOOD, "fake", "supportive")
    assert r.reflect("BUY", "FOMO", "fomo.run_up_5d", f, "supportive") == first
    assert len(fake.prompts) == 1
    # another tone, label or feature is another key
    r.reflect("BUY", "FOMO", "fomo.run_up_5d", f, "strict")
    r.reflect("BUY", "FOMO", "fomo.run_up_5d", feat(change_5d=0.07), "supportive")
    assert len(fake.prompts) == 3
    # LRU of 2: the first entry was evicted
    r.reflect("BUY", "FOMO", "fomo.run_up_5d", f, "supportive")
    assert len(fake.prompts) == 4


@pytest.mark.parametrize("fake", [
    Fake(error=TimeoutError("slow")),
    Fake(error=RuntimeError("HTTP 500")),
    Fake({"text": "Guaranteed profit ahead. Habit: buy GOOGL now.", "tone": "supportive", "bias": "FOMO"}),
    Fake({"text": GOOD}),
    Fake("not a dict"),
], ids=["timeout", "error", "guardrail", "schema", "not-object"])
def test_fallback_to_template_is_not_cached(fake: Fake, caplog: pytest.LogCaptureFixture) -> None:
    r = Reflector(fake)
    f = feat(change_5d=0.062)
    for _ in range(2):
        out = r.reflect("BUY", "FOMO", "fomo.run_up_5d", f, "supportive")
        assert out.provider == TEMPLATE_PROVIDER
        assert out.text == template_text("BUY", "FOMO", f, "supportive")
    assert len(fake.prompts) == 2
    assert "using the template" in caplog.text


def test_prompt_holds_feature_summaries_only() -> None:
    facts = PROMPT.facts()
    assert set(facts) == {"side", "label", "rule", "tone", "features"}
    assert set(facts["features"]) == {"rsi_14", "atr_14", "bollinger_position", "change_1d", "change_5d",
                                      "close_usd"}
    assert all(isinstance(v, float) for v in facts["features"].values())
    assert PROMPT.cache_key() == ReflectionPrompt("BUY", "FOMO", "fomo.run_up_5d", "strict",
                                                  feat(change_5d=0.062)).cache_key()
    assert "Habit:" in PROMPT.system(REFLECTION_SCHEMA) and "'strict'" in PROMPT.system(REFLECTION_SCHEMA)


def test_reflector_refuses_bad_tone() -> None:
    with pytest.raises(ValueError, match="tone"):
        Reflector().reflect("BUY", "NONE", "none", NEUTRAL, "harsh")  # type: ignore[arg-type]
