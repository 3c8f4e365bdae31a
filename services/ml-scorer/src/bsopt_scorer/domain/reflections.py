"""Post-trade reflections through an :class:`LLMService`, with guardrails.

A reflection is one JSON object ``{text, tone, bias}`` (:data:`REFLECTION_SCHEMA`):

- ``text``: exactly two sentences. The first reflects on the trade with its numbers; the
  second starts with ``Habit:`` and names one concrete habit (a verb such as write, set,
  wait, record) to practise before the next trade.
- ``tone``: ``supportive`` or ``strict``, the user's setting (default supportive).
- ``bias``: the trade's label (``FOMO``, ``PANIC``, ``DISCIPLINE``, ``NONE``).

Guardrails (:func:`guardrail_violations`): the two sentences and the one habit above, and
no financial advice: no telling the trader to buy, sell or short something ("buy GOOGL",
"sell now", "you should buy"), no price targets or price predictions ("target of $120",
"will reach"), no promises of profit ("guaranteed", "you will make", "risk-free").

Providers implement :class:`LLMService` (``generate(prompt, schema) -> dict``). The
default, :class:`TemplateLLM`, works offline: deterministic templates filled from the
features and the label, per tone, which satisfy the guardrails for every label (tested
on every GOOGL day). :class:`Reflector` asks a configured provider, checks its answer
against the schema, the requested tone and label and the guardrails, and falls back to
the template on any exception (timeout, HTTP error) or invalid answer, logging why and
never raising into scoring. Accepted answers are cached in process (an LRU keyed by the
SHA-256 of the prompt's facts: side, label, rule, tone and the feature summary).

A prompt carries only feature summaries (:meth:`ReflectionPrompt.facts`): the side, the
label and rule, the tone and the numeric features. Never a symbol, quantity, price paid,
trade, user or account id, or a token.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bsopt_scorer.domain.features import TradeFeatures
from bsopt_scorer.domain.tags import LABELS

log = logging.getLogger(__name__)

Tone = Literal["supportive", "strict"]
TONES: tuple[Tone, ...] = ("supportive", "strict")
DEFAULT_TONE: Tone = "supportive"
TEMPLATE_PROVIDER = "template"
HABIT_PREFIX = "Habit:"
MAX_TEXT_CHARS = 600


class ReflectionAnswer(BaseModel):
    """A post-trade reflection on one trade."""

    model_config = ConfigDict(extra="forbid", strict=True, title="Reflection")

    text: str = Field(min_length=20, max_length=MAX_TEXT_CHARS,
                      description="Exactly two sentences; the second starts with 'Habit:' and names one habit.")
    tone: Tone
    bias: Literal["FOMO", "PANIC", "DISCIPLINE", "NONE"]


#: JSON schema of a reflection (``{text, tone, bias}``, nothing else), sent to providers.
REFLECTION_SCHEMA: dict[str, Any] = ReflectionAnswer.model_json_schema()


@dataclass(frozen=True, slots=True)
class Reflection:
    """A checked reflection and the provider whose text it is (``template`` after a
    fallback)."""

    text: str
    tone: Tone
    bias: str
    provider: str


def check_tone(tone: str) -> Tone:
    if tone not in TONES:
        raise ValueError(f"tone must be one of {TONES}, got {tone!r}")
    return tone


def _summary(f: TradeFeatures) -> dict[str, float]:
    out: dict[str, float] = {}
    for x in fields(f):
        v = getattr(f, x.name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        out[x.name] = round(float(v), 4)
    return out


@dataclass(frozen=True, slots=True)
class ReflectionPrompt:
    """What a provider is asked: the facts of one scored trade and the tone.

    ``features`` stays in process (the template fills from it); providers that talk to a
    model send :meth:`system` and :meth:`user`, built from :meth:`facts` only."""

    side: str
    label: str
    rule: str
    tone: Tone
    features: TradeFeatures

    def facts(self) -> dict[str, Any]:
        """Everything a model sees about the trade: feature summaries, never ids."""
        return {"side": self.side, "label": self.label, "rule": self.rule, "tone": self.tone,
                "features": _summary(self.features)}

    def cache_key(self) -> str:
        """SHA-256 of the facts (features, label, tone, plus side and rule)."""
        return hashlib.sha256(json.dumps(self.facts(), sort_keys=True).encode()).hexdigest()

    def system(self, schema: dict[str, Any]) -> str:
        return (
            "You are a trading coach writing a short reflection on one trade the user already made. "
            "Answer with a single JSON object that matches this JSON schema, and nothing else: "
            f"{json.dumps(schema, sort_keys=True)}. "
            "Rules: 'text' is exactly two sentences. The first sentence reflects on the decision, using the "
            "numbers given. The second sentence starts with 'Habit:' and names exactly one concrete habit "
            "(write, set, wait, record, check ...) to practise before the next trade. "
            "No financial advice: never tell the user to buy, sell, hold or short anything, give no price "
            "targets or predictions, and never promise or suggest profit. "
            f"'tone' is '{self.tone}' ({_TONE_WORDS[self.tone]}). 'bias' is the label given."
        )

    def user(self) -> str:
        return json.dumps(self.facts(), sort_keys=True)


_TONE_WORDS: dict[Tone, str] = {
    "supportive": "warm and encouraging, acknowledging what went well",
    "strict": "direct and demanding, no softening",
}


class LLMService(Protocol):
    """Something that answers a prompt with a JSON object meant to match ``schema``.

    ``name`` is stored with each reflection. ``generate`` may raise (timeout, HTTP error)
    or answer anything; :class:`Reflector` checks it."""

    name: str

    def generate(self, prompt: ReflectionPrompt, schema: dict[str, Any]) -> dict[str, Any]: ...


# ------------------------------------------------------------------------ guardrails

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
_HABIT_VERBS = re.compile(
    r"\b(write|writing|set|setting|wait|record|log|note|check|list|keep|define|decide|name|place|review|"
    r"journal|pause|mark|compare|ask|rate|read)\b", re.IGNORECASE)
_ADVICE: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("promise of profit", re.compile(
        r"\bguarantee[ds]?\b|\byou(?:'ll| will| are going to| re going to)\s+(?:make|earn|profit|win|double)\b|"
        r"\brisk[- ]free\b|\bcan(?:no|')t lose\b|\bsure thing\b|\b(?:easy|free) money\b|"
        r"\b(?:profits?|gains?|returns?) (?:is|are) (?:certain|assured|locked in)\b", re.IGNORECASE)),
    ("price target or prediction", re.compile(
        r"\bprice targets?\b|\btarget price\b|\btargets? (?:of|at|is)\s+\$?\d|"
        r"\b(?:will|is going to|should) (?:reach|hit|rise to|climb to|go to|fall to|drop to|rebound to|"
        r"bounce(?: back)? to|go up|go down|recover)\b|\bto the moon\b|\bcan only go (?:up|down)\b",
        re.IGNORECASE)),
    ("financial advice", re.compile(
        r"\b(?:you should|you must|i recommend|we recommend|i suggest|i advise|my advice is to|consider)\s+"
        r"(?:buying|selling|shorting|holding|buy|sell|short|hold|adding to|going long)\b|"
        r"\b(?:buy|sell|short)\s+(?:it\s+|more\s+|everything\s+|the stock\s+)?(?:now|today|immediately|"
        r"right away|tomorrow|at the open)\b|\bbuy (?:the dip|more)\b|\bsell everything\b|\bnot financial advice\b",
        re.IGNORECASE)),
    # a ticker after an imperative: "buy GOOGL", "Sell $TSLA" (case-sensitive ticker)
    ("financial advice", re.compile(r"\b(?:[Bb]uy|[Ss]ell|[Ss]hort)\s+(?:more\s+)?\$?[A-Z]{1,5}\b")),
)


def sentences(text: str) -> list[str]:
    """``text`` split after ``.``, ``!`` or ``?`` followed by white space (decimals such as
    ``1.08`` and ``$1,010.00`` stay inside their sentence)."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def guardrail_violations(text: str) -> list[str]:
    """Why ``text`` may not be shown (empty: it may)."""
    problems: list[str] = []
    parts = sentences(text)
    if len(parts) != 2:
        problems.append(f"needs exactly 2 sentences, has {len(parts)}")
    if not text.strip().endswith((".", "!", "?")):
        problems.append("must end a sentence")
    habits = text.count(HABIT_PREFIX)
    if habits != 1 or len(parts) != 2 or not parts[1].startswith(HABIT_PREFIX):
        problems.append(f"needs exactly 1 habit: the second sentence starts with {HABIT_PREFIX!r}")
    elif not _HABIT_VERBS.search(parts[1]):
        problems.append("the habit names no concrete action")
    for name, pattern in _ADVICE:
        m = pattern.search(text)
        if m:
            problems.append(f"{name}: {m.group(0)!r}")
    return problems


