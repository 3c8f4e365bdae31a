"""Signing keys at rest: envelope encryption with AES-256-GCM.

Each signing key gets its own random 256-bit data-encryption key (DEK). The DEK encrypts
the private JWK (AES-256-GCM, 96-bit random nonce, the kid and alg bound as associated
data, so a ciphertext moved to another row fails to decrypt). The DEK itself is stored
only wrapped by the key-encryption key (KEK), together with the KEK's id.

The KEK sits behind :class:`KeyEncryptionKey` (``key_id``, ``wrap``, ``unwrap``) so a KMS
(AWS KMS Encrypt/Decrypt, GCP KMS, Vault transit) can supply it later without touching
the table layout. :class:`LocalKeyEncryptionKey` is the one built in: 32 bytes from a
secret file or an environment variable (see :class:`bsopt_auth.config.AuthSettings`).
:func:`dev_only_key_encryption_key` is derived from a public constant: it protects
nothing and settings refuse it outside dev/test.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEK_BYTES = 32
NONCE_BYTES = 12
#: Seed of the dev/test KEK. Public: anything it encrypts is readable by anyone.
_DEV_ONLY_SEED = b"bsopt DEV-ONLY key-encryption key; never protects production keys"


class KeyDecryptionError(Exception):
    """A private key could not be decrypted: wrong KEK, or a tampered or swapped row."""


class KeyEncryptionKey(Protocol):
    """What the signing-key store needs of a KEK (local secret or a KMS key)."""

    @property
    def key_id(self) -> str:
        """Stable, non-secret identifier stored next to every DEK this KEK wraps."""
        ...

    def wrap(self, dek: bytes, *, kid: str) -> bytes:
        """Encrypt ``dek``, bound to the signing key ``kid``."""
        ...

    def unwrap(self, wrapped: bytes, *, kid: str, key_id: str) -> bytes:
        """Decrypt a DEK wrapped by :meth:`wrap` under KEK ``key_id`` for ``kid``;
        raises :class:`KeyDecryptionError`."""
        ...


@dataclass(frozen=True)
class LocalKeyEncryptionKey:
    """A 256-bit KEK held in process memory; wraps DEKs with AES-256-GCM."""

    secret: bytes
    #: Prefix of :attr:`key_id` ("local" or "dev-only").
    label: str = "local"

    def __post_init__(self) -> None:
        if len(self.secret) != KEK_BYTES:
            raise ValueError(f"a key-encryption key is {KEK_BYTES} bytes, got {len(self.secret)}")

    def __repr__(self) -> str:  # never print the secret
        return f"LocalKeyEncryptionKey(key_id={self.key_id!r})"

    @property
    def key_id(self) -> str:
        # A fingerprint: tells KEKs apart (rotation of the KEK), reveals nothing usable.
        digest = hashlib.sha256(b"bsopt-kek-id:" + self.secret).hexdigest()[:16]
        return f"{self.label}:{digest}"

    def wrap(self, dek: bytes, *, kid: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(self.secret).encrypt(nonce, dek, _dek_aad(kid))

    def unwrap(self, wrapped: bytes, *, kid: str, key_id: str) -> bytes:
        if key_id != self.key_id:
            raise KeyDecryptionError(
                f"signing key {kid} is wrapped by KEK {key_id!r}, but the configured KEK is "
                f"{self.key_id!r}"
            )
        try:
            return AESGCM(self.secret).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _dek_aad(kid))
        except InvalidTag as exc:
            raise KeyDecryptionError(f"cannot unwrap the data key of signing key {kid}") from exc

    @classmethod
    def from_base64(cls, value: str) -> LocalKeyEncryptionKey:
        try:
            raw = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("the key-encryption key must be base64 of 32 random bytes") from exc
        if len(raw) != KEK_BYTES:
            raise ValueError(f"the key-encryption key must be base64 of {KEK_BYTES} bytes, got {len(raw)} bytes")
        return cls(raw)


def dev_only_key_encryption_key() -> LocalKeyEncryptionKey:
    """The deterministic dev/test KEK (derived from a constant in this file)."""
    return LocalKeyEncryptionKey(hashlib.sha256(_DEV_ONLY_SEED).digest(), label="dev-only")


def _dek_aad(kid: str) -> bytes:
    return b"bsopt-dek:" + kid.encode()


def _jwk_aad(kid: str, alg: str) -> bytes:
    return b"bsopt-signing-key:" + kid.encode() + b":" + alg.encode()


@dataclass(frozen=True)
class SealedKey:
    """What the database stores of a private key."""

    ciphertext: bytes
    nonce: bytes
    wrapped_dek: bytes
    kek_id: str


def seal_private_jwk(private_jwk: dict[str, Any], *, kid: str, alg: str, kek: KeyEncryptionKey) -> SealedKey:
    """Encrypt ``private_jwk`` under a fresh DEK, and wrap the DEK with ``kek``."""
    dek = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(NONCE_BYTES)
    plaintext = json.dumps(private_jwk, sort_keys=True, separators=(",", ":")).encode()
    ciphertext = AESGCM(dek).encrypt(nonce, plaintext, _jwk_aad(kid, alg))
    return SealedKey(ciphertext, nonce, kek.wrap(dek, kid=kid), kek.key_id)


def open_private_jwk(sealed: SealedKey, *, kid: str, alg: str, kek: KeyEncryptionKey) -> dict[str, Any]:
    """Inverse of :func:`seal_private_jwk`; raises :class:`KeyDecryptionError`."""
    dek = kek.unwrap(sealed.wrapped_dek, kid=kid, key_id=sealed.kek_id)
    try:
        plaintext = AESGCM(dek).decrypt(sealed.nonce, sealed.ciphertext, _jwk_aad(kid, alg))
    except InvalidTag as exc:
        raise KeyDecryptionError(f"cannot decrypt signing key {kid} (tampered or moved row?)") from exc
    jwk = json.loads(plaintext)
    if not isinstance(jwk, dict):
        raise KeyDecryptionError(f"signing key {kid} does not decrypt to a JWK")
    return jwk


__all__ = [
    "KeyDecryptionError",
    "KeyEncryptionKey",
    "LocalKeyEncryptionKey",
    "SealedKey",
    "dev_only_key_encryption_key",
    "open_private_jwk",
    "seal_private_jwk",
]
