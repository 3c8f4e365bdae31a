"""auth-server's OpenAPI document.

The endpoints read their parameters from the raw request (the OAuth rules on repeated,
unknown and multi-valued parameters are the protocol's, not pydantic's), so FastAPI sees
none of them; :func:`build_openapi` adds what each endpoint takes and answers: the
authorization endpoint's query and login form (HTML pages, 302 redirects), the token
endpoint's form and its RFC 6749 §5.1 / §5.2 JSON, UserInfo (OIDC Core §5.3, with the
``bsopt`` OAuth2 scheme pointing at this issuer), the metadata documents, the JWKS and
each client's registered public keys.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from bsopt_auth.config import AuthSettings
from bsopt_auth.rfc6749.token import GRANT_TYPES_SUPPORTED
from bsopt_auth.rfc7523 import CLIENT_ASSERTION_TYPE
from bsopt_common.security.fastapi import document_oauth_flow

_STRING = {"type": "string"}
_HTML = {"text/html": {"schema": _STRING}}
_NO_STORE = {"Cache-Control": {"description": "no-store", "schema": _STRING}}
_RETRY_AFTER = {"Retry-After": {"description": "seconds (RFC 9110 §10.2.3)", "schema": _STRING}}
_LOCATION = {"Location": {"description": "the client's redirect URI with code/error, state and iss (RFC 9207)",
                          "schema": _STRING}}

SCHEMAS: dict[str, Any] = {
    "OAuthError": {
        "title": "OAuthError",
        "description": "RFC 6749 §5.2 error response.",
        "type": "object",
        "required": ["error"],
        "properties": {"error": _STRING, "error_description": _STRING},
    },
    "TokenResponse": {
        "title": "TokenResponse",
        "description": "RFC 6749 §5.1 access token response (RFC 9068 JWT access token).",
        "type": "object",
        "required": ["access_token", "token_type", "expires_in"],
        "properties": {"access_token": _STRING, "token_type": _STRING, "expires_in": {"type": "integer"},
                       "scope": _STRING, "id_token": _STRING},
    },
    "UserInfo": {
        "title": "UserInfo",
        "type": "object",
        "required": ["sub"],
        "properties": {"sub": _STRING, "preferred_username": _STRING},
    },
    "DeviceAuthorizationResponse": {
        "title": "DeviceAuthorizationResponse",
        "description": "RFC 8628 §3.2 device authorization response.",
        "type": "object",
        "required": ["device_code", "user_code", "verification_uri", "expires_in"],
        "properties": {"device_code": _STRING, "user_code": _STRING, "verification_uri": _STRING,
                       "verification_uri_complete": _STRING, "expires_in": {"type": "integer"},
                       "interval": {"type": "integer"}},
    },
    "ErrorDetail": {"title": "ErrorDetail", "type": "object", "properties": {"detail": _STRING}},
    "JWKS": {"title": "JWKS", "type": "object", "required": ["keys"],
             "properties": {"keys": {"type": "array", "items": {"type": "object"}}}},
    "ServerMetadata": {"title": "ServerMetadata", "description": "RFC 8414 / OpenID Provider metadata.",
                       "type": "object", "required": ["issuer", "authorization_endpoint", "token_endpoint"],
                       "properties": {"issuer": _STRING, "authorization_endpoint": _STRING,
                                      "token_endpoint": _STRING, "jwks_uri": _STRING}},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, media_type: str = "application/json") -> dict[str, Any]:
    return {media_type: {"schema": _ref(name)}}


_AUTHORIZE_FIELDS: dict[str, Any] = {
    "response_type": {"type": "string", "enum": ["code"]},
    "client_id": _STRING,
    "redirect_uri": _STRING,
    "scope": _STRING,
    "state": _STRING,
    "code_challenge": _STRING,
    "code_challenge_method": {"type": "string", "enum": ["S256"]},
    "nonce": _STRING,
    "resource": {"type": "array", "items": _STRING},
    # OIDC Core §3.1.2.1 (bsopt_auth.sessions)
    "prompt": _STRING,
    "max_age": _STRING,
}
_AUTHORIZE_REQUIRED = ["response_type", "client_id", "redirect_uri", "code_challenge", "code_challenge_method"]
_TOKEN_FIELDS: dict[str, Any] = {
    "grant_type": {"type": "string", "enum": list(GRANT_TYPES_SUPPORTED)},
    "code": _STRING,
    "redirect_uri": _STRING,
    "code_verifier": _STRING,
    "device_code": _STRING,
    "client_id": _STRING,
    "client_secret": _STRING,
    "client_assertion_type": {"type": "string", "enum": [CLIENT_ASSERTION_TYPE]},
    "client_assertion": _STRING,
    "scope": _STRING,
    "resource": {"type": "array", "items": _STRING},
}


def _form(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "properties": properties, "required": required}}}}


def _query(properties: dict[str, Any], required: list[str]) -> list[dict[str, Any]]:
    return [{"name": name, "in": "query", "required": name in required, "schema": schema,
             **({"style": "form", "explode": True} if schema.get("type") == "array" else {})}
            for name, schema in properties.items()]


_PAGE_RESPONSES: dict[str, Any] = {
    "200": {"description": "The login form.", "content": _HTML},
    "302": {"description": "Back to the client with a code or an RFC 6749 §4.1.2.1 error.", "headers": _LOCATION},
    "400": {"description": "invalid_request shown to the user (unknown client, unregistered redirect URI, "
                           "malformed parameters): never redirected.", "content": _HTML},
}
_USERINFO_RESPONSES: dict[str, Any] = {
    "200": {"description": "Claims about the user (OIDC Core §5.3.2).", "content": _json("UserInfo"),
            "headers": _NO_STORE},
    "401": {"description": "Missing or invalid access token (RFC 6750 §3.1 invalid_token).",
            "content": _json("ErrorDetail"),
            "headers": {"WWW-Authenticate": {"description": "RFC 6750 challenge", "schema": _STRING}}},
    "403": {"description": "The token lacks the openid scope (insufficient_scope).", "content": _json("ErrorDetail"),
            "headers": {"WWW-Authenticate": {"description": "RFC 6750 challenge", "schema": _STRING}}},
}

_DEVICE_PAGE_RESPONSES: dict[str, Any] = {
    "200": {"description": "The code form, the sign-in and approval form, or the outcome.", "content": _HTML},
    "400": {"description": "Unknown, expired or used user code: the code form again.", "content": _HTML},
    "429": {"description": "Too many wrong codes or sign-ins from this address or for this account.",
            "content": _HTML, "headers": _RETRY_AFTER},
}

_LOGOUT_FIELDS: dict[str, Any] = {
    "id_token_hint": _STRING,
    "client_id": _STRING,
    "post_logout_redirect_uri": _STRING,
    "state": _STRING,
}
_LOGOUT_RESPONSES: dict[str, Any] = {
    "200": {"description": "The sign-out confirmation page (no valid id_token_hint), or the signed-out page.",
            "content": _HTML},
    "302": {"description": "Signed out: to the registered post_logout_redirect_uri with state.",
            "headers": _LOCATION},
    "400": {"description": "Unknown client, unregistered post_logout_redirect_uri, an id_token_hint not issued "
                           "here, malformed parameters: shown, never redirected.", "content": _HTML},
}

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("/authorize/consent", "post"): {
        "summary": "Consent form submission (clients that are not first-party): the authorization request "
                   "again, the CSRF token and decision=approve|deny",
        "requestBody": _form({**_AUTHORIZE_FIELDS, "csrf_token": _STRING,
                              "decision": {"type": "string", "enum": ["approve", "deny"]}},
                             [*_AUTHORIZE_REQUIRED, "csrf_token", "decision"]),
        "responses": {
            "200": {"description": "The login form (no session any more).", "content": _HTML},
            "303": {"description": "Back to the client with a code, or access_denied.", "headers": _LOCATION},
            "400": _PAGE_RESPONSES["400"],
            "403": {"description": "Foreign Origin, or a missing/wrong CSRF token (the page again).",
                    "content": _HTML},
        },
    },
    ("/oauth2/logout", "get"): {
        "summary": "End-session endpoint (OpenID Connect RP-Initiated Logout 1.0 §2)",
        "parameters": _query(_LOGOUT_FIELDS, []),
        "responses": _LOGOUT_RESPONSES,
    },
    ("/oauth2/logout", "post"): {
        "summary": "End-session endpoint (RP-Initiated Logout 1.0 §2), or the confirmation page's submission "
                   "(confirm=yes + csrf_token)",
        "requestBody": _form({**_LOGOUT_FIELDS, "confirm": {"type": "string", "enum": ["yes"]},
                              "csrf_token": _STRING}, []),
        "responses": {**{k: v for k, v in _LOGOUT_RESPONSES.items() if k != "302"},
                      "303": {"description": "Signed out: to the registered post_logout_redirect_uri with state.",
                              "headers": _LOCATION},
                      "403": {"description": "Missing or wrong CSRF token: the confirmation page again.",
                              "content": _HTML}},
    },
    ("/authorize", "get"): {
        "summary": "Authorization endpoint (RFC 6749 §4.1.1, PKCE RFC 7636, resource indicators RFC 8707)",
        "parameters": _query(_AUTHORIZE_FIELDS, _AUTHORIZE_REQUIRED),
        "responses": _PAGE_RESPONSES,
    },
    ("/authorize", "post"): {
        "summary": "Login form submission: the authorization request again plus the credentials",
        "requestBody": _form({**_AUTHORIZE_FIELDS, "username": _STRING, "password": _STRING},
                             [*_AUTHORIZE_REQUIRED, "username", "password"]),
        "responses": {
            **{k: v for k, v in _PAGE_RESPONSES.items() if k != "302"},
            "303": {"description": "See Other (RFC 9700 §4.12): back to the client with a code or an error.",
                    "headers": _LOCATION},
            "401": {"description": "Wrong credentials: the form again.", "content": _HTML},
            "403": {"description": "Foreign Origin (an error page), or a missing/wrong CSRF token (the form "
                                   "again, with a fresh token).", "content": _HTML},
            "429": {"description": "Too many failed sign-ins for this account or address: the form again.",
                    "content": _HTML, "headers": _RETRY_AFTER},
        },
    },
    ("/oauth2/token", "post"): {
        "summary": "Token endpoint (RFC 6749 §3.2): authorization_code (+ PKCE), client_credentials and "
                   "token exchange (RFC 8693); client authentication client_secret_basic / client_secret_post, "
                   "private_key_jwt (RFC 7523 §2.2) or none",
        "requestBody": _form(_TOKEN_FIELDS, ["grant_type"]),
        "responses": {
            "200": {"description": "RFC 6749 §5.1", "content": _json("TokenResponse"), "headers": _NO_STORE},
            "400": {"description": "RFC 6749 §5.2 error", "content": _json("OAuthError"), "headers": _NO_STORE},
            "401": {"description": "invalid_client (RFC 6749 §5.2)", "content": _json("OAuthError"),
                    "headers": {**_NO_STORE, "WWW-Authenticate": {"description": "Basic challenge",
                                                                  "schema": _STRING}}},
            "403": {"description": "access_denied", "content": _json("OAuthError"), "headers": _NO_STORE},
            "429": {"description": "Too many failed client authentications for this client_id or address "
                                   "(temporarily_unavailable); credentials not checked.",
                    "content": _json("OAuthError"), "headers": {**_NO_STORE, **_RETRY_AFTER}},
        },
    },
    ("/oauth2/device_authorization", "post"): {
        "summary": "Device authorization endpoint (RFC 8628 §3.1-3.2)",
        "requestBody": _form({"client_id": _STRING, "client_secret": _STRING, "scope": _STRING,
                              "client_assertion_type": {"type": "string", "enum": [CLIENT_ASSERTION_TYPE]},
                              "client_assertion": _STRING, "resource": {"type": "array", "items": _STRING}}, []),
        "responses": {
            "200": {"description": "RFC 8628 §3.2", "content": _json("DeviceAuthorizationResponse"),
                    "headers": _NO_STORE},
            "400": {"description": "RFC 6749 §5.2 error", "content": _json("OAuthError"), "headers": _NO_STORE},
            "401": {"description": "invalid_client (RFC 6749 §5.2)", "content": _json("OAuthError"),
                    "headers": {**_NO_STORE, "WWW-Authenticate": {"description": "Basic challenge",
                                                                  "schema": _STRING}}},
            "429": {"description": "Too many failed client authentications (temporarily_unavailable).",
                    "content": _json("OAuthError"), "headers": {**_NO_STORE, **_RETRY_AFTER}},
        },
    },
    ("/device", "get"): {
        "summary": "Device verification page (RFC 8628 §3.3): enter the user code",
        "parameters": _query({"user_code": _STRING}, []),
        "responses": _DEVICE_PAGE_RESPONSES,
    },
    ("/device", "post"): {
        "summary": "Device verification page: look up the user code, or sign in and approve / deny",
        "requestBody": _form({"user_code": _STRING, "username": _STRING, "password": _STRING,
                              "decision": {"type": "string", "enum": ["approve", "deny"]},
                              "csrf_token": _STRING}, ["user_code"]),
        "responses": {
            **_DEVICE_PAGE_RESPONSES,
            "401": {"description": "Wrong credentials: the sign-in form again.", "content": _HTML},
            "403": {"description": "Foreign Origin, or a missing/wrong CSRF token.", "content": _HTML},
        },
    },
    ("/oauth2/revoke", "post"): {
        "summary": "Token revocation (RFC 7009): a refresh token revokes its whole family, an access token "
                   "its jti; client authentication as at the token endpoint (public clients: client_id)",
        "requestBody": _form({"token": _STRING, "token_type_hint": {"type": "string", "enum": [
            "refresh_token", "access_token"]}, "client_id": _STRING, "client_secret": _STRING,
            "client_assertion_type": _STRING, "client_assertion": _STRING}, ["token"]),
        "responses": {
            "200": {"description": "revoked, or unknown (RFC 7009 §2.2); empty body", "headers": _NO_STORE},
            "400": {"description": "invalid_request, unsupported_token_type (RFC 7009 §2.2.1)",
                    "content": _json("OAuthError"), "headers": _NO_STORE},
            "401": {"description": "invalid_client", "content": _json("OAuthError"), "headers": _NO_STORE},
        },
    },
    ("/oauth2/introspect", "post"): {
        "summary": "Token introspection (RFC 7662); a confidential client's authentication is required",
        "requestBody": _form({"token": _STRING, "token_type_hint": {"type": "string", "enum": [
            "refresh_token", "access_token"]}, "client_id": _STRING, "client_secret": _STRING,
            "client_assertion_type": _STRING, "client_assertion": _STRING}, ["token"]),
        "responses": {
            "200": {"description": "RFC 7662 §2.2: {\"active\": false} for an unknown, expired or revoked token",
                    "headers": _NO_STORE, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["active"], "properties": {
                            "active": {"type": "boolean"}, "scope": _STRING, "client_id": _STRING,
                            "sub": _STRING, "aud": {}, "iss": _STRING, "exp": {"type": "integer"},
                            "iat": {"type": "integer"}, "nbf": {"type": "integer"}, "jti": _STRING,
                            "sid": _STRING, "token_type": _STRING}}}}},
            "400": {"description": "invalid_request, unsupported_token_type", "content": _json("OAuthError"),
                    "headers": _NO_STORE},
            "401": {"description": "invalid_client (no or a public client)", "content": _json("OAuthError"),
                    "headers": _NO_STORE},
        },
    },
    ("/userinfo", "get"): {"summary": "UserInfo (OIDC Core §5.3)", "responses": _USERINFO_RESPONSES},
    ("/userinfo", "post"): {"summary": "UserInfo (OIDC Core §5.3)", "responses": _USERINFO_RESPONSES},
    ("/.well-known/oauth-authorization-server", "get"): {
        "summary": "RFC 8414 metadata",
        "responses": {"200": {"description": "metadata", "content": _json("ServerMetadata")}},
    },
    ("/.well-known/openid-configuration", "get"): {
        "summary": "OpenID Provider metadata",
        "responses": {"200": {"description": "metadata", "content": _json("ServerMetadata")}},
    },
    ("/oauth2/clients/{client_id}/jwks.json", "get"): {
        "summary": "A client's registered public keys (RFC 7591 §2 jwks; JWK Set, RFC 7517 §5)",
        "description": "What the client signs its private_key_jwt assertions (RFC 7523) and its events with. "
                       "Public members only.",
        "parameters": [{"name": "client_id", "in": "path", "required": True, "schema": _STRING}],
        "responses": {
            "200": {"description": "public keys", "content": _json("JWKS", "application/jwk-set+json"),
                    "headers": {"Cache-Control": {"description": "public, max-age=<client_jwks_max_age_seconds>",
                                                  "schema": _STRING}}},
            "404": {"description": "unknown client, or no keys registered for it", "content": _json("OAuthError"),
                    "headers": _NO_STORE},
        },
    },
    ("/.well-known/jwks.json", "get"): {
        "summary": "JSON Web Key Set (RFC 7517) of the signing keys",
        "responses": {"200": {"description": "public keys",
                              "content": _json("JWKS", "application/jwk-set+json")}},
    },
}


def build_openapi(app: FastAPI, settings: AuthSettings) -> dict[str, Any]:
    """The document served at ``/openapi.json`` (built once, then cached on the app)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(copy.deepcopy(SCHEMAS))
    for (path, method), documented in OPERATIONS.items():
        operation = schema.get("paths", {}).get(path, {}).get(method)
        if operation is None:  # the route is gone: nothing to document
            continue
        operation.update(copy.deepcopy(documented))
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    document_oauth_flow(schema, authorization_url=settings.authorization_endpoint_url,
                        token_url=settings.token_endpoint_url,
                        scopes={"openid": "your user id at /userinfo", "profile": "your username at /userinfo"})
    app.openapi_schema = schema
    return schema


__all__ = ["build_openapi"]
