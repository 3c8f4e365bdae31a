"""Identity at every boundary: one JWT access-token verifier (RFC 9068) with a JWKS
cache, and its adapters for FastAPI, WebSocket and gRPC; the per-event signatures every
Kafka event carries (each producer's own key, :mod:`.event_signing`); plus the
client-credentials token provider (client secret or ``private_key_jwt``) every gRPC
client uses."""

from bsopt_common.security.event_signing import (
    EVENT_SIGNATURE_TYPE,
    SIGNATURE_HEADER,
    EventSignatureError,
    EventSignatureVerifier,
    EventSigner,
    SigningKeyError,
    generate_signing_key,
    load_signing_key,
    private_jwk_json,
    public_jwks,
)
from bsopt_common.security.jwt import (
    AccessTokenClaims,
    AccessTokenVerifier,
    InsufficientScopeError,
    InvalidTokenError,
    JWKSCache,
)
from bsopt_common.security.token_provider import (
    CLIENT_ASSERTION_TYPE,
    ClientCredentialsTokenProvider,
    TokenRequestError,
)

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "EVENT_SIGNATURE_TYPE",
    "SIGNATURE_HEADER",
    "AccessTokenClaims",
    "AccessTokenVerifier",
    "ClientCredentialsTokenProvider",
    "EventSignatureError",
    "EventSignatureVerifier",
    "EventSigner",
    "InsufficientScopeError",
    "InvalidTokenError",
    "JWKSCache",
    "SigningKeyError",
    "TokenRequestError",
    "generate_signing_key",
    "load_signing_key",
    "private_jwk_json",
    "public_jwks",
]