def answer_violations(answer: object, prompt: ReflectionPrompt) -> list[str]:
    """Why a provider's answer is refused: not the schema, another tone or label, or a
    guardrail (empty: accepted)."""
    if not isinstance(answer, dict):
        return [f"not a JSON object: {type(answer).__name__}"]
    try:
        parsed = ReflectionAnswer.model_validate(answer)
    except ValidationError as exc:
        return [f"schema: {e['loc']} {e['msg']}" for e in exc.errors(include_url=False, include_input=False)]
    problems = []
    if parsed.tone != prompt.tone:
        problems.append(f"tone {parsed.tone!r}, asked {prompt.tone!r}")
    if parsed.bias != prompt.label:
        problems.append(f"bias {parsed.bias!r}, the trade is {prompt.label!r}")
    return problems + guardrail_violations(parsed.text)


# ------------------------------------------------------------------------- templates


def template_text(side: str, label: str, f: TradeFeatures, tone: Tone) -> str:
    """The deterministic reflection: two sentences, the second a ``Habit:``, filled from
    the features; wording per label (and side for DISCIPLINE and NONE) and tone.

    Raises:
        ValueError: unknown side, label or tone.
    """
    if side not in ("BUY", "SELL"):
        raise ValueError(f"side must be 'BUY' or 'SELL', got {side!r}")
    tone = check_tone(tone)
    rsi, bp, c1, c5 = f.rsi_14, f.bollinger_position, f.change_1d, f.change_5d
    atr_pct = f.atr_14 / f.close_usd if f.close_usd else 0.0
    one_atr = f"one ATR (${f.atr_14:,.2f}, {atr_pct:.1%} of the price)"
    strict = tone == "strict"
    if label == "FOMO":
        if strict:
            return (
                f"You bought after a {c5:+.1%} 5-day run-up (RSI {rsi:.1f}, Bollinger position {bp:.2f}), "
                f"which is chasing the move unless the entry was in your plan before it began. "
                f"{HABIT_PREFIX} write your entry reason and your exit {one_atr} below the entry before you "
                f"place any order, and skip the order when you cannot."
            )
        return (
            f"You bought after the price moved {c5:+.1%} in 5 days, with RSI at {rsi:.1f} and the close at "
            f"Bollinger position {bp:.2f}; was this entry in your plan before the run-up began, or did the "
            f"move pull you in? "
            f"{HABIT_PREFIX} before your next entry, write down where you would exit if the price fell back "
            f"{one_atr}."
        )
    if label == "PANIC":
        if strict:
            return (
                f"You sold into a {c1:+.1%} day ({c5:+.1%} over 5 days, RSI {rsi:.1f}), which lets the drop "
                f"decide unless your exit rule said so before it. "
                f"{HABIT_PREFIX} set your exit level when you enter, and after a drop of more than {one_atr} "
                f"check that level before you place any order."
            )
        return (
            f"You sold after a {c1:+.1%} day ({c5:+.1%} over 5 days, RSI {rsi:.1f}); did the reason you "
            f"owned this position change, or did the drop itself make the decision? "
            f"{HABIT_PREFIX} after a drop of more than {one_atr}, write one line on whether your reason "
            f"for holding still stands before you act."
        )
    if label == "DISCIPLINE" and side == "BUY":
        if strict:
            return (
                f"You bought a pullback (RSI {rsi:.1f}, Bollinger position {bp:.2f}, {c5:+.1%} over 5 days), "
                f"and it only counts as discipline if you can name what told you the trend was intact. "
                f"{HABIT_PREFIX} record the stop you set before entering, for example {one_atr} lower, next "
                f"to every pullback entry."
            )
        return (
            f"You bought a pullback (RSI {rsi:.1f}, Bollinger position {bp:.2f}, {c5:+.1%} over 5 days) "
            f"instead of chasing strength, which is what a plan looks like. "
            f"{HABIT_PREFIX} keep writing down your stop before you enter, for example {one_atr} lower, "
            f"so this stays a routine."
        )
    if label == "DISCIPLINE":
        if strict:
            return (
                f"You sold into strength (RSI {rsi:.1f}, {c5:+.1%} over 5 days), which is discipline only if "
                f"the exit level was set before the rally. "
                f"{HABIT_PREFIX} record the exit level you set at entry next to each sale, and count a sale "
                f"without one as unplanned."
            )
        return (
            f"You sold into strength (RSI {rsi:.1f}, {c5:+.1%} over 5 days) rather than reacting to a "
            f"drop, which is a planned way to exit. "
            f"{HABIT_PREFIX} write down your exit level in advance, and note your plan for a further move "
            f"of {one_atr}."
        )
    if label == "NONE":
        verb = "buy" if side == "BUY" else "sell"
        numbers = f"RSI {rsi:.1f}, {c1:+.1%} on the day, {c5:+.1%} over 5 days"
        if strict:
            return (
                f"No bias rule fired on this {verb} ({numbers}), so the numbers explain nothing and only "
                f"your written reason can. "
                f"{HABIT_PREFIX} place no order without a one-sentence written reason and an exit level, "
                f"including an ordinary {verb} like this one."
            )
        return (
            f"No bias rule fired on this {verb} ({numbers}); what was your reason, and would you make "
            f"the same trade again at ${f.close_usd:,.2f}? "
            f"{HABIT_PREFIX} write one sentence with your reason for each trade before you place it."
        )
    raise ValueError(f"unknown label {label!r}; expected one of {LABELS}")


