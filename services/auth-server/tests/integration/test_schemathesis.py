"""Schemathesis over auth-server's own OpenAPI document, against the real server (uvicorn
on 127.0.0.1 over the module's migrated and seeded Postgres).

Bounded and deterministic: :data:`EXAMPLES` positive and as many negative (schema-
violating) cases per operation, Hypothesis derandomized, no shrinking, no example
database. Every response must be no 5xx, a documented status, of the documented content
type, and match the documented schema and headers. UserInfo gets a real user token (from
the code flow), every other operation none (a Bearer header at the token endpoint would
only be refused as a wrong client authentication scheme).
"""

from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bsopt_auth.app import create_app
from bsopt_common.http_server import serve_asgi
from bsopt_common.testing.services import ServiceThread, free_port

#: Cases per operation and generation mode (positive, negative).
EXAMPLES = 12
#: The whole run must stay well under a minute on a 2-core machine.
BUDGET_SECONDS = 45
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


async def test_no_server_error_and_no_schema_violation(settings, engine, oauth):
    user = await oauth.user_tokens(scope="openid profile")
    bearer = {"Authorization": f"Bearer {user['access_token']}"}
    port = free_port()
    app = create_app(settings, engine)
    with ServiceThread(lambda stop: serve_asgi(app, stop, host="127.0.0.1", port=port, grace_seconds=1), port=port):
        base_url = f"http://127.0.0.1:{port}"
        schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.label for op in operations} >= {"GET /authorize", "POST /authorize", "POST /oauth2/token",
                                                   "GET /userinfo", "POST /userinfo"}
        started = time.monotonic()
        for operation in operations:
            headers = bearer if operation.path == "/userinfo" else None
            strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE, headers=headers),
                                 operation.as_strategy(GenerationMode.NEGATIVE, headers=headers))

            @given(case=strategy)
            @hypothesis_settings(max_examples=2 * EXAMPLES, derandomize=True, database=None, deadline=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            def run(case) -> None:
                response = case.call(base_url=base_url, timeout=30, allow_redirects=False)
                assert response.status_code < 500, (case.operation.label, response.status_code, response.text[:500])
                case.validate_response(response, checks=CHECKS)

            try:
                run()
            except Exception as exc:  # name the operation in the failure
                pytest.fail(f"{operation.label}: {exc}")
        elapsed = time.monotonic() - started
    assert elapsed < BUDGET_SECONDS, f"schemathesis run took {elapsed:.1f}s"
    print(f"schemathesis auth-server: {len(operations)} operations in {elapsed:.1f}s")
