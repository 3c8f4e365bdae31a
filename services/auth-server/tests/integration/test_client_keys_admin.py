"""Registering service clients' public keys: ``clients set-jwks`` / ``clients show-jwks``,
``seed-dev --client-keys-dir``, and revision 0003 over a database revision 0002 left
with secret clients (they keep working)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from alembic import command
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from bsopt_auth.__main__ import cli
from bsopt_auth.config import SCHEMA
from bsopt_auth.db import migrate
from bsopt_auth.models import Client
from bsopt_auth.seed import seed_dev
from bsopt_common.db import session_scope
from bsopt_common.migrations import alembic_config

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
# a 1024-bit RSA key is generated below, to be refused
pytestmark = pytest.mark.filterwarnings("ignore:Key size should be")


@pytest.fixture(scope="module")
def env(postgres_url: str, engine: Engine) -> dict[str, str]:
    """The CLI's environment, over the module's database (migrated and seeded)."""
    return {"BSOPT_AUTH_DATABASE_URL": postgres_url, "BSOPT_AUTH_ENVIRONMENT": "test"}


def write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document))
    return path


def assertion_for(client_id: str, key: ECKey, settings) -> str:
    now = int(time.time())
    return jwt.encode({"alg": "ES256", "kid": key.thumbprint()},
                      {"iss": client_id, "sub": client_id, "aud": settings.issuer, "exp": now + 60,
                       "jti": uuid.uuid4().hex}, key, algorithms=["ES256"])


async def token_with(oauth, client_id: str, key: ECKey, settings) -> int:
    resp = await oauth.client.post("/oauth2/token", data={
        "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion_for(client_id, key, settings), "resource": "urn:bsopt:kafka"})
    return resp.status_code


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("private", [
    ECKey.generate_key("P-256", private=True).as_dict(private=True),
    RSAKey.generate_key(2048, private=True).as_dict(private=True),
    OKPKey.generate_key("Ed25519", private=True).as_dict(private=True),
    {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"},
    {"kty": "RSA", "n": "AQAB", "e": "AQAB", "qi": "AQAB"},
])
@pytest.mark.parametrize("wrapped", [False, True])
def test_set_jwks_refuses_private_keys(env, tmp_path, private, wrapped) -> None:
    public = ECKey.generate_key("P-256", private=True).as_dict(private=False)
    document = {"keys": [public, private]} if wrapped else private
    result = CliRunner().invoke(cli, ["clients", "set-jwks", "ml-scorer", "--file",
                                      str(write(tmp_path / "k.json", document))], env=env)
    assert result.exit_code == 2, result.output
    assert "refused" in result.output and ("private" in result.output or "symmetric" in result.output)
    for member in ("d", "p", "k", "qi"):
        value = private.get(member)
        assert not value or value not in result.output  # never echoes key material
    shown = CliRunner().invoke(cli, ["clients", "show-jwks", "ml-scorer"], env=env)
    assert shown.exit_code == 1 and "no registered keys" in shown.output  # nothing was stored


@pytest.mark.parametrize("document", [
    {"kty": "RSA", **{k: v for k, v in RSAKey.generate_key(1024, private=False).as_dict().items() if k != "kty"}},
    ECKey.generate_key("P-384", private=False).as_dict(),
    OKPKey.generate_key("X25519", private=False).as_dict(),
    {"keys": []}, {"keys": "x"}, [1], "text",
    {**ECKey.generate_key("P-256", private=False).as_dict(), "alg": "RS256"},
    {**ECKey.generate_key("P-256", private=False).as_dict(), "use": "enc"},
])
def test_set_jwks_refuses_other_keys(env, tmp_path, document) -> None:
    result = CliRunner().invoke(cli, ["clients", "set-jwks", "ml-scorer", "--file",
                                      str(write(tmp_path / "k.json", document))], env=env)
    assert result.exit_code == 2, result.output


async def test_set_jwks_switches_the_client_to_private_key_jwt(env, tmp_path, oauth, settings) -> None:
    key = ECKey.generate_key("P-256", private=True)
    assert (await oauth.client_credentials("ml-scorer")).status_code == 200  # the dev secret, before
    runner = CliRunner()
    result = runner.invoke(cli, ["clients", "set-jwks", "ml-scorer", "--file",
                                 str(write(tmp_path / "ml.jwk.json", key.as_dict(private=False)))], env=env)
    assert result.exit_code == 0, result.output
    assert f"kid={key.thumbprint()}" in result.output and "private_key_jwt" in result.output
    assert "/oauth2/clients/ml-scorer/jwks.json" in result.output
    assert (await oauth.client_credentials("ml-scorer")).status_code == 401  # the secret is gone
    assert await token_with(oauth, "ml-scorer", key, settings) == 200

    shown = runner.invoke(cli, ["clients", "show-jwks", "ml-scorer"], env=env)
    assert shown.exit_code == 0, shown.output
    keys = json.loads(shown.output)["keys"]
    assert [k["kid"] for k in keys] == [key.thumbprint()] and not PRIVATE_MEMBERS & set(keys[0])
    served = (await oauth.client.get("/oauth2/clients/ml-scorer/jwks.json")).json()
    assert served == json.loads(shown.output)

    # a new key replaces the old one
    new = ECKey.generate_key("P-256", private=True)
    assert runner.invoke(cli, ["clients", "set-jwks", "ml-scorer", "--file",
                               str(write(tmp_path / "ml2.jwk.json", {"keys": [new.as_dict(private=False)]}))],
                         env=env).exit_code == 0
    assert await token_with(oauth, "ml-scorer", key, settings) == 401
    assert await token_with(oauth, "ml-scorer", new, settings) == 200


def test_set_jwks_unknown_or_public_client(env, tmp_path) -> None:
    path = str(write(tmp_path / "k.json", ECKey.generate_key("P-256", private=False).as_dict()))
    assert CliRunner().invoke(cli, ["clients", "set-jwks", "no-such", "--file", path], env=env).exit_code == 1
    assert CliRunner().invoke(cli, ["clients", "set-jwks", "bsopt-cli", "--file", path], env=env).exit_code == 2
    assert CliRunner().invoke(cli, ["clients", "show-jwks", "no-such"], env=env).exit_code == 1


# --------------------------------------------------------------------------- seed


async def test_seed_dev_client_keys_dir(env, tmp_path, oauth, settings, session_factory) -> None:
    key = ECKey.generate_key("P-256", private=True)
    write(tmp_path / "broker-gateway.jwks.json", {"keys": [key.as_dict(private=False)]})
    write(tmp_path / "broker-gateway.private.jwk.json", key.as_dict(private=True))  # never read
    result = CliRunner().invoke(cli, ["seed-dev", "--client-keys-dir", str(tmp_path)], env=env)
    assert result.exit_code == 0, result.output
    assert "private_key_jwt=['broker-gateway']" in result.output
    assert await token_with(oauth, "broker-gateway", key, settings) == 200
    assert (await oauth.client_credentials("broker-gateway")).status_code == 401
    assert (await oauth.client_credentials("digest-worker")).status_code == 200  # no file: dev secret

    # re-seeding with new keys replaces them
    new = ECKey.generate_key("P-256", private=True)
    write(tmp_path / "broker-gateway.jwks.json", new.as_dict(private=False))
    assert CliRunner().invoke(cli, ["seed-dev", "--client-keys-dir", str(tmp_path)], env=env).exit_code == 0
    assert await token_with(oauth, "broker-gateway", key, settings) == 401
    assert await token_with(oauth, "broker-gateway", new, settings) == 200

    # a private key in the folder is refused, and nothing changes
    write(tmp_path / "digest-worker.jwks.json", {"keys": [key.as_dict(private=True)]})
    refused = CliRunner().invoke(cli, ["seed-dev", "--client-keys-dir", str(tmp_path)], env=env)
    assert refused.exit_code == 2 and "digest-worker.jwks.json" in refused.output
    assert (await oauth.client_credentials("digest-worker")).status_code == 200

    # seeding without keys brings the client back to its dev secret
    seed_dev(session_factory)
    assert (await oauth.client_credentials("broker-gateway")).status_code == 200
    with pytest.raises(ValueError, match="bsopt-cli"):
        seed_dev(session_factory, {"bsopt-cli": new.as_dict(private=False)})
    with pytest.raises(ValueError, match="private"):
        seed_dev(session_factory, {"ml-scorer": new.as_dict(private=True)})


# --------------------------------------------------------------------------- migration 0003


async def test_0003_upgrade_keeps_secret_clients_working(engine: Engine, session_factory, oauth, settings) -> None:
    seed_dev(session_factory)
    command.downgrade(alembic_config("bsopt_auth", engine, SCHEMA), "0002")
    with engine.begin() as conn:
        columns = {r[0] for r in conn.execute(text(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'auth' "
            "AND table_name = 'clients'"))}
        assert "jwks" not in columns
        # a client an operator added by hand under 0002
        conn.execute(text(
            "INSERT INTO auth.clients (client_id, client_secret_hash, client_type, grant_types, allowed_scopes, "
            "allowed_resources, token_endpoint_auth_method) SELECT 'legacy-svc', client_secret_hash, "
            "'confidential', grant_types, allowed_scopes, allowed_resources, 'client_secret_post' "
            "FROM auth.clients WHERE client_id = 'digest-worker'"))

    migrate(engine)

    assert (await oauth.client_credentials("digest-worker")).status_code == 200
    assert (await oauth.client_credentials("legacy-svc", "dev-digest-worker-secret", method="post",
                                           scope="kafka:cluster")).status_code == 200
    page = await oauth.login(scope="openid")  # the public client
    assert page.response.status_code == 303 and "code" in page.query
    with session_scope(session_factory) as s:
        assert all(c.jwks is None for c in s.query(Client).all())

    # keys registered after the upgrade; a downgrade removes the private_key_jwt clients
    key = ECKey.generate_key("P-256", private=True)
    seed_dev(session_factory, {"rl-trainer": key.as_dict(private=False)})
    assert await token_with(oauth, "rl-trainer", key, settings) == 200
    command.downgrade(alembic_config("bsopt_auth", engine, SCHEMA), "0002")
    with engine.connect() as conn:
        ids = set(conn.execute(text("SELECT client_id FROM auth.clients")).scalars())
    assert "rl-trainer" not in ids and {"digest-worker", "legacy-svc", "bsopt-cli"} <= ids
    migrate(engine)
    seed_dev(session_factory)
    assert (await oauth.client_credentials("rl-trainer", scope="kafka:cluster",
                                           resource="urn:bsopt:kafka")).status_code == 200
