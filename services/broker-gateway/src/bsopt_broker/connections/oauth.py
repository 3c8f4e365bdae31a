"""bsopt as an OAuth 2.0 client of Alpaca (RFC 6749 §4.1, authorization code grant, with
PKCE S256, RFC 7636), through authlib's OAuth 2.0 client.

Alpaca's flow (https://docs.alpaca.markets/docs/using-oauth2-and-trading-api): the user's
browser goes to ``https://app.alpaca.markets/oauth/authorize?response_type=code&client_id=
..&redirect_uri=..&state=..&scope=account:write trading data``; Alpaca sends it back to the
redirect URI with ``code`` and ``state``; the code is exchanged at
``https://api.alpaca.markets/oauth/token`` (``grant_type=authorization_code``, ``code``,
``client_id``, ``client_secret``, ``redirect_uri``, sent in the form body) for
``{"access_token", "token_type": "bearer", "scope"}``. The PKCE ``code_challenge`` and
``code_verifier`` are sent too (a server that does not support PKCE ignores them).

Blocking (HTTP): call from a worker thread. Neither the code, the verifier, the client
secret nor the token appears in an error message.
"""

from __future__ import annotations

from dataclasses import dataclass

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session, OAuthError

from bsopt_common.errors import FailedPrecondition, InvalidArgument, Unavailable


@dataclass(frozen=True, slots=True)
class OAuthToken:
    access_token: str
    scope: str

    def __repr__(self) -> str:  # never the token
        return f"OAuthToken(scope={self.scope!r})"


class OAuthNotConfigured(FailedPrecondition):
    """The OAuth client of Alpaca is not configured (client id, secret, redirect URI)."""


def new_state() -> str:
    """An unguessable, URL-safe state (48 characters, about 285 bits)."""
    return generate_token(48)


def new_code_verifier() -> str:
    """A PKCE code verifier (RFC 7636 §4.1: 43 to 128 unreserved characters)."""
    return generate_token(64)


class AlpacaOAuthClient:
    """Builds authorization URLs and exchanges codes for one OAuth app at Alpaca."""

    def __init__(self, *, client_id: str | None, client_secret: str | None, authorize_url: str, token_url: str,
                 redirect_uri: str | None, scope: str, timeout_s: float = 10.0):
        self._client_id = client_id
        self._client_secret = client_secret
        self.authorize_url = authorize_url
        self.token_url = token_url
        self.redirect_uri = redirect_uri
        self.scope = scope
        self._timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"AlpacaOAuthClient(client_id={self._client_id!r}, token_url={self.token_url!r})"

    @property
    def configured(self) -> bool:
        return bool(self._client_id and self._client_secret and self.redirect_uri)

    def _session(self, redirect_uri: str) -> OAuth2Session:
        if not self.configured:
            raise OAuthNotConfigured(
                "connecting Alpaca by OAuth is not configured on this server (BSOPT_BROKER_ALPACA_OAUTH_CLIENT_ID, "
                "BSOPT_BROKER_ALPACA_OAUTH_CLIENT_SECRET, BSOPT_BROKER_ALPACA_OAUTH_REDIRECT_URI); connect with API "
                "keys instead")
        return OAuth2Session(client_id=self._client_id, client_secret=self._client_secret, scope=self.scope,
                             redirect_uri=redirect_uri, token_endpoint_auth_method="client_secret_post",
                             code_challenge_method="S256")

    def authorization_url(self, state: str, code_verifier: str) -> str:
        """Where to send the user's browser. Raises OAuthNotConfigured."""
        assert self.redirect_uri is not None or not self.configured
        with self._session(self.redirect_uri or "") as session:
            url, _ = session.create_authorization_url(self.authorize_url, state=state, code_verifier=code_verifier)
        return str(url)

    def exchange(self, code: str, code_verifier: str, redirect_uri: str) -> OAuthToken:
        """The access token for ``code``. Raises InvalidArgument (Alpaca refused the code:
        unknown, used, expired, or for another client or redirect URI), Unavailable (Alpaca
        unreachable, 5xx, or an answer that is not a token), OAuthNotConfigured."""
        if not code:
            raise InvalidArgument("code is required")
        with self._session(redirect_uri) as session:
            try:
                token = session.fetch_token(self.token_url, grant_type="authorization_code", code=code,
                                            code_verifier=code_verifier, timeout=self._timeout_s)
            except OAuthError as exc:
                raise InvalidArgument(f"Alpaca refused the authorization code ({exc.error}); start the "
                                      "connection again") from None
            except requests.RequestException as exc:
                raise Unavailable(f"Alpaca's token endpoint cannot be reached: {type(exc).__name__}") from None
            except ValueError:
                raise Unavailable("Alpaca's token endpoint answered something that is not a token") from None
        access_token = token.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise Unavailable("Alpaca's token endpoint answered without an access_token")
        if str(token.get("token_type", "bearer")).lower() != "bearer":
            raise Unavailable("Alpaca's token endpoint answered a token that is not a bearer token")
        scope = token.get("scope")
        return OAuthToken(access_token, scope if isinstance(scope, str) else self.scope)
