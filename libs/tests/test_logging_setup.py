"""The one logging setup (``bsopt_common.logging_setup``): JSON lines with the active
span's ids and the ``extra=`` fields, readable console lines, the format chosen from the
environment, secrets redacted in fields, messages and tracebacks, uvicorn's access log
through the same handler, and a service's own command emitting JSON when told to."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from bsopt_common.http_server import serve_asgi
from bsopt_common.logging_setup import REDACTED, log_format_for, redact_text, setup_logging
from bsopt_common.testing.services import ServiceThread, free_port

REPO = Path(__file__).resolve().parents[2]

# Credentials that must never reach a log line (made up, shaped like the real ones).
JWT = ("eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSIsImF1ZCI6InVybjpic29wdDpyZXNvdXJjZS1hcGkifQ"
       ".MEUCIQDx7Ly2Tq9sQ0mZ9bG1")
OPAQUE_BEARER = "k9Zq2Xw7PmR4tL8vN1cB6yH3"
CLIENT_SECRET = "cs-7f3a9e2b41d84c06"
PASSWORD = "hunter2-correct-horse"
ALPACA_KEY_ID = "PKX7Q2M9ZL4T8RB3WN6Y"
ALPACA_SECRET = "Zb4kQ9xW2mT7rL1vN8cP3yH6jD0sF5gA2eK9uB7q"
SECRETS = (JWT, OPAQUE_BEARER, CLIENT_SECRET, PASSWORD, ALPACA_KEY_ID, ALPACA_SECRET)


@pytest.fixture
def capture() -> Iterator[Callable[..., io.StringIO]]:
    """``capture(fmt, service=...)`` installs the shared setup writing into a buffer; the
    root logger and uvicorn's loggers are put back afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    uvicorn_state = {n: (logging.getLogger(n).propagate, list(logging.getLogger(n).handlers))
                     for n in ("uvicorn", "uvicorn.error", "uvicorn.access")}

    def install(fmt: str, service: str = "test-svc", level: str = "DEBUG") -> io.StringIO:
        buf = io.StringIO()
        setup_logging(service, level, log_format=fmt, stream=buf, force=True)  # type: ignore[arg-type]
        return buf

    yield install
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
    for name, (propagate, hs) in uvicorn_state.items():
        logging.getLogger(name).propagate = propagate
        logging.getLogger(name).handlers[:] = hs


def _lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_json_line_carries_service_level_logger_message_and_extra_fields(capture: Callable[..., io.StringIO]) -> None:
    buf = capture("json", service="auth-server")
    logging.getLogger("bsopt_auth.audit").warning("audit %s", "token.issued",
                                                  extra={"event": "token.issued", "outcome": "success", "n": 3})
    [line] = _lines(buf)
    assert line["service"] == "auth-server"
    assert line["level"] == "WARNING"
    assert line["logger"] == "bsopt_auth.audit"
    assert line["message"] == "audit token.issued"
    assert (line["event"], line["outcome"], line["n"]) == ("token.issued", "success", 3)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(line["time"]))
    assert "trace_id" not in line and "span_id" not in line  # no span active


def test_json_line_inside_a_span_has_its_trace_and_span_ids(capture: Callable[..., io.StringIO]) -> None:
    buf = capture("json")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("outer"), tracer.start_as_current_span("inner") as span:
        logging.getLogger("x").info("inside")
        ctx = span.get_span_context()
    logging.getLogger("x").info("outside")
    inside, outside = _lines(buf)
    assert inside["trace_id"] == format(ctx.trace_id, "032x")
    assert inside["span_id"] == format(ctx.span_id, "016x")
    assert "trace_id" not in outside


