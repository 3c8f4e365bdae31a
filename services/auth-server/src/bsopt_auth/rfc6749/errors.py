"""OAuth 2.0 error responses (RFC 6749 §4.1.2.1 and §5.2), one class per error code.

Each class's docstring is the RFC's definition of its code. ``status_code`` is the
HTTP status the token endpoint answers with; authorization endpoint errors travel in the
redirect instead (see ``bsopt_auth.rfc6749.authorization``).
"""

from __future__ import annotations

from typing import ClassVar

#: Headers every token endpoint response carries (RFC 6749 §5.1).
NO_STORE_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuth2Error(Exception):
    """Base class: an OAuth 2.0 error code with an optional human-readable description."""

    error: ClassVar[str] = "server_error"
    status_code: ClassVar[int] = 400

    def __init__(self, description: str | None = None) -> None:
        super().__init__(description or self.error)
        self.description = description

    def to_dict(self) -> dict[str, str]:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        return body

    def headers(self) -> dict[str, str]:
        return dict(NO_STORE_HEADERS)


class InvalidRequestError(OAuth2Error):
    """The request is missing a required parameter, includes an unsupported parameter
    value (other than grant type), repeats a parameter, includes multiple credentials,
    utilizes more than one mechanism for authenticating the client, or is otherwise
    malformed. (RFC 6749 §5.2)"""

    error = "invalid_request"


class InvalidClientError(OAuth2Error):
    """Client authentication failed (e.g., unknown client, no client authentication
    included, or unsupported authentication method). The authorization server MAY return
    an HTTP 401 (Unauthorized) status code to indicate which HTTP authentication schemes
    are supported. If the client attempted to authenticate via the "Authorization" request
    header field, the authorization server MUST respond with an HTTP 401 (Unauthorized)
    status code and include the "WWW-Authenticate" response header field matching the
    authentication scheme used by the client. (RFC 6749 §5.2)"""

    error = "invalid_client"
    status_code = 401

    def headers(self) -> dict[str, str]:
        return {**NO_STORE_HEADERS, "WWW-Authenticate": 'Basic realm="bsopt", charset="UTF-8"'}


class InvalidGrantError(OAuth2Error):
    """The provided authorization grant (e.g., authorization code, resource owner
    credentials) or refresh token is invalid, expired, revoked, does not match the
    redirection URI used in the authorization request, or was issued to another client.
    (RFC 6749 §5.2)"""

    error = "invalid_grant"


class UnauthorizedClientError(OAuth2Error):
    """The authenticated client is not authorized to use this authorization grant type.
    (RFC 6749 §5.2; at the authorization endpoint, §4.1.2.1: the client is not authorized
    to request an authorization code using this method.)"""

    error = "unauthorized_client"


class UnsupportedGrantTypeError(OAuth2Error):
    """The authorization grant type is not supported by the authorization server.
    (RFC 6749 §5.2)"""

    error = "unsupported_grant_type"


class InvalidScopeError(OAuth2Error):
    """The requested scope is invalid, unknown, malformed, or exceeds the scope granted
    by the resource owner. (RFC 6749 §5.2)"""

    error = "invalid_scope"


class UnsupportedTokenTypeError(OAuth2Error):
    """The authorization server does not support the revocation of the presented token
    type. That is, the client tried to revoke an access token on a server not supporting
    this feature. (RFC 7009 §2.2.1)"""

    error = "unsupported_token_type"


class AccessDeniedError(OAuth2Error):
    """The resource owner or authorization server denied the request.
    (RFC 6749 §4.1.2.1)"""

    error = "access_denied"
    status_code = 403


class UnsupportedResponseTypeError(OAuth2Error):
    """The authorization server does not support obtaining an authorization code using
    this method. (RFC 6749 §4.1.2.1)"""

    error = "unsupported_response_type"


class ServerError(OAuth2Error):
    """The authorization server encountered an unexpected condition that prevented it
    from fulfilling the request. (RFC 6749 §4.1.2.1)"""

    error = "server_error"
    status_code = 500


class TemporarilyUnavailableError(OAuth2Error):
    """The authorization server is currently unable to handle the request due to a
    temporary overloading or maintenance of the server. (RFC 6749 §4.1.2.1)"""

    error = "temporarily_unavailable"
    status_code = 503


__all__ = [
    "NO_STORE_HEADERS",
    "AccessDeniedError",
    "InvalidClientError",
    "InvalidGrantError",
    "InvalidRequestError",
    "InvalidScopeError",
    "OAuth2Error",
    "ServerError",
    "TemporarilyUnavailableError",
    "UnauthorizedClientError",
    "UnsupportedGrantTypeError",
    "UnsupportedResponseTypeError",
    "UnsupportedTokenTypeError",
]
