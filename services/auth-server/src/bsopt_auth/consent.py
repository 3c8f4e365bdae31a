"""User consent for clients that are not first-party (OIDC Core §3.1.2.4, RFC 6749 §4.1.1
"the authorization server ... establishes whether the resource owner grants or denies the
client's access request"; RFC 9700 §4.15 on clients the user may not trust).

A client with ``first_party`` (the suite's own) never asks. For any other client the
consent page lists the client and the requested scopes; approving stores the union of the
granted scopes per (user, client) in ``auth.consents``; a later request for a subset of
them skips the page unless ``prompt=consent``; denying sends ``access_denied`` to the
client (RFC 6749 §4.1.2.1). The page's POST carries a CSRF token (:mod:`bsopt_auth.csrf`)
bound to the session cookie and the authorization request.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from bsopt_auth.models import Client, Consent
from bsopt_auth.rfc6749.errors import OAuth2Error

#: Marks the consent form's CSRF binding (so a login form's token does not fit).
FORM_MARKER = ("form", "consent")


class ConsentRequiredError(OAuth2Error):
    """The Authorization Server requires End-User consent. This error MAY be returned when
    the prompt parameter value in the Authentication Request is none, but the
    Authentication Request cannot be completed without displaying a user interface for
    End-User consent. (OIDC Core §3.1.2.6)"""

    error = "consent_required"


def consent_needed(session: Session, client: Client, user_id: uuid.UUID, scope: Sequence[str],
                   *, forced: bool) -> bool:
    """Whether the user must see the consent page for ``scope`` at ``client``."""
    if client.first_party:
        return False
    if forced:
        return True
    row = session.get(Consent, (user_id, client.client_id))
    return row is None or not set(scope) <= set(row.scopes)


def record_consent(session: Session, client_id: str, user_id: uuid.UUID, scope: Sequence[str]) -> None:
    """Remember that ``user_id`` granted ``scope`` to ``client_id`` (adds to earlier grants)."""
    now = datetime.now(UTC)
    row = session.get(Consent, (user_id, client_id), with_for_update=True)
    if row is None:
        session.execute(
            insert(Consent).values(user_id=user_id, client_id=client_id, scopes=list(dict.fromkeys(scope)),
                                   granted_at=now, updated_at=now)
            .on_conflict_do_nothing()
        )
        row = session.get(Consent, (user_id, client_id), with_for_update=True, populate_existing=True)
        assert row is not None
    row.scopes = list(dict.fromkeys([*row.scopes, *scope]))
    row.updated_at = now
    session.flush()


__all__ = ["FORM_MARKER", "ConsentRequiredError", "consent_needed", "record_consent"]
