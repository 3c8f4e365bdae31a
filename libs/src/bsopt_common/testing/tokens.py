"""A test issuer: signing keys, a JWKS served over real HTTP on 127.0.0.1, and a minter
of RFC 9068 access tokens with any claims, including wrong ones (bad ``aud``, expired,
signed by a key that is not in the JWKS) for the refusal tests every service has."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from joserfc import jwt
from joserfc.jwk import ECKey, Key, KeySet


class TestIssuer:
    __test__ = False  # not a pytest test class

    def __init__(self, issuer: str = "http://127.0.0.1:9000"):
        self.issuer = issuer
        self.key = ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"})
        self.key.ensure_kid()
        #: A key that is never published: tokens it signs must be refused.
        self.rogue_key = ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"})
        self.rogue_key.ensure_kid()
        self.published: list[Key] = [self.key]
        #: ``Cache-Control: max-age`` the JWKS is served with (None: no header).
        self.jwks_max_age: int | None = None
        self.jwks_requests = 0
        self.token_requests = 0
        self._server: ThreadingHTTPServer | None = None

    # --- JWKS over HTTP -----------------------------------------------------------
    def start(self) -> str:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.jwks_requests += 1
                body = json.dumps(KeySet(owner.published).as_dict(private=False)).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                if owner.jwks_max_age is not None:
                    self.send_header("cache-control", f"public, max-age={owner.jwks_max_age}")
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                client_id = None
                auth = self.headers.get("authorization", "")
                if auth.lower().startswith("basic "):
                    client_id = base64.b64decode(auth[6:]).decode().split(":", 1)[0]
                client_id = client_id or form.get("client_id")
                body: dict[str, object]
                if form.get("grant_type") != "client_credentials" or not client_id:
                    status, body = 400, {"error": "invalid_request"}
                else:
                    owner.token_requests += 1
                    token = owner.token(aud=form.get("resource", ""), scope=form.get("scope", ""),
                                        sub=client_id, client_id=client_id)
                    status, body = 200, {"access_token": token, "token_type": "Bearer", "expires_in": 300}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.jwks_url

    @property
    def jwks_url(self) -> str:
        if self._server is None:
            raise RuntimeError("TestIssuer.start() first")
        return f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"

    @property
    def base_url(self) -> str:
        return self.jwks_url.rsplit("/.well-known/", 1)[0]

    @property
    def token_url(self) -> str:
        """Client-credentials endpoint: any client id is accepted and gets a token for the
        requested ``resource`` and ``scope``, issued as ``iss`` = :attr:`issuer`."""
        return self.base_url + "/oauth2/token"

    def service_env(self) -> dict[str, str]:
        """Settings values that point a service at this issuer."""
        return {"issuer": self.issuer, "jwks_url": self.jwks_url}

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> TestIssuer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- tokens --------------------------------------------------------------------
    def token(
        self,
        *,
        aud: str | list[str],
        scope: str = "",
        sub: str = "user-1",
        client_id: str = "test-client",
        ttl_seconds: int = 300,
        issued_at: int | None = None,
        typ: str = "at+jwt",
        rogue: bool = False,
        **extra: object,
    ) -> str:
        now = int(time.time()) if issued_at is None else issued_at
        claims = {
            "iss": self.issuer, "sub": sub, "aud": aud, "client_id": client_id, "scope": scope,
            "iat": now, "nbf": now, "exp": now + ttl_seconds, "jti": str(uuid.uuid4()), **extra,
        }
        key = self.rogue_key if rogue else self.key
        return jwt.encode({"alg": "ES256", "kid": key.kid, "typ": typ}, claims, key)

    def expired_token(self, **kw: Any) -> str:
        """A token that expired 50 minutes ago; ``kw`` as for :meth:`token`."""
        return self.token(issued_at=int(time.time()) - 3600, ttl_seconds=600, **kw)

    def rotate(self) -> None:
        """A new signing key becomes active; the old one stays published."""
        new = ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"})
        new.ensure_kid()
        self.key = new
        self.published = [new, *self.published]

    def revoke(self, kid: str) -> None:
        """Remove ``kid`` from the JWKS (tokens it signed must stop verifying)."""
        self.published = [k for k in self.published if k.kid != kid]

    def forged_token(self, *, aud: str | list[str], kid: str | None = None, **kw: Any) -> str:
        """A token signed by a fresh unpublished key under ``kid`` (a random one if None):
        an attacker probing unknown kids."""
        key = ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"})
        key.ensure_kid()
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": "attacker", "aud": aud, "client_id": "attacker", "scope": "",
                  "iat": now, "nbf": now, "exp": now + 300, "jti": str(uuid.uuid4()), **kw}
        return jwt.encode({"alg": "ES256", "kid": kid or key.kid, "typ": "at+jwt"}, claims, key)


def refusal_tokens(issuer: TestIssuer, audience: str, scope: str) -> dict[str, str | None]:
    """The four tokens every resource server must refuse, by name: none, one for another
    audience, an expired one, and one signed by a key that is not in the JWKS."""
    return {
        "no-token": None,
        "wrong-aud": issuer.token(aud="urn:bsopt:somewhere-else", scope=scope),
        "expired": issuer.expired_token(aud=audience, scope=scope),
        "unknown-key": issuer.token(aud=audience, scope=scope, rogue=True),
    }
