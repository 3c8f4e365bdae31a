"""RFC 6749 §5.2 error responses of the token endpoint."""

from __future__ import annotations

import pytest

from bsopt_auth.rfc6749 import errors
from bsopt_auth.rfc8707 import InvalidTargetError


async def test_unsupported_grant_type(oauth) -> None:
    resp = await oauth.client.post("/oauth2/token", data={"grant_type": "password", "username": "demo"})
    assert resp.status_code == 400
    assert resp.json()["error"] == "unsupported_grant_type"
    assert set(resp.json()) <= {"error", "error_description"}
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers["cache-control"] == "no-store"


async def test_unknown_grant_type_is_not_supported(oauth) -> None:
    resp = await oauth.client.post("/oauth2/token", data={"grant_type": "password", "client_id": "bsopt-cli"})
    assert resp.status_code == 400 and resp.json()["error"] == "unsupported_grant_type"


async def test_unknown_refresh_token_is_invalid_grant(oauth) -> None:
    resp = await oauth.client.post("/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": "x",
                                                          "client_id": "bsopt-cli"})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"


async def test_missing_grant_type_is_invalid_request(oauth) -> None:
    resp = await oauth.client.post("/oauth2/token", data={"client_id": "bsopt-cli"})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"


async def test_repeated_parameter_is_invalid_request(oauth) -> None:
    resp = await oauth.client.post(
        "/oauth2/token", content="grant_type=client_credentials&scope=a&scope=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"


async def test_json_body_is_invalid_request(oauth) -> None:
    resp = await oauth.client.post("/oauth2/token", json={"grant_type": "client_credentials"})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"


async def test_code_grant_requires_its_parameters(oauth) -> None:
    resp = await oauth.client.post(
        "/oauth2/token", data={"grant_type": "authorization_code", "client_id": "bsopt-cli"}
    )
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_request"


async def test_confidential_client_may_not_use_the_code_grant(oauth) -> None:
    resp = await oauth.client_credentials(
        "broker-gateway", grant_type="authorization_code", code="x", redirect_uri="http://127.0.0.1/callback",
        code_verifier="a" * 43,
    )
    assert resp.status_code == 400 and resp.json()["error"] == "unauthorized_client"


async def test_code_of_another_client_is_invalid_grant(oauth, session_factory) -> None:
    from bsopt_auth.models import Client
    from bsopt_common.db import session_scope

    with session_scope(session_factory) as s:  # a second public client for this module's db
        if s.get(Client, "other-cli") is None:
            s.add(Client(client_id="other-cli", client_type="public", redirect_uris=["http://127.0.0.1/callback"],
                         grant_types=["authorization_code"], allowed_scopes=["openid"],
                         allowed_resources=["urn:bsopt:resource-api"], token_endpoint_auth_method="none"))
    result = await oauth.login()
    resp = await oauth.exchange(result.code, result.verifier, result.redirect_uri, client_id="other-cli")
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"


ERROR_CLASSES = [
    (errors.InvalidRequestError, "invalid_request", 400),
    (errors.InvalidClientError, "invalid_client", 401),
    (errors.InvalidGrantError, "invalid_grant", 400),
    (errors.UnauthorizedClientError, "unauthorized_client", 400),
    (errors.UnsupportedGrantTypeError, "unsupported_grant_type", 400),
    (errors.InvalidScopeError, "invalid_scope", 400),
    (errors.AccessDeniedError, "access_denied", 403),
    (errors.UnsupportedResponseTypeError, "unsupported_response_type", 400),
    (errors.ServerError, "server_error", 500),
    (errors.TemporarilyUnavailableError, "temporarily_unavailable", 503),
    (InvalidTargetError, "invalid_target", 400),
]


@pytest.mark.parametrize(("cls", "code", "status"), ERROR_CLASSES)
def test_one_class_per_error_code_with_its_definition(cls, code: str, status: int) -> None:
    assert cls.error == code
    assert cls.status_code == status
    assert cls.__doc__ and "RFC" in cls.__doc__
    exc = cls("why")
    assert exc.to_dict() == {"error": code, "error_description": "why"}
    assert cls().to_dict() == {"error": code}
    assert exc.headers()["Cache-Control"] == "no-store"
    assert ("WWW-Authenticate" in exc.headers()) == (code == "invalid_client")
