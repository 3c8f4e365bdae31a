"""A service's identity against the :class:`~bsopt_common.testing.tokens.TestIssuer`, as
settings keyword arguments: its issuer and JWKS, its token endpoint, its own key pair
(the public half registered as the client's JWKS, so its events verify and it
authenticates with ``private_key_jwt``), and where producers' keys are fetched."""

from __future__ import annotations

from typing import Any

from bsopt_common.security.event_signing import private_jwk_json
from bsopt_common.testing.tokens import TestIssuer


def service_identity(issuer: TestIssuer, client_id: str) -> dict[str, Any]:
    """Settings values (``ServiceSettings`` field names) for ``client_id`` at ``issuer``."""
    return {
        "issuer": issuer.issuer,
        "jwks_url": issuer.jwks_url,
        "token_endpoint": issuer.token_url,
        "client_id": client_id,
        "signing_key": private_jwk_json(issuer.service_key(client_id)),
        "client_jwks_url": issuer.client_jwks_url_template,
    }


def service_identity_env(issuer: TestIssuer, client_id: str, prefix: str) -> dict[str, str]:
    """The same as environment variables with ``prefix`` (e.g. ``BSOPT_BROKER_``)."""
    return {f"{prefix}{name.upper()}": str(value) for name, value in service_identity(issuer, client_id).items()}
