"""The command line: migrate / seed-dev / keys (list, rotate, revoke) in-process, and ``serve`` as a real
uvicorn process on a free 127.0.0.1 port."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jws
from joserfc.jwk import ECKey
from typer.testing import CliRunner

from bsopt_auth.__main__ import cli
from bsopt_auth.rfc7636 import create_s256_code_challenge

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def env(postgres_url: str) -> dict[str, str]:
    return {"BSOPT_AUTH_DATABASE_URL": postgres_url, "BSOPT_AUTH_ENVIRONMENT": "test"}


def test_migrate_seed_rotate(env: dict[str, str]) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["migrate"], env=env)
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["seed-dev"], env=env)
    assert result.exit_code == 0, result.output
    assert "bsopt-cli" in result.output
    assert "secret" not in result.output
    result = runner.invoke(cli, ["seed-dev"], env=env)
    assert result.exit_code == 0 and "clients=[]" in result.output
    result = runner.invoke(cli, ["rotate-keys"], env=env)  # alias of ``keys rotate``
    assert result.exit_code == 0 and "kid=" in result.output


def test_keys_list_rotate_revoke(env: dict[str, str]) -> None:
    runner = CliRunner()
    rotated = runner.invoke(cli, ["keys", "rotate"], env=env)
    assert rotated.exit_code == 0, rotated.output
    kid = rotated.output.split("kid=")[1].split()[0]
    listed = runner.invoke(cli, ["keys", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    line = next(ln for ln in listed.output.splitlines() if ln.startswith(kid))
    assert line.split()[1:3] == ["RS256", "active"]
    assert '"d"' not in listed.output and "kty" not in listed.output  # never private material

    revoked = runner.invoke(cli, ["keys", "revoke", kid], env=env)
    assert revoked.exit_code == 0, revoked.output
    assert f"revoked signing key kid={kid}" in revoked.output and "new active signing key" in revoked.output
    listed = runner.invoke(cli, ["keys", "list"], env=env).output
    assert next(ln for ln in listed.splitlines() if ln.startswith(kid)).split()[2] == "revoked"
    assert [ln.split()[2] for ln in listed.splitlines()[1:]].count("active") == 1
    missing = runner.invoke(cli, ["keys", "revoke", "no-such-kid"], env=env)
    assert missing.exit_code == 1


def test_keys_need_a_key_encryption_key_outside_dev(env: dict[str, str], tmp_path: Path) -> None:
    prod = {**env, "BSOPT_AUTH_ENVIRONMENT": "prod", "BSOPT_AUTH_ISSUER": "https://auth.example"}
    result = CliRunner().invoke(cli, ["keys", "rotate"], env=prod)
    assert result.exit_code == 2
    assert "BSOPT_AUTH_KEY_ENCRYPTION_KEY_FILE" in result.output + (result.stderr or "")
    kek = tmp_path / "kek"
    kek.write_text("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n")
    result = CliRunner().invoke(cli, ["keys", "rotate"], env={**prod, "BSOPT_AUTH_KEY_ENCRYPTION_KEY_FILE": str(kek)})
    assert result.exit_code == 0, result.output
    # back to a key the dev/test KEK opens, for the server below
    assert CliRunner().invoke(cli, ["keys", "rotate"], env=env).exit_code == 0


def test_seed_dev_is_refused_in_prod(env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["seed-dev"], env={**env, "BSOPT_AUTH_ENVIRONMENT": "prod"})
    assert result.exit_code == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(env: dict[str, str]) -> Iterator[str]:
    port = _free_port()
    issuer = f"http://127.0.0.1:{port}"
    proc_env = {
        **os.environ, **env,
        "BSOPT_AUTH_PORT": str(port), "BSOPT_AUTH_ISSUER": issuer, "BSOPT_AUTH_SEED_DEV_ON_START": "true",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bsopt_auth", "serve"], env=proc_env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail("serve exited early:\n" + (proc.stdout.read() if proc.stdout else ""))
            try:
                if httpx.get(issuer + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("serve did not come up")
            time.sleep(0.2)
        yield issuer
    finally:
        proc.terminate()
        try:
            output, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        # nothing secret ever reaches the logs
        for secret in ("demo-password", "dev-broker-gateway-secret"):
            assert secret not in output


def test_serve_over_real_http(server: str) -> None:
    with httpx.Client(base_url=server, timeout=10) as http:
        meta = http.get("/.well-known/openid-configuration").json()
        assert meta["issuer"] == server
        assert meta["token_endpoint"] == server + "/oauth2/token"
        resp = http.post(meta["token_endpoint"], data={"grant_type": "client_credentials"},
                         auth=("broker-gateway", "dev-broker-gateway-secret"))
        assert resp.status_code == 200, resp.text
        jwks = http.get(meta["jwks_uri"]).json()
        assert jwks["keys"]


def test_code_flow_and_userinfo_over_real_http(server: str) -> None:
    verifier = secrets.token_urlsafe(48)
    redirect_uri = "http://127.0.0.1:45678/callback"
    with httpx.Client(base_url=server, timeout=10) as http:
        page = http.get("/authorize", params={
            "response_type": "code", "client_id": "bsopt-cli", "redirect_uri": redirect_uri,
            "scope": "openid profile", "state": "x", "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256",
        })
        assert page.status_code == 200
        fields = {html.unescape(n): html.unescape(v) for n, v in
                  re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', page.text)}
        fields.update(username="demo", password="demo-password")
        resp = http.post("/authorize", data=fields)
        assert resp.status_code == 303
        code = parse_qs(urlsplit(resp.headers["location"]).query)["code"][0]
        # bsopt-cli is registered with dpop_bound_access_tokens (RFC 9449 §5.2): a proof,
        # with the server's nonce (§8) after the first answer.
        dpop_key = ECKey.generate_key("P-256", private=True)
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "client_id": "bsopt-cli", "code_verifier": verifier}
        tokens = http.post("/oauth2/token", data=data, headers={"DPoP": _proof(dpop_key, server + "/oauth2/token")})
        assert tokens.status_code == 400 and tokens.json()["error"] == "use_dpop_nonce", tokens.text
        tokens = http.post("/oauth2/token", data=data, headers={"DPoP": _proof(
            dpop_key, server + "/oauth2/token", tokens.headers["DPoP-Nonce"])})
        assert tokens.status_code == 200, tokens.text
        assert tokens.json()["token_type"] == "DPoP"
        access = tokens.json()["access_token"]
        ath = base64.urlsafe_b64encode(hashlib.sha256(access.encode()).digest()).rstrip(b"=").decode()
        assert http.get("/userinfo", headers={"Authorization": "Bearer " + access}).status_code == 401  # §7.1
        info = http.get("/userinfo", headers={"Authorization": "DPoP " + access, "DPoP": _proof(
            dpop_key, server + "/userinfo", htm="GET", ath=ath)})
        assert info.status_code == 200, info.text
        assert info.json()["preferred_username"] == "demo"


def _proof(key: ECKey, htu: str, nonce: str | None = None, htm: str = "POST", ath: str | None = None) -> str:
    claims = {"jti": secrets.token_urlsafe(12), "htm": htm, "htu": htu, "iat": int(time.time()),
              **({"nonce": nonce} if nonce else {}), **({"ath": ath} if ath else {})}
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    return jws.serialize_compact(header, json.dumps(claims).encode(), key, algorithms=["ES256"])
