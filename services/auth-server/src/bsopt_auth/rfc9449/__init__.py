"""DPoP (RFC 9449) at the token endpoint, HTTP-agnostic.

:func:`token_request_jkt` checks the ``DPoP`` header of a token request with
:func:`bsopt_common.security.dpop.verify_proof` (``htm`` POST, ``htu`` the token endpoint
URL, ``iat`` within ``dpop_proof_max_age_seconds``, no ``ath``), and returns the key's
RFC 7638 thumbprint; the grant then issues access tokens with ``cnf: {"jkt": ...}`` and
``token_type: DPoP`` (§5), and binds a public client's refresh-token family to the key
(``TokenFamily.dpop_jkt``): a refresh must present a proof by the same key.

* A client registered with ``dpop_bound_access_tokens`` (§5.2; ``bsopt-cli``) must send a
  proof with every token request; any other client may.
* Nonce (§8): with ``dpop_nonce_required`` a proof without the current server nonce is
  answered ``use_dpop_nonce`` with a ``DPoP-Nonce`` header. Nonces are stateless
  (:class:`~bsopt_common.security.dpop.NonceIssuer`: HMAC of a time slot, keyed by
  ``derived_secret("dpop")``), so every worker and replica accepts them.
* Replay (§11.1): every proof's ``jti`` (hashed with the key thumbprint) is stored in
  ``auth.dpop_proof_jtis`` (Postgres, not process memory: ``serve`` runs several worker
  processes and replicas, and a proof replayed to another one must fail too) until its
  ``iat`` is too old; expired rows are purged by the same insert.
* Every failure is ``invalid_dpop_proof`` (HTTP 400).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from bsopt_auth.config import AuthSettings
from bsopt_auth.models import Client, DPoPProofJti
from bsopt_auth.rfc6749.errors import NO_STORE_HEADERS, OAuth2Error
from bsopt_common.db import session_scope
from bsopt_common.security.dpop import (
    DPOP_SIGNING_ALGS,
    InvalidDPoPProofError,
    NonceIssuer,
    UseDPoPNonceError,
    single_proof,
    verify_proof,
)

TOKEN_TYPE_DPOP = "DPoP"
TOKEN_TYPE_BEARER = "Bearer"


class InvalidDPoPProof(OAuth2Error):
    """The DPoP proof JWT is invalid (RFC 9449 §5, §7.1)."""

    error = "invalid_dpop_proof"


class UseDPoPNonce(OAuth2Error):
    """The authorization server requires nonce in DPoP proof (RFC 9449 §8); the response
    carries the nonce to use in ``DPoP-Nonce``."""

    error = "use_dpop_nonce"

    def __init__(self, nonce: str, description: str | None = None) -> None:
        super().__init__(description or "resend the request with a DPoP proof carrying the DPoP-Nonce value")
        self.nonce = nonce

    def headers(self) -> dict[str, str]:
        return {**NO_STORE_HEADERS, "DPoP-Nonce": self.nonce}


def nonce_issuer(settings: AuthSettings) -> NonceIssuer | None:
    if not settings.dpop_nonce_required:
        return None
    return NonceIssuer(settings.derived_secret("dpop"), settings.dpop_nonce_lifetime_seconds)


class PostgresJtiStore:
    """``auth.dpop_proof_jtis``: shared by every worker and replica."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def use(self, key: str, remember_until: float) -> bool:
        now = datetime.now(UTC)
        with session_scope(self.session_factory) as session:
            session.execute(delete(DPoPProofJti).where(DPoPProofJti.expires_at < now))
            inserted = session.execute(
                pg_insert(DPoPProofJti)
                .values(jti_hash=key, expires_at=datetime.fromtimestamp(remember_until, UTC))
                .on_conflict_do_nothing()
                .returning(DPoPProofJti.jti_hash)
            ).scalar_one_or_none()
        return inserted is not None


def token_request_jkt(session_factory: sessionmaker[Session], settings: AuthSettings, client: Client,
                      proofs: Sequence[str]) -> str | None:
    """The thumbprint of the token request's valid DPoP proof; None when there is none
    and the client need not send one. Raises InvalidDPoPProof / UseDPoPNonce."""
    try:
        proof = single_proof(proofs)
        if proof is None:
            if client.dpop_bound_access_tokens:
                raise InvalidDPoPProofError("this client must send a DPoP proof (DPoP header) with token requests")
            return None
        checked = verify_proof(
            proof, htm="POST", htu=settings.token_endpoint_url, nonces=nonce_issuer(settings),
            jti_store=PostgresJtiStore(session_factory), algorithms=DPOP_SIGNING_ALGS,
            max_age_seconds=settings.dpop_proof_max_age_seconds, leeway_seconds=settings.token_leeway_seconds,
        )
    except UseDPoPNonceError as exc:
        raise UseDPoPNonce(exc.nonce) from None
    except InvalidDPoPProofError as exc:
        raise InvalidDPoPProof(str(exc)) from None
    if "ath" in checked.claims:
        raise InvalidDPoPProof("a DPoP proof at the token endpoint carries no ath")
    return checked.jkt


def check_family_binding(family_jkt: str | None, jkt: str | None) -> None:
    """§5: a refresh token bound to a key is refreshed only with a proof by that key."""
    if family_jkt is not None and jkt != family_jkt:
        raise InvalidDPoPProof("the refresh token is bound to another DPoP key" if jkt
                               else "the refresh token is DPoP-bound: send a DPoP proof by its key")


def token_type(jkt: str | None) -> str:
    return TOKEN_TYPE_DPOP if jkt else TOKEN_TYPE_BEARER


__all__ = ["DPOP_SIGNING_ALGS", "TOKEN_TYPE_BEARER", "TOKEN_TYPE_DPOP", "InvalidDPoPProof", "PostgresJtiStore",
           "UseDPoPNonce", "check_family_binding", "nonce_issuer", "token_request_jkt", "token_type"]
