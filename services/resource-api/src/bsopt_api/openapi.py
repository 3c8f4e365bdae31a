"""resource-api's OpenAPI document: FastAPI's, completed with what FastAPI cannot see.

- Every error is ``application/problem+json`` (:mod:`bsopt_api.problems`): FastAPI's
  default 422 schema is replaced by :data:`PROBLEM_SCHEMA`, and each ``/v1`` operation
  lists the problems it can answer: 401 (missing or invalid token, with the RFC 6750
  challenge), 403 (a scope is missing), and for the operations that call a backend every
  status of :data:`bsopt_api.problems.GRPC_TO_HTTP` plus its default (400/403/404/409 for
  the backend's named errors, 502 when a backend failed, 503 with ``Retry-After`` when a
  backend or our credentials are unavailable); derived from the table, so a new mapping
  is documented without an edit here.
- The ``bsopt`` OAuth 2.0 scheme (authorization code + PKCE) points at the issuer's
  ``/authorize`` and token endpoint, so Swagger UI at ``/docs`` can authorize.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from bsopt_api.config import ApiSettings
from bsopt_api.problems import GRPC_DEFAULT_HTTP, GRPC_TO_HTTP, PROBLEM_JSON
from bsopt_common.security.fastapi import document_oauth_flow

#: Operations under these paths call a backend over gRPC.
BACKEND_PREFIXES = ("/v1/training-jobs", "/v1/accounts", "/v1/trades", "/v1/brokers", "/v1/broker-connections",
                    "/v1/imports")

SCOPE_DESCRIPTIONS = {
    "training:read": "read your training jobs",
    "training:write": "submit training jobs and run paper trading",
    "trades:read": "read your accounts, scored trades, digests and coach messages",
    "trades:write": "create paper accounts and import trades",
}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details.",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "description": "always about:blank"},
        "title": {"type": "string", "description": "the HTTP reason phrase"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "the request path"},
        "grpc_status": {"type": "string", "description": "the backend's gRPC status (backend errors)"},
        "errors": {
            "type": "array",
            "description": "what did not match the schema (422)",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                },
            },
        },
    },
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
_CHALLENGE = {"WWW-Authenticate": {"description": "RFC 6750 Bearer challenge", "schema": {"type": "string"}}}


#: Descriptions (and headers) of the statuses a backend call can answer.
BACKEND_PROBLEMS: dict[int, tuple[str, dict[str, Any] | None]] = {
    400: ("The backend refused an argument.", None),
    403: ("The access token lacks a scope, or the backend refused the call.", _CHALLENGE),
    404: ("No such resource for this user.", None),
    409: ("The resource is not in a state that allows this (or already exists).", None),
    429: ("A quota is exhausted; retry after Retry-After seconds.", _RETRY_AFTER),
    502: ("A backend service failed.", None),
    503: ("A backend service, or this service's credentials, are unavailable; retry after Retry-After seconds.",
          _RETRY_AFTER),
}


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}}}
    if headers:
        response["headers"] = headers
    return response


def _add_problems(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if "422" in responses:
        responses["422"] = _problem("The request does not match the schema.")
    requirements = operation.get("security") or []
    if requirements:
        responses["401"] = _problem("Missing, malformed, expired or otherwise invalid access token.", _CHALLENGE)
        if any(scopes for requirement in requirements for scopes in requirement.values()):
            responses["403"] = _problem("The access token lacks a scope this operation needs.", _CHALLENGE)
    if path.startswith(BACKEND_PREFIXES):
        for status in sorted({*GRPC_TO_HTTP.values(), GRPC_DEFAULT_HTTP}):
            description, headers = BACKEND_PROBLEMS.get(status, ("A backend answered with this status.", None))
            responses[str(status)] = _problem(description, headers)
    elif "404" in responses:
        responses["404"] = _problem(responses["404"].get("description") or "Not found.")


def build_openapi(app: FastAPI, settings: ApiSettings) -> dict[str, Any]:
    """The document served at ``/openapi.json`` (built once, then cached on the app)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            _add_problems(path, operation)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    issuer = settings.require_issuer().rstrip("/")
    document_oauth_flow(schema, authorization_url=issuer + "/authorize", token_url=settings.token_url,
                        scopes=SCOPE_DESCRIPTIONS)
    app.openapi_schema = schema
    return schema


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
