"""SQLAlchemy tables, all in schema ``auth`` (``migrations/versions/0001`` to ``0009``);
``outbox`` and ``processed_events`` are :func:`bsopt_common.events.event_tables`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bsopt_auth.config import SCHEMA


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    #: argon2id PHC string (argon2-cffi PasswordHasher).
    password_hash: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    #: Set by ``users disable`` (revision 0007): no login, refresh, device approval or
    #: token exchange for this user. NULL: enabled.
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


#: CHECK of ``auth.clients`` (revision 0003): the credential columns agree with
#: ``client_type`` and ``token_endpoint_auth_method``.
CLIENT_CREDENTIALS_MATCH_METHOD = (
    "(client_type = 'public' AND token_endpoint_auth_method = 'none'"
    " AND client_secret_hash IS NULL AND jwks IS NULL)"
    " OR (client_type = 'confidential'"
    " AND token_endpoint_auth_method IN ('client_secret_basic', 'client_secret_post')"
    " AND client_secret_hash IS NOT NULL AND jwks IS NULL)"
    " OR (client_type = 'confidential' AND token_endpoint_auth_method = 'private_key_jwt'"
    " AND client_secret_hash IS NULL AND jwks IS NOT NULL)"
)
#: CHECK of ``auth.clients`` (revision 0003): a registered JWKS is a non-empty ``keys``
#: array and no key in it carries a private or symmetric member (defence in depth behind
#: :func:`bsopt_auth.rfc7591.normalize_client_jwks`).
CLIENT_JWKS_PUBLIC_ONLY = (
    "jwks IS NULL OR (jsonb_typeof(jwks->'keys') = 'array' AND jsonb_array_length(jwks->'keys') > 0"
    " AND NOT jwks @? '$.keys[*] ? (exists(@.d) || exists(@.p) || exists(@.q) || exists(@.dp)"
    " || exists(@.dq) || exists(@.qi) || exists(@.oth) || exists(@.k))')"
)


class Client(Base):
    __tablename__ = "clients"
    __table_args__ = (
        CheckConstraint("client_type IN ('public', 'confidential')", name="clients_client_type_check"),
        # Exactly one way to authenticate, matching the method: public clients none,
        # client_secret_* a secret hash, private_key_jwt a registered JWKS (RFC 7523).
        CheckConstraint(CLIENT_CREDENTIALS_MATCH_METHOD, name="clients_credentials_match_method"),
        CheckConstraint(CLIENT_JWKS_PUBLIC_ONLY, name="clients_jwks_public_only"),
    )

    client_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: argon2id hash of the client secret; NULL for public clients.
    client_secret_hash: Mapped[str | None] = mapped_column(Text, nullable=True)
    client_type: Mapped[str] = mapped_column(String(16), nullable=False)
    redirect_uris: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, default=list,
                                                     server_default=text("'{}'"))
    grant_types: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, default=list,
                                                   server_default=text("'{}'"))
    allowed_scopes: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, default=list,
                                                      server_default=text("'{}'"))
    allowed_resources: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, default=list,
                                                         server_default=text("'{}'"))
    #: RFC 7591 name: none | client_secret_basic | client_secret_post | private_key_jwt.
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(32), nullable=False)
    #: RFC 7591 §2 ``jwks``: the client's PUBLIC keys, ``{"keys": [...]}`` (kid on every
    #: key); it signs ``private_key_jwt`` assertions (RFC 7523) and its events with them.
    #: NULL unless the method is ``private_key_jwt``.
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    #: One of the suite's own clients: no consent screen (revision 0008).
    first_party: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    #: OpenID Connect RP-Initiated Logout 1.0 §3.1: where ``/oauth2/logout`` may redirect
    #: to (exact match). Revision 0008.
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, default=list,
                                                                 server_default=text("'{}'"))
    #: RFC 9449 §5.2 ``dpop_bound_access_tokens``: every token request must carry a DPoP
    #: proof (revision 0009).
    dpop_bound_access_tokens: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False,
                                                           server_default=false())

    @property
    def is_public(self) -> bool:
        return self.client_type == "public"


class AuthorizationCode(Base):
    __tablename__ = "authorization_codes"
    __table_args__ = (Index("authorization_codes_expires_at_idx", "expires_at"),)

    #: Hex SHA-256 of the code; the code itself is never stored.
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(
        ForeignKey(f"{SCHEMA}.clients.client_id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"), nullable=False
    )
    redirect_uri: Mapped[str] = mapped_column(Text, nullable=False)
    code_challenge: Mapped[str] = mapped_column(String(128), nullable=False)
    code_challenge_method: Mapped[str] = mapped_column(String(8), nullable=False)
    #: Granted scope, space-separated.
    scope: Mapped[str] = mapped_column(Text, nullable=False)
    #: Granted resources (RFC 8707): the access token's audience.
    resource: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    nonce: Mapped[str | None] = mapped_column(Text, nullable=True)
    auth_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    #: Set when redeemed; a code is single use.
    consumed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    #: The authorization-server session the code was issued in (revision 0008).
    session_id: Mapped[str | None] = mapped_column(
        ForeignKey(f"{SCHEMA}.sessions.id", ondelete="SET NULL"), nullable=True
    )


class SigningKey(Base):
    """A signing key. Only the ``active`` key has private material, and only encrypted
    (see :mod:`bsopt_auth.rfc7517.encryption`); every other status keeps the public JWK
    alone. ``previous`` keys are still published, ``retired`` and ``revoked`` are not."""

    __tablename__ = "signing_keys"
    __table_args__ = (
        CheckConstraint(
            "status IN ('active', 'previous', 'retired', 'revoked')", name="signing_keys_status_check"
        ),
        CheckConstraint(
            "num_nulls(private_ciphertext, private_nonce, wrapped_dek, kek_id) IN (0, 4)",
            name="signing_keys_sealed_parts_together",
        ),
        CheckConstraint(
            "(status = 'active') = (private_ciphertext IS NOT NULL)",
            name="signing_keys_private_only_when_active",
        ),
        # At most one active key at any time.
        Index(
            "signing_keys_one_active_idx", "status", unique=True,
            postgresql_where=text("status = 'active'"),
        ),
    )

    #: RFC 7638 JWK thumbprint of the public key.
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: Public JWK (RFC 7517): kty and its public members only.
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    #: AES-256-GCM ciphertext of the private JWK (associated data: kid and alg).
    private_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    private_nonce: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    #: The per-key data-encryption key, wrapped by the key-encryption key ``kek_id``.
    wrapped_dek: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    kek_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    alg: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    #: When it stopped signing (rotation or revocation).
    deactivated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: When it left the JWKS (retired after the verification window, or revoked).
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ClientAssertionJti(Base):
    """A ``jti`` of a ``private_key_jwt`` client assertion already used (RFC 7523 §3 item 7):
    remembered until the assertion could no longer be accepted (``exp`` plus leeway),
    so a replay within its lifetime is refused."""

    __tablename__ = "client_assertion_jtis"
    __table_args__ = (Index("client_assertion_jtis_expires_at_idx", "expires_at"),)

    client_id: Mapped[str] = mapped_column(
        ForeignKey(f"{SCHEMA}.clients.client_id", ondelete="CASCADE"), primary_key=True
    )
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class DPoPProofJti(Base):
    """A DPoP proof already used at the token endpoint (RFC 9449 §11.1), as the hex
    SHA-256 of its key thumbprint and ``jti``; kept until the proof's ``iat`` is too old
    to be accepted. Revision 0009."""

    __tablename__ = "dpop_proof_jtis"
    __table_args__ = (Index("dpop_proof_jtis_expires_at_idx", "expires_at"),)

    jti_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class TokenFamily(Base):
    """One redeemed authorization code (RFC 6749 §4.1.3) and every token issued from it:
    its access tokens carry the family id as ``sid``, its refresh tokens rotate within it
    (RFC 9700 §4.14.2). ``revoked_at`` (refresh-token reuse, code replay, RFC 7009)
    makes all of them inactive; ``expires_at`` is the absolute refresh-token lifetime."""

    __tablename__ = "token_families"
    __table_args__ = (
        UniqueConstraint("code_hash", name="token_families_code_hash_key"),
        Index("token_families_expires_at_idx", "expires_at"),
        Index("token_families_session_id_idx", "session_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    client_id: Mapped[str] = mapped_column(
        ForeignKey(f"{SCHEMA}.clients.client_id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"), nullable=False
    )
    #: Granted scope, space-separated; a refresh may narrow its access token, never this.
    scope: Mapped[str] = mapped_column(Text, nullable=False)
    resource: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    auth_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    #: Hex SHA-256 of the authorization code the family came from.
    code_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    #: The session its code was issued in: RP-initiated logout revokes the family
    #: (revision 0008).
    session_id: Mapped[str | None] = mapped_column(
        ForeignKey(f"{SCHEMA}.sessions.id", ondelete="SET NULL"), nullable=True
    )
    #: RFC 9449 §5: thumbprint of the DPoP key a public client's refresh tokens are bound
    #: to; a refresh must prove possession of it (revision 0009).
    dpop_jkt: Mapped[str | None] = mapped_column(String(64), nullable=True)


class RefreshToken(Base):
    """An opaque refresh token (RFC 6749 §1.5), stored as its hex SHA-256 only. Used once:
    ``used_at`` is set by the rotation that replaces it; presenting it again is reuse."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (Index("refresh_tokens_family_id_idx", "family_id"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{SCHEMA}.token_families.id", ondelete="CASCADE"), nullable=False
    )
    #: Sliding (idle) expiry, never later than the family's absolute ``expires_at``.
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class RevokedAccessToken(Base):
    """The ``jti`` of an access token revoked through RFC 7009, kept until its ``exp``;
    introspection (RFC 7662) reports it inactive."""

    __tablename__ = "revoked_access_tokens"
    __table_args__ = (Index("revoked_access_tokens_expires_at_idx", "expires_at"),)

    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    revoked_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class LoginThrottle(Base):
    """Failure counter of one throttle key (:mod:`bsopt_auth.throttle`): a login account,
    a client_id or an IP address in one scope, hashed (HMAC-SHA256 with the server's
    ``throttle_key_secret``); no raw address or name is stored. Revision 0005."""

    __tablename__ = "login_throttle"
    __table_args__ = (
        CheckConstraint("failures >= 0", name="login_throttle_failures_check"),
        Index("login_throttle_last_failure_at_idx", "last_failure_at"),
    )

    #: ``<scope>:<kind>:<hex HMAC-SHA256 of the value>``.
    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    #: Consecutive failures since the last success, lock or quiet window.
    failures: Mapped[int] = mapped_column(Integer, nullable=False)
    last_failure_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    #: Temporary lock (accounts): every attempt is refused until then.
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DeviceAuthorization(Base):
    """A pending Device Authorization Grant (RFC 8628 §3.1-3.5). Neither code is stored:
    the device code as its hex SHA-256, the user code as the hex SHA-256 of its normalised
    form (8 letters, no dash). ``status`` moves from ``pending`` to ``approved`` (with the
    user) or ``denied`` on the verification page; ``consumed_at`` is set when the token
    endpoint redeems an approved code (single use). ``interval`` grows by 5 s on each
    ``slow_down``; ``last_polled_at`` measures it. Revision 0006."""

    __tablename__ = "device_authorizations"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'approved', 'denied')", name="device_authorizations_status_check"),
        CheckConstraint("(status = 'approved') = (user_id IS NOT NULL)", name="device_authorizations_user_check"),
        UniqueConstraint("user_code_hash", name="device_authorizations_user_code_hash_key"),
        Index("device_authorizations_expires_at_idx", "expires_at"),
    )

    #: Hex SHA-256 of the device code.
    device_code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: Hex SHA-256 of the normalised user code.
    user_code_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    client_id: Mapped[str] = mapped_column(
        ForeignKey(f"{SCHEMA}.clients.client_id", ondelete="CASCADE"), nullable=False
    )
    #: Requested (and, once approved, granted) scope, space-separated.
    scope: Mapped[str] = mapped_column(Text, nullable=False)
    #: Resources (RFC 8707): the access token's audience.
    resource: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"), nullable=True
    )
    auth_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: Current minimum polling interval, seconds.
    interval: Mapped[int] = mapped_column(Integer, nullable=False)
    last_polled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    consumed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class AuditEvent(Base):
    """One audit fact (:mod:`bsopt_auth.audit`, revision 0007): who (``user_id``,
    ``client_id``, ``ip_hash``: hex HMAC-SHA256 of the address with the throttle key
    secret), what (``event_type``), when, ``outcome`` and ``reason``; ``details`` holds
    non-secret context (grant type, kid, ...). Never a secret, password or token."""

    __tablename__ = "audit_events"
    __table_args__ = (
        CheckConstraint("outcome IN ('success', 'failure')", name="audit_events_outcome_check"),
        Index("audit_events_occurred_at_idx", "occurred_at"),
        Index("audit_events_user_id_idx", "user_id"),
        Index("audit_events_client_id_idx", "client_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    event_type: Mapped[str] = mapped_column(String(64), nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    client_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    ip_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict,
                                                    server_default=text("'{}'::jsonb"))


class AuthSession(Base):
    """An authorization-server session (:mod:`bsopt_auth.sessions`): one browser sign-in.
    ``id`` is the hex SHA-256 of the cookie value, never the value. Usable while not
    ended, ``last_seen_at`` within the idle lifetime and before ``expires_at`` (the
    absolute lifetime). Revision 0008."""

    __tablename__ = "sessions"
    __table_args__ = (
        Index("sessions_user_id_idx", "user_id"),
        Index("sessions_expires_at_idx", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"), nullable=False
    )
    #: When the user last gave the password (OIDC Core ``auth_time``).
    auth_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Consent(Base):
    """The scopes a user granted a client that is not first-party (:mod:`bsopt_auth.consent`).
    Revision 0008."""

    __tablename__ = "consents"
    __table_args__ = (Index("consents_client_id_idx", "client_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"), primary_key=True
    )
    client_id: Mapped[str] = mapped_column(
        ForeignKey(f"{SCHEMA}.clients.client_id", ondelete="CASCADE"), primary_key=True
    )
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    granted_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
