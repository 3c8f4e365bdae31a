"""argon2id hashing for user passwords and client secrets (argon2-cffi).

Verification against an unknown user or client still runs one argon2 verification
against a dummy hash, so the response time does not reveal which names exist.
"""

from __future__ import annotations

import functools
import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

#: argon2-cffi's RFC 9106 "low memory" defaults, argon2id.
_hasher = PasswordHasher(type=Type.ID)


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(32))


def verify_secret(stored_hash: str | None, candidate: str) -> bool:
    """True when ``candidate`` matches ``stored_hash``. With ``stored_hash`` None (unknown
    user/client) a dummy verification runs and the answer is False."""
    try:
        return _hasher.verify(stored_hash or _dummy_hash(), candidate) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)


__all__ = ["hash_secret", "needs_rehash", "verify_secret"]