class TemplateLLM:
    """The offline provider: :func:`template_text` as an :class:`LLMService`."""

    name = TEMPLATE_PROVIDER

    def generate(self, prompt: ReflectionPrompt, schema: dict[str, Any]) -> dict[str, Any]:
        text = template_text(prompt.side, prompt.label, prompt.features, prompt.tone)
        return {"text": text, "tone": prompt.tone, "bias": prompt.label}


# ------------------------------------------------------------------------- reflector


class Reflector:
    """Reflections from ``provider`` (default: the templates), checked, with the template
    as the fallback and an in-process LRU of accepted provider answers.

    Args:
        provider: an :class:`LLMService`; ``None`` means templates only.
        cache_size: accepted answers kept (0: no cache). The cache is per process and
            lost on restart; a fallback is never cached, so the provider is asked again.
    """

    def __init__(self, provider: LLMService | None = None, *, cache_size: int = 1024) -> None:
        self.template = TemplateLLM()
        self.provider = provider
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Reflection] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def provider_name(self) -> str:
        return self.provider.name if self.provider is not None else TEMPLATE_PROVIDER

    def _from_template(self, prompt: ReflectionPrompt) -> Reflection:
        answer = self.template.generate(prompt, REFLECTION_SCHEMA)
        return Reflection(answer["text"], prompt.tone, prompt.label, TEMPLATE_PROVIDER)

    def reflect(self, side: str, label: str, rule: str, features: TradeFeatures,
                tone: Tone = DEFAULT_TONE) -> Reflection:
        """The trade's reflection. Raises only for a bad side, label or tone (the
        template's own errors); a provider's failure is logged and templated."""
        prompt = ReflectionPrompt(side, label, rule, check_tone(tone), features)
        if self.provider is None:
            return self._from_template(prompt)
        key = prompt.cache_key()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        try:
            answer = self.provider.generate(prompt, REFLECTION_SCHEMA)
        except Exception as exc:  # a provider never breaks scoring
            log.warning("reflection provider %s failed (%s: %s); using the template",
                        self.provider.name, type(exc).__name__, str(exc)[:200])
            return self._from_template(prompt)
        problems = answer_violations(answer, prompt)
        if problems:
            log.warning("reflection provider %s answer refused (%s); using the template",
                        self.provider.name, "; ".join(problems)[:500])
            return self._from_template(prompt)
        result = Reflection(answer["text"], prompt.tone, prompt.label, self.provider.name)
        if self.cache_size > 0:
            with self._lock:
                self._cache[key] = result
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return result
