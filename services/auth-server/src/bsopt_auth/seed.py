"""Development data: the demo user and the suite's OAuth clients (``seed-dev``).

The client table below is the single place the suite's clients are declared; add a
:class:`DevClient` to register one more. Confidential clients get the placeholder secret
``dev-<client_id>-secret`` (only its SHA-256 digest is stored; settings reject such
placeholders outside dev and test) and ``client_secret_basic``, unless the seed is given
their public keys (``client_jwks``, or ``seed-dev --client-keys-dir DIR`` reading
``DIR/<client_id>.jwks.json``): such a client is registered for ``private_key_jwt``
(RFC 7523) with those keys and no secret. Re-seeding brings every client back in line
with what it is given: new keys replace the registered ones, and a service client seeded
without keys goes back to its dev secret.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bsopt_auth.models import Client, User
from bsopt_auth.passwords import (
    client_secret_needs_upgrade,
    hash_client_secret,
    hash_secret,
    verify_client_secret,
    verify_secret,
)
from bsopt_auth.rfc6749.refresh import REFRESH_TOKEN_GRANT_TYPE
from bsopt_auth.rfc7591 import (
    PRIVATE_KEY_JWT,
    InvalidClientMetadataError,
    load_client_jwks,
    normalize_client_jwks,
)
from bsopt_auth.rfc8628 import DEVICE_CODE_GRANT_TYPE
from bsopt_auth.rfc8693 import TOKEN_EXCHANGE_GRANT_TYPE
from bsopt_common.db import session_scope
from bsopt_common.settings import (
    BROKER_GATEWAY_AUDIENCE,
    KAFKA_AUDIENCE,
    ML_SCORER_AUDIENCE,
    RESOURCE_API_AUDIENCE,
    RL_TRAINER_AUDIENCE,
)

log = logging.getLogger(__name__)

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-password"
CLI_CLIENT_ID = "bsopt-cli"
#: Swagger UI at resource-api (``/docs``): a public client of its own, because the CLI's
#: tokens are DPoP-bound (RFC 9449) and Swagger UI cannot sign proofs.
DOCS_CLIENT_ID = "bsopt-docs"
#: Dev client of the admin API (scope ``admin``, resource ``urn:bsopt:auth-server``).
ADMIN_CLIENT_ID = "bsopt-admin"
CLI_REDIRECT_URI = "http://127.0.0.1/callback"
#: resource-api's origin in dev (its default port; the local stack's): its Swagger UI signs
#: in as ``bsopt-docs`` and exchanges the code from this origin (the auth-
#: server's ``token_endpoint_cors_origins`` must list it).
DEV_RESOURCE_API_ORIGIN = "http://127.0.0.1:8000"
#: Swagger UI's redirect page at resource-api (``/docs/oauth2-redirect``).
DOCS_REDIRECT_URI = DEV_RESOURCE_API_ORIGIN + "/docs/oauth2-redirect"
#: Where the CLI's RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) may send
#: the browser back to (exact match).
CLI_POST_LOGOUT_REDIRECT_URI = "http://127.0.0.1/logged-out"


@dataclass(frozen=True)
class DevClient:
    client_id: str
    scopes: str
    resources: tuple[str, ...]
    #: public: no secret, authorization code + PKCE, the device authorization grant
    #: (RFC 8628, for machines without a browser), and refresh tokens when the user
    #: grants ``offline_access`` (:mod:`bsopt_auth.rfc6749.refresh`); confidential:
    #: client credentials.
    public: bool = False
    redirect_uris: tuple[str, ...] = ()
    #: May exchange a user's token for one to a callee (RFC 8693), acting for the user.
    token_exchange: bool = False
    #: RP-Initiated Logout 1.0 §3.1 ``post_logout_redirect_uris``.
    post_logout_redirect_uris: tuple[str, ...] = ()
    #: RFC 9449 §5.2: every token request must carry a DPoP proof.
    dpop_bound_access_tokens: bool = False

    @property
    def grant_types(self) -> list[str]:
        if self.public:
            return ["authorization_code", REFRESH_TOKEN_GRANT_TYPE, DEVICE_CODE_GRANT_TYPE]
        return ["client_credentials"] + ([TOKEN_EXCHANGE_GRANT_TYPE] if self.token_exchange else [])

    @property
    def token_endpoint_auth_method(self) -> str:
        return "none" if self.public else "client_secret_basic"


def dev_client_secret(client_id: str) -> str:
    """The placeholder secret a dev confidential client is seeded with."""
    return f"dev-{client_id}-secret"


DEV_CLIENTS: tuple[DevClient, ...] = (
    DevClient(
        CLI_CLIENT_ID,
        scopes="openid profile offline_access trades:read trades:write training:read training:write",
        resources=(RESOURCE_API_AUDIENCE,),
        public=True,
        # the CLI's loopback callback: any port (RFC 8252 §7.3)
        redirect_uris=(CLI_REDIRECT_URI,),
        post_logout_redirect_uris=(CLI_POST_LOGOUT_REDIRECT_URI,),
        dpop_bound_access_tokens=True,  # sender-constrained tokens (RFC 9449; bsopt_cli.dpop)
    ),
    DevClient(
        DOCS_CLIENT_ID,  # Swagger UI "Authorize" at resource-api: code + PKCE, bearer tokens
        scopes="openid profile trades:read trades:write training:read training:write",
        resources=(RESOURCE_API_AUDIENCE,),
        public=True,
        redirect_uris=(DOCS_REDIRECT_URI,),
    ),
    DevClient(
        "resource-api",
        scopes="broker:accounts broker:orders broker:import broker:connections broker:connections.read "
               "broker:connections.complete broker:sells scorer:read trainer:jobs.read trainer:jobs.write "
               "kafka:cluster",
        resources=(BROKER_GATEWAY_AUDIENCE, ML_SCORER_AUDIENCE, RL_TRAINER_AUDIENCE, KAFKA_AUDIENCE),
        token_exchange=True,
    ),
    DevClient(
        "rl-trainer",
        scopes="broker:accounts broker:orders kafka:cluster",
        resources=(BROKER_GATEWAY_AUDIENCE, KAFKA_AUDIENCE),
        token_exchange=True,
    ),
    DevClient("broker-gateway", scopes="kafka:cluster", resources=(KAFKA_AUDIENCE,)),
    DevClient("ml-scorer", scopes="kafka:cluster", resources=(KAFKA_AUDIENCE,)),
    DevClient("digest-worker", scopes="kafka:cluster", resources=(KAFKA_AUDIENCE,)),
    # the /admin API (bsopt_auth.admin), by client credentials; dev only
    DevClient(ADMIN_CLIENT_ID, scopes="admin", resources=("urn:bsopt:auth-server",)),
)


def _ensure_user(session: Session, username: str, password: str) -> bool:
    user = session.scalars(select(User).where(User.username == username)).one_or_none()
    if user is None:
        session.add(User(username=username, password_hash=hash_secret(password)))
        return True
    if not verify_secret(user.password_hash, password):
        user.password_hash = hash_secret(password)
    return False


def _ensure_client(session: Session, spec: DevClient, jwks: dict[str, Any] | None = None) -> bool:
    client = session.get(Client, spec.client_id)
    created = client is None
    if client is None:
        client = Client(client_id=spec.client_id)
        session.add(client)
    client.client_type = "public" if spec.public else "confidential"
    client.redirect_uris = list(spec.redirect_uris)
    client.post_logout_redirect_uris = list(spec.post_logout_redirect_uris)
    client.dpop_bound_access_tokens = spec.dpop_bound_access_tokens
    client.first_party = True  # the suite's own clients: no consent screen (bsopt_auth.consent)
    client.grant_types = spec.grant_types
    client.allowed_scopes = spec.scopes.split()
    client.allowed_resources = list(spec.resources)
    client.token_endpoint_auth_method = spec.token_endpoint_auth_method
    client.jwks = None
    if spec.public:
        client.client_secret_hash = None
    elif jwks is not None:
        client.token_endpoint_auth_method = PRIVATE_KEY_JWT
        client.client_secret_hash = None
        client.jwks = jwks
    else:
        secret = dev_client_secret(spec.client_id)
        stored = client.client_secret_hash
        if not stored or client_secret_needs_upgrade(stored) or not verify_client_secret(stored, secret):
            client.client_secret_hash = hash_client_secret(secret)
    return created


#: File name of a service client's public keys in a ``--client-keys-dir``.
CLIENT_KEYS_FILE = "{client_id}.jwks.json"


def service_client_ids() -> list[str]:
    """The confidential :data:`DEV_CLIENTS` (the services), which may register keys."""
    return [spec.client_id for spec in DEV_CLIENTS if not spec.public]


def read_client_keys_dir(directory: Path) -> dict[str, dict[str, Any]]:
    """``DIR/<client_id>.jwks.json`` of every service client that has one there, checked
    (public keys only). Raises ValueError naming the file (also for private keys)."""
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory")
    found: dict[str, dict[str, Any]] = {}
    for client_id in service_client_ids():
        path = directory / CLIENT_KEYS_FILE.format(client_id=client_id)
        if not path.is_file():
            continue
        try:
            found[client_id] = load_client_jwks(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: cannot read it ({type(exc).__name__})") from None
        except InvalidClientMetadataError as exc:  # says what is wrong, never the file's content
            raise ValueError(f"{path}: {exc}") from None
    return found


def seed_dev(
    session_factory: sessionmaker[Session], client_jwks: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, list[str]]:
    """Create (or bring back in line) the demo user and every :data:`DEV_CLIENTS` entry.

    ``client_jwks`` maps a service client's id to its public keys (a JWK Set or one JWK):
    that client is registered for ``private_key_jwt`` with them and has no secret; every
    other service client gets its dev secret (``client_secret_basic``). Raises ValueError
    for a public or unknown client id, or keys that are not public keys we accept.

    Idempotent. Returns the names created in this call: ``{"users": [...], "clients": [...]}``.
    """
    client_jwks = dict(client_jwks or {})
    unknown = sorted(set(client_jwks) - set(service_client_ids()))
    if unknown:
        raise ValueError(f"no service client {', '.join(map(repr, unknown))} to register keys for")
    normalized: dict[str, dict[str, Any]] = {}
    for client_id, document in client_jwks.items():
        try:
            normalized[client_id] = normalize_client_jwks(document)
        except InvalidClientMetadataError as exc:
            raise ValueError(f"keys for {client_id!r}: {exc}") from None
    created: dict[str, list[str]] = {"users": [], "clients": []}
    with session_scope(session_factory) as session:
        if _ensure_user(session, DEMO_USERNAME, DEMO_PASSWORD):
            created["users"].append(DEMO_USERNAME)
        for spec in DEV_CLIENTS:
            if _ensure_client(session, spec, normalized.get(spec.client_id)):
                created["clients"].append(spec.client_id)
    log.info("seed-dev: created users=%s clients=%s; private_key_jwt clients=%s",
             created["users"], created["clients"], sorted(normalized))
    return created


__all__ = [
    "ADMIN_CLIENT_ID",
    "CLIENT_KEYS_FILE",
    "CLI_CLIENT_ID",
    "CLI_POST_LOGOUT_REDIRECT_URI",
    "CLI_REDIRECT_URI",
    "DEMO_PASSWORD",
    "DEMO_USERNAME",
    "DEV_CLIENTS",
    "DEV_RESOURCE_API_ORIGIN",
    "DOCS_CLIENT_ID",
    "DOCS_REDIRECT_URI",
    "DevClient",
    "dev_client_secret",
    "read_client_keys_dir",
    "seed_dev",
    "service_client_ids",
]
