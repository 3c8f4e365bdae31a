"""DPoP (RFC 9449) for the CLI: its tokens are bound to a key only this installation has.

Key: one EC P-256 key pair per installation (:func:`load_or_create_key`), stored like the
tokens (:mod:`bsopt_cli.credentials`): in the OS keyring (entry ``bsopt`` / ``dpop-key``)
when the credentials are there, else ``dpop-key.json`` (mode 0600, in the same 0700
directory). The access and refresh tokens the auth-server issues for it carry its
thumbprint (``cnf.jkt``), so a stolen token is useless without the private key.

Proofs (§4.2): a fresh ES256 JWT per request (``typ`` dpop+jwt, the public ``jwk``,
``jti``, ``htm``, ``htu`` without query or fragment, ``iat``; ``ath`` with an access
token; ``nonce`` once a server asked for one). :func:`token_post` sends token requests
with a proof and retries once on ``use_dpop_nonce`` (§8); :class:`DPoPAuth` (an
``httpx.Auth``, sync and async) sends ``Authorization: DPoP <token>`` + ``DPoP`` to
resource-api and retries once on its ``use_dpop_nonce`` challenge (§9). The last nonce of
each server (origin) is remembered for the next proof.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Generator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from joserfc import jws
from joserfc.jwk import ECKey

ALG = "ES256"
KEY_FILE_NAME = "dpop-key.json"
KEYRING_KEY_USERNAME = "dpop-key"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def _htu(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path or '/'}"


class DPoPKey:
    """An EC P-256 key pair that signs DPoP proofs."""

    def __init__(self, key: ECKey) -> None:
        if key.as_dict(private=True).get("d") is None:
            raise ValueError("a DPoP key needs its private part")
        self._key = key
        self.public_jwk: dict[str, Any] = {k: v for k, v in key.as_dict(private=False).items()
                                           if k in ("kty", "crv", "x", "y")}
        #: RFC 7638 thumbprint: what the server puts in ``cnf.jkt``.
        self.jkt = str(key.thumbprint())
        #: Latest ``DPoP-Nonce`` per server origin.
        self.nonces: dict[str, str] = {}

    @classmethod
    def generate(cls) -> DPoPKey:
        return cls(ECKey.generate_key("P-256", private=True))

    @classmethod
    def from_json(cls, text: str) -> DPoPKey:
        return cls(ECKey.import_key(json.loads(text)))

    def to_json(self) -> str:
        return json.dumps(self._key.as_dict(private=True))

    def proof(self, htm: str, url: str, *, access_token: str | None = None, nonce: str | None = None) -> str:
        """A DPoP proof JWT for ``htm`` ``url``; ``nonce`` defaults to the one remembered
        for the URL's origin."""
        claims: dict[str, Any] = {"jti": secrets.token_urlsafe(16), "htm": htm.upper(), "htu": _htu(url),
                                  "iat": int(time.time())}
        nonce = nonce if nonce is not None else self.nonces.get(_origin(url))
        if nonce:
            claims["nonce"] = nonce
        if access_token is not None:
            digest = hashlib.sha256(access_token.encode("ascii")).digest()
            claims["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        header = {"typ": "dpop+jwt", "alg": ALG, "jwk": self.public_jwk}
        payload = json.dumps(claims, separators=(",", ":")).encode()
        return jws.serialize_compact(header, payload, self._key, algorithms=[ALG])

    def remember_nonce(self, url: str, headers: Mapping[str, str]) -> str | None:
        nonce = headers.get("dpop-nonce")
        if nonce:
            self.nonces[_origin(url)] = nonce
        return nonce


def oauth_error(resp: httpx.Response) -> str | None:
    """The RFC 6749 §5.2 ``error`` code of a response, if its body has one."""
    try:
        body = resp.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


def token_post(http: httpx.Client, url: str, data: Mapping[str, str], key: DPoPKey | None) -> httpx.Response:
    """POST a token request (with a DPoP proof when ``key`` is given); one retry with the
    server's nonce on ``use_dpop_nonce`` (RFC 9449 §8)."""
    if key is None:
        return http.post(url, data=dict(data))
    resp = http.post(url, data=dict(data), headers={"DPoP": key.proof("POST", url)})
    nonce = key.remember_nonce(url, resp.headers)
    if resp.status_code == 400 and nonce and oauth_error(resp) == "use_dpop_nonce":
        resp = http.post(url, data=dict(data), headers={"DPoP": key.proof("POST", url, nonce=nonce)})
        key.remember_nonce(url, resp.headers)
    return resp


class DPoPAuth(httpx.Auth):
    """``Authorization: DPoP <access token>`` and a fresh ``DPoP`` proof on every request;
    one retry with the resource server's nonce on ``use_dpop_nonce`` (RFC 9449 §9)."""

    def __init__(self, key: DPoPKey, access_token: str) -> None:
        self.key = key
        self.access_token = access_token

    def _sign(self, request: httpx.Request, nonce: str | None = None) -> None:
        url = str(request.url)
        request.headers["Authorization"] = f"DPoP {self.access_token}"
        request.headers["DPoP"] = self.key.proof(request.method, url, access_token=self.access_token, nonce=nonce)

    def headers_for(self, method: str, url: str) -> dict[str, str]:
        """The two headers for a request made by other means (a WebSocket handshake: GET)."""
        return {"Authorization": f"DPoP {self.access_token}",
                "DPoP": self.key.proof(method, url, access_token=self.access_token)}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self._sign(request)
        response = yield request
        nonce = self.key.remember_nonce(str(request.url), response.headers)
        if response.status_code == 401 and nonce and "use_dpop_nonce" in response.headers.get("www-authenticate", ""):
            self._sign(request, nonce)
            yield request


def load_or_create_key(store: Any | None = None) -> DPoPKey:
    """This installation's key (created and stored on first use) beside the credentials
    of ``store`` (a :class:`bsopt_cli.credentials.CredentialStore`; default: the default
    store)."""
    from bsopt_cli.credentials import KEYRING_SERVICE, FileStore, KeyringStore, default_store, write_private

    store = store if store is not None else default_store()
    if isinstance(store, KeyringStore):
        text = store.backend.get_password(KEYRING_SERVICE, KEYRING_KEY_USERNAME)
        if text:
            try:
                return DPoPKey.from_json(text)
            except (ValueError, KeyError, TypeError):
                pass
        key = DPoPKey.generate()
        store.backend.set_password(KEYRING_SERVICE, KEYRING_KEY_USERNAME, key.to_json())
        return key
    directory = store.directory if isinstance(store, FileStore) else None
    if directory is None:
        from bsopt_cli.credentials import config_dir

        directory = config_dir()
    path = directory / KEY_FILE_NAME
    try:
        return DPoPKey.from_json(path.read_text())
    except FileNotFoundError:
        pass
    except (ValueError, KeyError, TypeError):
        pass  # unreadable: replace it (tokens bound to the old key need a new login)
    key = DPoPKey.generate()
    write_private(directory, KEY_FILE_NAME, key.to_json())
    return key


__all__ = ["ALG", "KEY_FILE_NAME", "DPoPAuth", "DPoPKey", "load_or_create_key", "token_post"]
