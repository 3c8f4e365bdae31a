"""Broker credentials at rest: AES-256-GCM (NIST SP 800-38D) with ``cryptography``'s AESGCM.

Each record is sealed with a fresh random 96-bit nonce; the stored value is
``version byte || nonce || ciphertext+tag``. The connection id is the associated data, so
a ciphertext copied onto another row does not decrypt there. The key (32 bytes) comes
from ``BSOPT_BROKER_CREDENTIALS_KEY_FILE`` / ``BSOPT_BROKER_CREDENTIALS_KEY`` (base64);
:meth:`CredentialsCipher.dev_only` is derived from a public constant, protects nothing,
and is refused outside dev/test. Neither keys nor plaintexts appear in a repr, a log line
or an error message.

Key rotation: each row stores the fingerprint of the key that sealed it
(``credentials_key_id``). A cipher carries the current key and the previous ones
(``BSOPT_BROKER_CREDENTIALS_PREVIOUS_KEYS_FILE`` / ``..._PREVIOUS_KEYS``); it seals with
the current key and opens a row with the key its fingerprint names. ``python -m
bsopt_broker reseal-credentials`` re-seals every row under the current key
(:meth:`bsopt_broker.connections.store.ConnectionStore.reseal`), after which the previous
keys can be dropped. Procedure: add the new key as current and the old one as previous,
restart (every replica), reseal, remove the previous key, restart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bsopt_common.errors import Unavailable
from bsopt_common.settings import DEV_ENVIRONMENTS

KEY_BYTES = 32
NONCE_BYTES = 12
_VERSION = b"\x01"
#: Seed of the dev/test key. Public: anything it encrypts is readable by anyone.
_DEV_ONLY_SEED = b"bsopt DEV-ONLY broker credentials key; never protects real credentials"


class CredentialsDecryptionError(Exception):
    """Stored credentials could not be decrypted: another key, or a tampered or moved row
    (a stray error: INTERNAL, logged)."""


class CredentialsKeyMissing(CredentialsDecryptionError, Unavailable):
    """The row names a key this process does not have (rotation without the previous key):
    UNAVAILABLE (503), the gateway's configuration is at fault, not the caller's request;
    the message names the key id, never a key."""


def _aad(connection_id: str) -> bytes:
    return b"bsopt-broker-credentials v1:" + connection_id.encode()


class CredentialsCipher:
    """Seals and opens the credentials of one connection (a JSON object of strings)."""

    def __init__(self, key: bytes, *, label: str = "local"):
        """Raises ValueError unless ``key`` is 32 bytes."""
        if len(key) != KEY_BYTES:
            raise ValueError(f"the broker credentials key is {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self._fingerprint = hashlib.sha256(b"bsopt-credentials-key-id:" + key).hexdigest()[:16]
        self.label = label
        #: Keys that sealed rows before this one, by key id (opened, never used to seal).
        self.previous: dict[str, CredentialsCipher] = {}

    def with_previous(self, previous: Sequence[CredentialsCipher]) -> CredentialsCipher:
        """This cipher, also opening rows sealed by ``previous`` (rotation); returns self."""
        self.previous = {c.key_id: c for c in previous if c.key_id != self.key_id}
        return self

    def open_sealed(self, connection_id: str, sealed: bytes, key_id: str | None) -> dict[str, str]:
        """:meth:`open` with the key that sealed the row (``key_id`` as stored; None: the
        current key, then each previous one). Raises CredentialsDecryptionError naming an
        unknown key id."""
        if key_id is None:
            for cipher in (self, *self.previous.values()):
                try:
                    return cipher.open(connection_id, sealed)
                except CredentialsDecryptionError:
                    continue
            return self.open(connection_id, sealed)  # raises
        if key_id == self.key_id:
            return self.open(connection_id, sealed)
        cipher = self.previous.get(key_id)
        if cipher is None:
            raise CredentialsKeyMissing(
                f"connection {connection_id!r}: its credentials were sealed with key {key_id!r}, which this "
                "broker-gateway does not have; add it to BSOPT_BROKER_CREDENTIALS_PREVIOUS_KEYS_FILE")
        return cipher.open(connection_id, sealed)

    def __repr__(self) -> str:  # never the key
        return f"CredentialsCipher(key_id={self.key_id!r})"

    @property
    def key_id(self) -> str:
        """A fingerprint telling keys apart (stored beside each record), revealing nothing."""
        return f"{self.label}:{self._fingerprint}"

    @classmethod
    def dev_only(cls) -> CredentialsCipher:
        return cls(hashlib.sha256(_DEV_ONLY_SEED).digest(), label="dev-only")

    @classmethod
    def from_base64(cls, text: str, *, environment: str = "dev") -> CredentialsCipher:
        """The key from base64 of 32 bytes. Raises ValueError (naming no key material) for
        anything else, and for the dev-only key outside dev/test."""
        try:
            key = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the broker credentials key must be base64 of 32 random bytes") from None
        cipher = cls(key)
        if environment not in DEV_ENVIRONMENTS and cipher._fingerprint == cls.dev_only()._fingerprint:
            raise ValueError(f"the broker credentials key is the dev-only key (environment={environment!r})")
        return cipher

    def seal(self, connection_id: str, credentials: dict[str, str]) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        plaintext = json.dumps(credentials, separators=(",", ":"), sort_keys=True).encode()
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, _aad(connection_id))

    def open(self, connection_id: str, sealed: bytes) -> dict[str, str]:
        """Raises CredentialsDecryptionError (wrong key, tampered, or sealed for another connection)."""
        if len(sealed) < 1 + NONCE_BYTES + 16 or sealed[:1] != _VERSION:
            raise CredentialsDecryptionError(f"connection {connection_id!r}: malformed sealed credentials")
        nonce, body = sealed[1:1 + NONCE_BYTES], sealed[1 + NONCE_BYTES:]
        try:
            plaintext = self._aead.decrypt(nonce, body, _aad(connection_id))
        except InvalidTag:
            raise CredentialsDecryptionError(
                f"connection {connection_id!r}: credentials do not decrypt (another key, or a tampered or "
                "moved row)") from None
        data: Any = json.loads(plaintext)
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise CredentialsDecryptionError(f"connection {connection_id!r}: unexpected credentials shape")
        return data
