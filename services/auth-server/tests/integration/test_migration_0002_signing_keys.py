"""Revision 0002 on a database that revision 0001 left with plaintext private keys (the
audit's dump): after the upgrade no private key material is left, the old keys are
``previous`` (published for the verification window, then retired, or revoked at once),
and the server's start creates a fresh encrypted active key."""

from __future__ import annotations

import json

from alembic import command
from sqlalchemy import Engine, inspect, text

from bsopt_auth.config import SCHEMA
from bsopt_auth.db import migrate
from bsopt_auth.rfc7517 import ensure_active_key, generate_key, jwks_document, revoke_signing_key
from bsopt_common.db import session_scope
from bsopt_common.migrations import alembic_config

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}


def test_0002_drops_plaintext_private_keys(engine: Engine, session_factory) -> None:
    command.downgrade(alembic_config("bsopt_auth", engine, SCHEMA), "0001")
    keys = {status: generate_key(alg) for status, alg in
            (("active", "RS256"), ("previous", "ES256"), ("retired", "RS256"))}
    with engine.begin() as conn:
        assert "private_jwk" in {c["name"] for c in inspect(conn).get_columns("signing_keys", schema=SCHEMA)}
        for status, (kid, key) in keys.items():
            conn.execute(text("INSERT INTO auth.signing_keys (kid, private_jwk, alg, status) "
                              "VALUES (:kid, CAST(:jwk AS jsonb), :alg, :status)"),
                         {"kid": kid, "jwk": json.dumps(key.as_dict(private=True)),
                          "alg": "ES256" if status == "previous" else "RS256", "status": status})

    migrate(engine)

    with engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("signing_keys", schema=SCHEMA)}
        dump = conn.execute(text("SELECT row_to_json(k)::text FROM auth.signing_keys k")).scalars().all()
        rows = {r.kid: r for r in conn.execute(text("SELECT * FROM auth.signing_keys"))}
    assert "private_jwk" not in columns
    for row_text in dump:
        assert not PRIVATE_MEMBERS & set(json.loads(row_text)["public_jwk"])
    old_active, old_previous, old_retired = (keys[s][0] for s in ("active", "previous", "retired"))
    assert rows[old_active].status == rows[old_previous].status == "previous"
    assert rows[old_retired].status == "retired"
    assert all(r.private_ciphertext is None and r.deactivated_at is not None for r in rows.values())
    assert rows[old_previous].public_jwk["crv"] == "P-256"
    assert set(rows[old_active].public_jwk) == {"kty", "n", "e"}

    new_kid = ensure_active_key(session_factory, "RS256")  # what the server's start does
    with session_scope(session_factory) as s:
        published = [k["kid"] for k in jwks_document(s)["keys"]]
    assert published[0] == new_kid and set(published[1:]) == {old_active, old_previous}
    with engine.connect() as conn:
        sealed = conn.execute(text("SELECT private_ciphertext, kek_id FROM auth.signing_keys WHERE kid = :k"),
                              {"k": new_kid}).one()
    assert sealed.private_ciphertext and sealed.kek_id.startswith("dev-only:")

    # keys known to be leaked are withdrawn at once
    revoke_signing_key(session_factory, old_active, "RS256")
    revoke_signing_key(session_factory, old_previous, "RS256")
    with session_scope(session_factory) as s:
        assert [k["kid"] for k in jwks_document(s)["keys"]] == [new_kid]


def test_0002_downgrade_deletes_keys_and_upgrade_starts_over(engine: Engine, session_factory) -> None:
    command.downgrade(alembic_config("bsopt_auth", engine, SCHEMA), "0001")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM auth.signing_keys")).scalar() == 0
    migrate(engine)
    kid = ensure_active_key(session_factory, "RS256")
    with session_scope(session_factory) as s:
        assert [k["kid"] for k in jwks_document(s)["keys"]] == [kid]
