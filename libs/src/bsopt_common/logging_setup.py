"""The one logging setup of every bsopt process (services, their commands, the embedded
broker): installed by :func:`setup_logging`, which services reach through
:func:`bsopt_common.telemetry.setup_logging` (``run_service`` / ``run_serve`` call it).

Two formats, one record shape:

``json``
    One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``service``,
    ``logger``, ``message``, ``trace_id`` / ``span_id`` (hex, when an OpenTelemetry span
    is active), every ``extra=`` field of the call, and ``exception`` (the traceback)
    when there is one. The default outside the ``dev`` and ``test`` environments.
``console``
    ``time service LEVEL logger: message key=value ... trace_id=... span_id=...``: one
    readable line for a terminal. The default in ``dev`` and ``test``.

``BSOPT_LOG_FORMAT`` (``json`` | ``console``) overrides the default; ``BSOPT_LOG_LEVEL``
sets the level (``INFO``). Secrets never reach the output: the value of any field
whose name says it is one (``password``, ``secret``, ``token``, ``authorization``,
``api_key``, ``cookie``, ...) and, in messages and tracebacks, JWTs, ``Bearer`` /
``DPoP`` / ``Basic`` credentials, ``name=value`` pairs with such a name and Alpaca key
ids are replaced with ``[REDACTED]`` (:func:`redact_text`, :func:`redact_value`).

uvicorn's loggers (``uvicorn``, ``uvicorn.error``, ``uvicorn.access``) go through the
same handler (servers pass ``log_config=None``); aiokafka and httpx are quieted to
WARNING.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import string
import sys
import time
from collections.abc import Mapping
from typing import Any, Literal, TextIO

from opentelemetry import trace

LogFormat = Literal["json", "console"]
REDACTED = "[REDACTED]"

#: Loggers quieted to WARNING (chatty at INFO: every connection, every request).
QUIET_LOGGERS = ("aiokafka", "httpx", "httpcore")
#: uvicorn's own loggers: their handlers are removed so records reach the root handler.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName", "trace_id", "span_id", "service"}

# A field name that names a secret: one of these words in a snake/kebab/dotted/camelCase name.
_SECRET_WORDS = ("password", "passwd", "passphrase", "secret", "token", "authorization", "cookie", "apikey",
                 "api_key", "private_key", "signing_key", "key_id", "credential", "credentials",
                 "client_assertion", "assertion", "dpop")
_SECRET_NAME = re.compile(r"(?:^|_)(?:" + "|".join(re.escape(w) for w in _SECRET_WORDS) + r")s?(?:$|_)")

_SCHEMES = r"(?:Bearer|bearer|BEARER|DPoP|dpop|Basic|basic|BASIC)"
# name=value / name: value / "name": "value" where the name says secret (query strings,
# form bodies, headers, reprs, JSON): client_secret=..., Authorization: Bearer ...,
# APCA-API-SECRET-KEY: ..., "password": "...". The name is found in an ASCII-lower-cased
# copy from its secret word on (what comes before the word stays as it is), the value in
# the text itself at the same offset.
_PAIR_NAME = re.compile(r"(?:passw|secret|token|authoriz|cookie|api[_\-]?key|key[_\-]?id|private[_\-]?key"
                        r"|assertion)[a-z0-9_.\-]*(?=['\"]?\s*[=:])")
_PAIR_VALUE = re.compile(r"['\"]?\s*[=:]\s*(?:u?['\"])?(?!\[REDACTED\])(?:" + _SCHEMES + r"\s+)?"
                         r"([^\s'\"&,;(){}\[\]]+)")
_PAIR_WORDS = ("passw", "secret", "token", "authoriz", "cookie", "key", "assertion")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)

# (pattern, replacement, lower-case substrings of which one must occur for it to apply;
# none: only for text of 40 characters or more): the substring test is what a line
# without any credential costs.
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str, tuple[str, ...]], ...] = (
    # JWS (three parts) and JWE (five) compact serialisations: the header is base64url JSON.
    (re.compile(r"eyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*)?"),
     REDACTED, ("eyj",)),
    # Authorization codes and PKCE verifiers in a query string or form body.
    (re.compile(r"(?<=[?&])(code|code_verifier)=[^&\s'\"]+"), r"\1=" + REDACTED, ("code",)),
    # HTTP credentials on their own: Bearer|DPoP|Basic <credential>
    (re.compile(r"\b(Bearer|BEARER|DPoP|Basic|BASIC)(\s+)(?!\[REDACTED\])[A-Za-z0-9._~+/\-]+=*"), r"\1\2" + REDACTED,
     ("bearer", "dpop", "basic")),
    # Alpaca API key ids (paper PK..., live AK..., broker CK...): 20 upper-case letters/digits.
    (re.compile(r"\b[PAC]K[A-Z0-9]{16,30}\b"), REDACTED, ("pk", "ak", "ck")),
    # Alpaca secret keys: 40 letters and digits, mixed case (a hex digest is lower case only).
    (re.compile(r"\b(?=[A-Za-z0-9]{40}\b)(?=[A-Za-z0-9]*[a-z])(?=[A-Za-z0-9]*[A-Z])(?=[A-Za-z0-9]*[0-9])"
                r"[A-Za-z0-9]{40}\b"), REDACTED, ()),
)


@functools.lru_cache(maxsize=1024)
def is_secret_name(name: str) -> bool:
    """Whether a field called ``name`` holds a secret: ``client_secret``, ``X-Api-Key``,
    ``refreshToken``, ``password``, ``APCA-API-SECRET-KEY``, ..."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower().replace("-", "_").replace(".", "_")
    return bool(_SECRET_NAME.search(snake))


