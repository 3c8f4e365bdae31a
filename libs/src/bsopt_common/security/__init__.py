"""Identity at every boundary: one JWT access-token verifier (RFC 9068) with a JWKS
cache, and its adapters for FastAPI, WebSocket, gRPC and Kafka events; plus the
client-credentials token provider every gRPC client and event producer uses."""

from bsopt_common.security.jwt import (
    AccessTokenClaims,
    AccessTokenVerifier,
    InsufficientScopeError,
    InvalidTokenError,
    JWKSCache,
)
from bsopt_common.security.token_provider import ClientCredentialsTokenProvider, TokenRequestError

__all__ = [
    "AccessTokenClaims",
    "AccessTokenVerifier",
    "ClientCredentialsTokenProvider",
    "InsufficientScopeError",
    "InvalidTokenError",
    "JWKSCache",
    "TokenRequestError",
]
