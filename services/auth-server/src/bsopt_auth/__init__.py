"""bsopt authorization server: OAuth 2.1 + OpenID Connect, thin but real.

Grants: authorization code with PKCE (S256 only; public loopback clients per RFC 8252)
and client credentials (client_secret_basic / client_secret_post). Access tokens are
RFC 9068 JWTs audience-restricted with RFC 8707 resource indicators; keys are published
as a JWKS and rotate with an overlap window.

Modules are organised by specification, like authlib: ``rfc6749`` (errors, client
authentication, token endpoint), ``rfc7636`` (PKCE), ``rfc7517`` (signing keys, JWKS),
``rfc8252`` (loopback redirect matching), ``rfc8414`` (metadata), ``rfc8707`` (resource
indicators), ``rfc9068`` (JWT access tokens) and ``oidc`` (ID token, UserInfo).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
