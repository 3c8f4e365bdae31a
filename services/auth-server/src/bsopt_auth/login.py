"""Checking a user's password, shared by the login form (``routes/authorize.py``) and the
device verification page (``routes/device.py``).

One argon2id verification whether or not the account exists (no timing oracle for
usernames), done outside any database connection (a pooled connection is never held
across CPU-bound work); a hash with outdated parameters is upgraded afterwards. Disabled
users are treated as unknown."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bsopt_auth.models import User
from bsopt_auth.passwords import hash_secret, needs_rehash, verify_secret
from bsopt_common.db import session_scope

#: Longest username or password examined (longer ones fail without a lookup).
MAX_CREDENTIAL_LENGTH = 1024


@dataclass(frozen=True)
class PasswordCheck:
    #: The user, when the password is theirs; None otherwise.
    user_id: uuid.UUID | None
    #: The account's id as a string for audit and throttle lines ("" for no account).
    subject: str


def check_password(session_factory: sessionmaker[Session], username: str, password: str) -> PasswordCheck:
    """Whether ``password`` is the enabled user ``username``'s (see the module docstring)."""
    row = None
    if username and len(username) <= MAX_CREDENTIAL_LENGTH and len(password) <= MAX_CREDENTIAL_LENGTH:
        with session_scope(session_factory) as session:
            row = session.execute(
                select(User.id, User.password_hash).where(User.username == username, User.disabled_at.is_(None))
            ).one_or_none()
    stored = row.password_hash if row is not None else None
    ok = verify_secret(stored, password[:MAX_CREDENTIAL_LENGTH])
    if row is None:
        return PasswordCheck(None, "")
    if ok and needs_rehash(row.password_hash):
        new_hash = hash_secret(password)
        with session_scope(session_factory) as session:  # unless it changed meanwhile
            session.execute(update(User).where(User.id == row.id, User.password_hash == row.password_hash)
                            .values(password_hash=new_hash))
    return PasswordCheck(row.id if ok else None, str(row.id))


__all__ = ["MAX_CREDENTIAL_LENGTH", "PasswordCheck", "check_password"]