def _redact_pairs(text: str, lower: str) -> str:
    parts: list[str] = []
    pos = 0
    for name in _PAIR_NAME.finditer(lower):
        if name.start() < pos:  # inside a value already redacted
            continue
        value = _PAIR_VALUE.match(text, name.end())
        if value is None:
            continue
        parts += (text[pos:value.start(1)], REDACTED)
        pos = value.end(1)
    if not parts:
        return text
    parts.append(text[pos:])
    return "".join(parts)


def redact_text(text: str) -> str:
    """``text`` with every credential-looking part replaced by ``[REDACTED]``."""
    if len(text) < 8:
        return text
    lower = text.lower() if text.isascii() else text.translate(_ASCII_LOWER)  # same offsets as text
    if any(w in lower for w in _PAIR_WORDS):
        text = _redact_pairs(text, lower)
    for pattern, replacement, triggers in _SECRET_PATTERNS:
        if any(t in lower for t in triggers) if triggers else len(text) >= 40:
            text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any, name: str = "") -> Any:
    """A field value safe to log: everything under a secret name is ``[REDACTED]``,
    strings are passed through :func:`redact_text`, mappings and sequences recursively."""
    if name and is_secret_name(name):
        return REDACTED if value not in (None, "") else value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: redact_value(v, k) for k, v in record.__dict__.items()
            if k not in _RECORD_ATTRS and not k.startswith("_")}


def _time(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _access_fields(record: logging.LogRecord) -> dict[str, Any]:
    """uvicorn's access line as fields: its args are (client, method, path, http version, status)."""
    args = record.args
    if record.name != "uvicorn.access" or not isinstance(args, tuple) or len(args) != 5:
        return {}
    client, method, path, version, status = args
    return {"client": str(client), "method": str(method), "path": redact_text(str(path)),
            "http_version": str(version), "status": status}


class TraceContextFilter(logging.Filter):
    """Puts ``service`` and the active OpenTelemetry span's ``trace_id`` / ``span_id``
    (hex; ``None`` outside a span) on every record the handler sees."""

    def __init__(self, service_name: str) -> None:
        super().__init__()
        self.service_name = service_name

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        record.service = self.service_name
        record.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else None
        record.span_id = format(ctx.span_id, "016x") if ctx.is_valid else None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring), secrets redacted."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname,
            "service": getattr(record, "service", None),
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            out["trace_id"] = trace_id
            out["span_id"] = getattr(record, "span_id", None)
        for key, value in {**_access_fields(record), **_extras(record)}.items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = redact_text(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exception"] = redact_text(record.exc_text)
        if record.stack_info:
            out["stack"] = redact_text(self.formatStack(record.stack_info))
        return json.dumps(out, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """``time service LEVEL logger: message key=value ...``, secrets redacted."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [f"{_time(record)} {getattr(record, 'service', '-')} {record.levelname:<7} {record.name}: "
                 f"{redact_text(record.getMessage())}"]
        fields = _extras(record)
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            fields["trace_id"] = trace_id
            fields["span_id"] = getattr(record, "span_id", None)
        parts += [f"{k}={v}" if isinstance(v, str) and " " not in v else f"{k}={json.dumps(v, default=str)}"
                  for k, v in fields.items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + redact_text(self.formatException(record.exc_info))
        if record.stack_info:
            line += "\n" + redact_text(self.formatStack(record.stack_info))
        return line


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at the time of the record (never a stream
    that was swapped out and closed since the setup)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def log_format_for(environment: str | None) -> LogFormat:
    """``BSOPT_LOG_FORMAT`` if set (``json`` | ``console``), else ``console`` in the
    ``dev`` / ``test`` environments and ``json`` everywhere else."""
    from bsopt_common.settings import DEV_ENVIRONMENTS

    chosen = os.environ.get("BSOPT_LOG_FORMAT", "").strip().lower()
    if chosen in ("json", "console"):
        return "json" if chosen == "json" else "console"
    if chosen:
        raise ValueError(f"BSOPT_LOG_FORMAT={chosen!r}: expected json or console")
    return "console" if (environment or "dev") in DEV_ENVIRONMENTS else "json"


def setup_logging(service_name: str, level: str | None = None, *, environment: str | None = None,
                  log_format: LogFormat | None = None, stream: TextIO | None = None, force: bool = False) -> None:
    """Install the one handler on the root logger (replacing one installed before).

    ``level`` defaults to ``BSOPT_LOG_LEVEL`` (``INFO``), ``log_format`` to
    :func:`log_format_for` ``(environment)``; ``stream`` to the current ``sys.stderr``.
    When the root logger already has handlers that this function did not install (a
    test runner's capture, an embedding application), they are left alone and nothing
    is installed unless ``force``, as :func:`logging.basicConfig` does.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_bsopt", False)]
    if not force and len(ours) < len(root.handlers):
        _quiet()
        return
    for h in ours:
        root.removeHandler(h)
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler._bsopt = True  # type: ignore[attr-defined]
    handler.addFilter(TraceContextFilter(service_name))
    fmt = log_format or log_format_for(environment)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root.addHandler(handler)
    root.setLevel((level or os.environ.get("BSOPT_LOG_LEVEL") or "INFO").upper())
    for name in UVICORN_LOGGERS:  # uvicorn's records reach the root handler, formatted as ours
        uv = logging.getLogger(name)
        uv.handlers.clear()
        uv.propagate = True
    _quiet()


def _quiet() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
