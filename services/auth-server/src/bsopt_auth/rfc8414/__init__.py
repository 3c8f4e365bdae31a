"""RFC 8414 authorization server metadata (also served as OpenID Provider metadata)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bsopt_auth.config import AuthSettings
from bsopt_auth.models import Client
from bsopt_auth.oidc import CLAIMS_SUPPORTED, OPENID_SCOPE
from bsopt_auth.rfc6749.client_auth import AUTH_METHODS
from bsopt_auth.rfc6749.token import GRANT_TYPES_SUPPORTED
from bsopt_auth.rfc7517 import SUPPORTED_ALGS
from bsopt_auth.rfc7591 import CLIENT_SIGNING_ALGS
from bsopt_auth.rfc7636 import SUPPORTED_METHODS
from bsopt_common.security.dpop import DPOP_SIGNING_ALGS


def known_scopes(session: Session) -> list[str]:
    """Every scope some registered client may request, plus ``openid``; sorted."""
    scopes: set[str] = {OPENID_SCOPE}
    for allowed in session.scalars(select(Client.allowed_scopes)):
        scopes.update(allowed)
    return sorted(scopes)


def server_metadata(settings: AuthSettings, scopes: Iterable[str]) -> dict[str, Any]:
    return {
        "issuer": settings.issuer,
        "authorization_endpoint": settings.authorization_endpoint_url,
        "token_endpoint": settings.token_endpoint_url,
        "jwks_uri": settings.jwks_uri,
        "userinfo_endpoint": settings.userinfo_endpoint_url,
        # RFC 7009 / RFC 7662 (RFC 8414 §2): public clients revoke with client_id alone;
        # introspection needs a confidential client's authentication.
        "revocation_endpoint": settings.revocation_endpoint_url,
        "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "introspection_endpoint": settings.introspection_endpoint_url,
        "introspection_endpoint_auth_methods_supported": [m for m in AUTH_METHODS if m != "none"],
        # RFC 8628 §4: the Device Authorization Grant.
        "device_authorization_endpoint": settings.device_authorization_endpoint_url,
        # OpenID Connect RP-Initiated Logout 1.0 §2.1 (bsopt_auth.routes.logout).
        "end_session_endpoint": settings.base_url + "/oauth2/logout",
        # OIDC Core §3.1.2.1 prompt values (bsopt_auth.sessions, bsopt_auth.consent).
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "scopes_supported": list(scopes),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(GRANT_TYPES_SUPPORTED),
        "code_challenge_methods_supported": list(SUPPORTED_METHODS),
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        # RFC 8414 §2: what private_key_jwt assertions (RFC 7523) may be signed with.
        "token_endpoint_auth_signing_alg_values_supported": list(CLIENT_SIGNING_ALGS),
        "subject_types_supported": ["public"],
        # Every published key's algorithm may sign; RS256 is OIDC's mandatory one.
        "id_token_signing_alg_values_supported": list(SUPPORTED_ALGS),
        "claims_supported": list(CLAIMS_SUPPORTED),
        "authorization_response_iss_parameter_supported": True,
        # RFC 9449 §5.1: DPoP proofs at the token endpoint (bsopt_auth.rfc9449).
        "dpop_signing_alg_values_supported": list(DPOP_SIGNING_ALGS),
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
    }


__all__ = ["known_scopes", "server_metadata"]