def test_console_line_is_readable(capture: Callable[..., io.StringIO]) -> None:
    buf = capture("console", service="ml-scorer")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("s") as span:
        logging.getLogger("bsopt_scorer.consumers").info("scored %d trades", 4, extra={"account": "a1",
                                                                                      "note": "two words"})
    text = buf.getvalue()
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT[\d:.]+Z ml-scorer INFO +bsopt_scorer\.consumers: scored 4 trades account=a1 "
        rf'note="two words" trace_id={trace_id} span_id=[0-9a-f]{{16}}\n', text), text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_format_follows_the_environment_and_BSOPT_LOG_FORMAT(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BSOPT_LOG_FORMAT", raising=False)
    assert log_format_for("prod") == "json"
    assert log_format_for("staging") == "json"
    assert log_format_for("dev") == "console"
    assert log_format_for("test") == "console"
    monkeypatch.setenv("BSOPT_LOG_FORMAT", "json")
    assert log_format_for("dev") == "json"
    monkeypatch.setenv("BSOPT_LOG_FORMAT", "console")
    assert log_format_for("prod") == "console"
    monkeypatch.setenv("BSOPT_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="BSOPT_LOG_FORMAT"):
        log_format_for("prod")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secrets_never_reach_the_output(capture: Callable[..., io.StringIO], fmt: str) -> None:
    buf = capture(fmt)
    log = logging.getLogger("leaky")
    log.info("token request", extra={"client_secret": CLIENT_SECRET, "password": PASSWORD,
                                     "headers": {"Authorization": f"Bearer {OPAQUE_BEARER}", "Accept": "json"},
                                     "refreshToken": JWT, "APCA-API-SECRET-KEY": ALPACA_SECRET,
                                     "client_id": "resource-api"})
    log.info("verified %s", JWT)
    log.info("upstream said: Authorization: Bearer %s", OPAQUE_BEARER)
    log.info("POST body grant_type=client_credentials&client_secret=%s&scope=read", CLIENT_SECRET)
    log.info("alpaca account configured with %s / %s", ALPACA_KEY_ID, ALPACA_SECRET)
    log.info("settings %r", {"password": PASSWORD, "user": "alice"})
    try:
        raise ValueError(f"bad credentials client_secret={CLIENT_SECRET} token {JWT}")
    except ValueError:
        log.exception("refused")
    text = buf.getvalue()
    for secret in SECRETS:
        assert secret not in text
    assert text.count(REDACTED) >= 12
    # What is not a secret stays readable.
    assert "resource-api" in text and "grant_type=client_credentials" in text and "alice" in text
    assert "ValueError" in text and "refused" in text
    if fmt == "json":
        first = _lines(buf)[0]
        assert first["client_secret"] == REDACTED and first["password"] == REDACTED
        assert first["headers"] == {"Authorization": REDACTED, "Accept": "json"}
        assert first["client_id"] == "resource-api"


def test_redaction_leaves_ordinary_text_alone() -> None:
    ordinary = ("GET /v1/trades?limit=50 200; sha1 0a4d55a8d778e5022fab701977c5d840bbc486d0; "
                "basic auth disabled; kid=ec-2026-12")
    assert redact_text(ordinary) == ordinary
    assert redact_text("/callback?code=abc123&state=xyz") == f"/callback?code={REDACTED}&state=xyz"
    assert redact_text("Authorization: DPoP abc.def") == f"Authorization: DPoP {REDACTED}"


def test_setup_leaves_a_foreign_root_configuration_alone_and_replaces_its_own() -> None:
    root = logging.getLogger()
    saved_level, saved = root.level, list(root.handlers)
    foreign = logging.NullHandler()
    try:
        root.handlers[:] = [foreign]
        setup_logging("svc", "INFO", log_format="json", stream=io.StringIO())
        assert root.handlers == [foreign]  # like logging.basicConfig: someone else configured it
        root.handlers[:] = []
        setup_logging("svc", "INFO", log_format="json", stream=io.StringIO())
        setup_logging("svc", "INFO", log_format="console", stream=io.StringIO())
        assert len(root.handlers) == 1  # the second call replaced the first handler
        assert logging.getLogger("aiokafka").level == logging.WARNING
        assert logging.getLogger("httpx").level == logging.WARNING
    finally:
        root.handlers[:] = saved
        root.setLevel(saved_level)


def test_uvicorn_and_its_access_log_go_through_the_same_setup(capture: Callable[..., io.StringIO]) -> None:
    buf = capture("json", service="resource-api", level="INFO")
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"ok": "yes"}

    port = free_port()
    with ServiceThread(lambda stop: serve_asgi(app, stop, host="127.0.0.1", port=port, grace_seconds=1), port=port):
        assert httpx.get(f"http://127.0.0.1:{port}/ping", params={"access_token": OPAQUE_BEARER}).status_code == 200
    lines = _lines(buf)
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert len(access) == 1, lines
    assert access[0]["service"] == "resource-api"
    assert (access[0]["method"], access[0]["status"]) == ("GET", 200)
    assert access[0]["path"] == f"/ping?access_token={REDACTED}"
    assert any(line["logger"] == "uvicorn.error" and "Uvicorn running" in str(line["message"]) for line in lines)
    assert OPAQUE_BEARER not in buf.getvalue()


def test_a_service_command_logs_json_lines_when_told_to(postgres_url: str) -> None:
    """auth-server's own ``migrate`` command (its start-up path: settings, the shared
    setup, database, migrations) run for real: every stderr line is a JSON object."""
    env = {**os.environ, "DATABASE_URL": postgres_url, "BSOPT_LOG_FORMAT": "json", "BSOPT_LOG_LEVEL": "INFO"}
    env.pop("BSOPT_AUTH_DATABASE_URL", None)
    proc = subprocess.run([sys.executable, "-m", "bsopt_auth", "migrate"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "auth schema is up to date" in proc.stdout
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert lines, "migrate logged nothing"
    assert all(line["service"] == "auth-server" for line in lines)
    assert any(str(line["logger"]).startswith("alembic") for line in lines)


def test_a_service_command_logs_console_lines_in_dev(postgres_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": postgres_url, "BSOPT_LOG_LEVEL": "INFO"}
    for name in ("BSOPT_LOG_FORMAT", "BSOPT_AUTH_DATABASE_URL", "BSOPT_AUTH_ENVIRONMENT"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-m", "bsopt_auth", "migrate"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and all(re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z auth-server (INFO|WARNING) ", line) for line in lines)


_RUN_SERVICE = """
import logging
from bsopt_common.runtime import run_service
from bsopt_digest.config import DigestSettings

async def serve(settings, stop):
    logging.getLogger("bsopt_digest.probe").info("started; client_secret=%s", "abc123def456", extra={"port": 8})

run_service(DigestSettings, serve)
"""


@pytest.mark.parametrize(("environment", "fmt"), [("prod", "json"), ("dev", "console")])
def test_run_service_picks_the_format_from_the_service_environment(environment: str, fmt: str) -> None:
    """The entry-point body of every service but auth-server (``run_service``) with
    digest-worker's own settings: JSON by default in prod, console lines in dev."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BSOPT_LOG_FORMAT")}
    env.update({"BSOPT_DIGEST_ENVIRONMENT": environment, "DATABASE_URL": "postgresql://u@127.0.0.1:1/x",
                "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "BSOPT_ISSUER": "https://issuer.example"})
    proc = subprocess.run([sys.executable, "-c", _RUN_SERVICE], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "abc123def456" not in proc.stderr
    if fmt == "json":
        [line] = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
        assert (line["service"], line["logger"], line["port"]) == ("digest-worker", "bsopt_digest.probe", 8)
        assert line["message"] == f"started; client_secret={REDACTED}"
    else:
        assert re.fullmatch(r"\S+Z digest-worker INFO +bsopt_digest\.probe: started; "
                            rf"client_secret={re.escape(REDACTED)} port=8\n", proc.stderr), proc.stderr


def _call_text(text: str, start: int) -> str:
    """The arguments of the call whose ``(`` ends just before ``start``."""
    depth = 1
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    raise AssertionError("unbalanced call")


def test_no_process_configures_logging_but_the_shared_setup() -> None:
    """No production source (libs, services, CLI) configures logging itself: no
    basicConfig/dictConfig/fileConfig, no structlog.configure, no root handler of its own,
    and every uvicorn it starts keeps uvicorn's logging config out (``log_config=None``)."""
    sources = [p for root in ("libs/src/bsopt_common", "services", "clients/cli/src")
               for p in (REPO / root).rglob("*.py") if "tests" not in p.relative_to(REPO).parts]
    assert len(sources) > 50
    own = REPO / "libs/src/bsopt_common/logging_setup.py"
    configuring = re.compile(r"basicConfig\(|dictConfig\(|fileConfig\(|structlog\.configure|"
                             r"getLogger\(\)\.(addHandler|setLevel)\(")
    offenders = [f"{p.relative_to(REPO)}:{n}" for p in sources if p != own
                 for n, line in enumerate(p.read_text().splitlines(), 1) if configuring.search(line)]
    assert offenders == []
    calls = [(p, _call_text(text, m.end())) for p in sources
             for text in [p.read_text()] for m in re.finditer(r"uvicorn\.(?:Config|run)\(", text)]
    assert len(calls) >= 2  # auth-server's workers, the shared serve_asgi
    assert [f"{p.relative_to(REPO)}: {call[:80]}" for p, call in calls if "log_config=None" not in call] == []
