"""A test issuer: signing keys, a JWKS served over real HTTP on 127.0.0.1, and a minter
of RFC 9068 access tokens with any claims, including wrong ones (bad ``aud``, expired,
signed by a key that is not in the JWKS) for the refusal tests every service has.

It also plays the authorization server's part for services' own keys: each client's
public keys (event signatures, ``private_key_jwt``) are served at
``/oauth2/clients/<client_id>/jwks.json`` (:meth:`TestIssuer.register_client_key`,
:meth:`TestIssuer.service_key`), and its token endpoint accepts client secrets (any),
RFC 7523 client assertions (verified against the client's registered keys), and the
RFC 8693 token-exchange grant."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
import warnings
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, Key, KeySet

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_EXCHANGE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
_CLIENT_JWKS_PREFIX = "/oauth2/clients/"
_CLIENT_JWKS_SUFFIX = "/jwks.json"
_ASSERTION_ALGORITHMS = ["ES256", "RS256", "PS256", "EdDSA"]


class _OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str = ""):
        super().__init__(error)
        self.status, self.error, self.description = status, error, description


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
        #: Token-exchange (RFC 8693) requests received, granted or refused.
        self.exchange_requests = 0
        #: Client JWKS requests, by client id (registered or not).
        self.client_jwks_requests: dict[str, int] = {}
        #: Client assertions (private_key_jwt) accepted, and refused.
        self.assertions_accepted = 0
        self.assertions_refused = 0
        self._client_keys: dict[str, list[dict[str, Any]]] = {}
        self._service_keys: dict[str, Key] = {}
        self._seen_jtis: set[str] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # --- JWKS over HTTP -----------------------------------------------------------
    def start(self) -> str:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _send_json(self, status: int, body: object, *, cache: bool = False) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if cache and owner.jwks_max_age is not None:
                    self.send_header("cache-control", f"public, max-age={owner.jwks_max_age}")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path.startswith(_CLIENT_JWKS_PREFIX) and path.endswith(_CLIENT_JWKS_SUFFIX):
                    client_id = unquote(path[len(_CLIENT_JWKS_PREFIX):-len(_CLIENT_JWKS_SUFFIX)])
                    with owner._lock:
                        owner.client_jwks_requests[client_id] = owner.client_jwks_requests.get(client_id, 0) + 1
                    jwks = owner.client_jwks(client_id)
                    if jwks is None:
                        self._send_json(404, {"error": "not_found"})
                    else:
                        self._send_json(200, jwks, cache=True)
                    return
                owner.jwks_requests += 1
                self._send_json(200, KeySet(owner.published).as_dict(private=False), cache=True)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                try:
                    status, body = 200, owner._token_endpoint(form, self.headers.get("authorization", ""))
                except _OAuthError as exc:
                    status, body = exc.status, {"error": exc.error}
                    if exc.description:
                        body["error_description"] = exc.description
                self._send_json(status, body)

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
        """Token endpoint. Client authentication: HTTP Basic with any secret (or a bare
        ``client_id``), or an RFC 7523 ``client_assertion`` verified against the client's
        registered keys. Grants: ``client_credentials`` (a token for the requested
        ``resource`` and ``scope``, ``sub`` = ``client_id`` = the client) and RFC 8693
        token exchange (:meth:`exchange`). Tokens are issued as ``iss`` = :attr:`issuer`."""
        return self.base_url + "/oauth2/token"

    @property
    def client_jwks_url_template(self) -> str:
        """``<base_url>/oauth2/clients/{client_id}/jwks.json``: where each client's public
        keys are served (the auth-server's path), for
        :class:`~bsopt_common.security.event_signing.EventSignatureVerifier`."""
        return self.base_url + _CLIENT_JWKS_PREFIX + "{client_id}" + _CLIENT_JWKS_SUFFIX

    def client_jwks_url(self, client_id: str) -> str:
        return self.client_jwks_url_template.replace("{client_id}", quote(client_id, safe=""))

    # --- clients' own keys ---------------------------------------------------------
    def register_client_key(self, client_id: str, keys: Key | Mapping[str, Any]) -> None:
        """Publish public key(s) for ``client_id``: a joserfc key (its public part is
        taken), a JWK dict, or a JWK Set dict (``{"keys": [...]}``). Added to the keys
        already registered (a rotation); a key with the same ``kid`` is replaced."""
        if isinstance(keys, Mapping):
            raw = list(keys["keys"]) if "keys" in keys else [dict(keys)]
            parsed = KeySet.import_key_set({"keys": raw})
            new = [k.as_dict(private=False) for k in parsed]
        else:
            keys.ensure_kid()
            new = [keys.as_dict(private=False)]
        for jwk in new:
            if not jwk.get("kid"):
                raise ValueError("a client key needs a kid")
        with self._lock:
            kids = {str(j["kid"]) for j in new}
            kept = [j for j in self._client_keys.get(client_id, []) if j.get("kid") not in kids]
            self._client_keys[client_id] = [*new, *kept]

    def unregister_client_key(self, client_id: str, kid: str | None = None) -> None:
        """Stop publishing ``kid`` (every key of the client when None): revocation."""
        with self._lock:
            if kid is None:
                self._client_keys.pop(client_id, None)
                self._service_keys.pop(client_id, None)
                return
            self._client_keys[client_id] = [j for j in self._client_keys.get(client_id, []) if j.get("kid") != kid]
            cached = self._service_keys.get(client_id)
            if cached is not None and cached.kid == kid:
                del self._service_keys[client_id]

    def client_jwks(self, client_id: str) -> dict[str, Any] | None:
        """The public JWK Set served for ``client_id``; None (HTTP 404) when unknown."""
        with self._lock:
            keys = self._client_keys.get(client_id)
            return None if keys is None else {"keys": [dict(k) for k in keys]}

    def service_key(self, client_id: str) -> Key:
        """The private signing key of ``client_id`` (EC P-256, ES256), generated on first
        use and cached per client id, its public part registered: what a service under
        test signs its events and client assertions with."""
        with self._lock:
            key = self._service_keys.get(client_id)
        if key is None:
            key = ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"})
            key.ensure_kid()
            with self._lock:
                key = self._service_keys.setdefault(client_id, key)
            self.register_client_key(client_id, key)
        return key

    # --- the token endpoint ----------------------------------------------------------
    def _token_endpoint(self, form: dict[str, str], authorization: str) -> dict[str, Any]:
        client_id = self._authenticate(form, authorization)
        grant = form.get("grant_type")
        if grant == "client_credentials":
            with self._lock:
                self.token_requests += 1
            token = self.token(aud=form.get("resource", ""), scope=form.get("scope", ""),
                               sub=client_id, client_id=client_id)
            return {"access_token": token, "token_type": "Bearer", "expires_in": 300}
        if grant == TOKEN_EXCHANGE_GRANT_TYPE:
            with self._lock:
                self.exchange_requests += 1
            return self.exchange(client_id, form)
        raise _OAuthError(400, "unsupported_grant_type")

    def _authenticate(self, form: dict[str, str], authorization: str) -> str:
        """The authenticated client id (Basic with any secret, a bare ``client_id``, or a
        verified client assertion); _OAuthError otherwise."""
        assertion = form.get("client_assertion")
        basic = authorization.lower().startswith("basic ")
        if assertion is not None:
            if basic:
                raise _OAuthError(400, "invalid_request", "more than one client authentication method")
            try:
                asserted = self._verify_assertion(form)
            except _OAuthError:
                with self._lock:
                    self.assertions_refused += 1
                raise
            with self._lock:
                self.assertions_accepted += 1
            return asserted
        basic_id: str | None = None
        if basic:
            try:
                basic_id = base64.b64decode(authorization[6:]).decode().split(":", 1)[0]
            except ValueError:
                raise _OAuthError(401, "invalid_client") from None
        client_id = basic_id or form.get("client_id")
        if not client_id:
            raise _OAuthError(400, "invalid_request", "no client authentication")
        return client_id

    def _verify_assertion(self, form: dict[str, str]) -> str:
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            raise _OAuthError(400, "invalid_request", "unsupported client_assertion_type")
        assertion = form["client_assertion"]
        try:
            seg = assertion.split(".")[1]
            unverified = json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))
            issuer = unverified["iss"]
        except (IndexError, ValueError, KeyError, TypeError):
            raise _OAuthError(401, "invalid_client", "malformed client assertion") from None
        if not isinstance(issuer, str):
            raise _OAuthError(401, "invalid_client", "malformed client assertion")
        jwks = self.client_jwks(issuer)
        if not jwks or not jwks["keys"]:
            raise _OAuthError(401, "invalid_client", "no keys registered for the client")
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=SecurityWarning)
                keys = KeySet.import_key_set({"keys": jwks["keys"]})
                claims = jwt.decode(assertion, keys, algorithms=_ASSERTION_ALGORITHMS).claims
        except (JoseError, ValueError):
            raise _OAuthError(401, "invalid_client", "bad client assertion signature") from None
        now = int(time.time())
        if claims.get("sub") != issuer or form.get("client_id", issuer) != issuer:
            raise _OAuthError(401, "invalid_client", "assertion iss, sub and client_id differ")
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if not {self.token_url, self.issuer} & {a for a in auds if isinstance(a, str)}:
            raise _OAuthError(401, "invalid_client", "assertion audience is not this server")
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int) or exp <= now - 5 or not isinstance(iat, int) or iat > now + 30:
            raise _OAuthError(401, "invalid_client", "assertion expired or not yet valid")
        jti = claims.get("jti")
        with self._lock:
            if not isinstance(jti, str) or not jti or jti in self._seen_jtis:
                raise _OAuthError(401, "invalid_client", "assertion jti missing or replayed")
            self._seen_jtis.add(jti)
        return issuer

    def exchange(self, client_id: str, form: Mapping[str, str]) -> dict[str, Any]:
        """RFC 8693 token exchange for the authenticated ``client_id``: ``subject_token``
        (an access token signed by a key this issuer publishes now, unexpired) of type
        ``urn:ietf:params:oauth:token-type:access_token``, for ``resource`` (or
        ``audience``). The new token: ``sub`` the subject's, ``client_id`` the client,
        ``act`` ``{"sub": client, "act": <the subject token's act>}``, ``aud`` the
        resource, ``scope`` the requested one (or the subject token's), expiring no later
        than the subject token."""
        subject_token = form.get("subject_token")
        if not subject_token or form.get("subject_token_type") != ACCESS_TOKEN_TYPE:
            raise _OAuthError(400, "invalid_request", "subject_token of type access_token required")
        if form.get("actor_token"):
            raise _OAuthError(400, "invalid_request", "actor_token is not supported")
        resource = form.get("resource") or form.get("audience")
        if not resource:
            raise _OAuthError(400, "invalid_target", "resource required")
        try:
            decoded = jwt.decode(subject_token, KeySet(list(self.published)), algorithms=["ES256"])
        except (JoseError, ValueError):
            raise _OAuthError(400, "invalid_grant", "subject_token is not a valid token of this issuer") from None
        subject = decoded.claims
        now = int(time.time())
        exp = subject.get("exp")
        if (decoded.header.get("typ") not in ("at+jwt", "application/at+jwt") or subject.get("iss") != self.issuer
                or not isinstance(exp, int) or exp <= now or not subject.get("sub")):
            raise _OAuthError(400, "invalid_grant", "subject_token is expired or not an access token of this issuer")
        act: dict[str, Any] = {"sub": client_id}
        if subject.get("act") is not None:
            act["act"] = subject["act"]
        scope = form.get("scope") or str(subject.get("scope", ""))
        ttl = min(300, exp - now)
        token = self.token(aud=resource, scope=scope, sub=str(subject["sub"]), client_id=client_id,
                           ttl_seconds=ttl, issued_at=now, act=act)
        return {"access_token": token, "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "Bearer",
                "expires_in": ttl, "scope": scope}

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
