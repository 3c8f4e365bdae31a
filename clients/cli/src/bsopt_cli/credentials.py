"""Where ``bsopt login`` keeps its tokens, and the one way commands get a valid access token.

Storage (:func:`default_store`): the OS keyring through the ``keyring`` package when it
is importable and has a real backend (not its ``fail`` / ``null`` backends); otherwise a
JSON file ``credentials.json`` in the user's config directory (``platformdirs``'
``user_config_dir("bsopt")`` when installed, else ``~/.config/bsopt``; the environment
variable ``BSOPT_CONFIG_DIR`` overrides it). The directory is made ``0700`` and the file
is created ``0600`` with ``os.open(O_CREAT, 0o600)`` (never readable by others, not even
for a moment), written to a temporary file and renamed over the old one.
``BSOPT_CREDENTIALS_STORE=file|keyring`` forces one.

Refresh (:func:`valid_access_token`): the stored access token when it is valid for more
than 60 s more; else one ``refresh_token`` grant (RFC 6749 §6) at the issuer's token
endpoint (RFC 8414 metadata), storing the rotated refresh token (RFC 9700 §4.14.2: the
old one is dead after one use). Processes serialise refreshes with an exclusive lock on
``credentials.lock`` and re-read the store under it, so two concurrent commands never
present the same refresh token twice (the server would take that as theft and revoke
the login).

DPoP (RFC 9449, :mod:`bsopt_cli.dpop`): the tokens are bound to this installation's key
(stored beside them); refreshes carry a proof by it, and :attr:`Credentials.token_type`
says how to present the access token (``DPoP`` or ``Bearer``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from bsopt_cli.dpop import DPoPKey, load_or_create_key, oauth_error, token_post
from bsopt_cli.login import CLIENT_ID, LoginError, TokenSet, discover

#: Refresh when the access token has less than this left, seconds.
REFRESH_LEEWAY_SECONDS = 60
FILE_NAME = "credentials.json"
KEYRING_SERVICE = "bsopt"
KEYRING_USERNAME = "credentials"


class NotLoggedInError(LoginError):
    """No stored credentials, or they can no longer be refreshed: run ``bsopt login``."""


@dataclass(frozen=True)
class Credentials:
    issuer: str
    access_token: str
    #: Seconds since the epoch.
    expires_at: float
    scope: str = ""
    refresh_token: str | None = None
    id_token: str | None = None
    #: RFC 9449 §5: ``DPoP`` when the access token is bound to the installation's key.
    token_type: str = "Bearer"

    @property
    def dpop_bound(self) -> bool:
        return self.token_type.lower() == "dpop"

    @classmethod
    def from_tokens(cls, issuer: str, tokens: TokenSet, now: float | None = None) -> Credentials:
        now = time.time() if now is None else now
        return cls(issuer=issuer.rstrip("/"), access_token=tokens.access_token,
                   expires_at=now + tokens.expires_in, scope=tokens.scope,
                   refresh_token=tokens.refresh_token, id_token=tokens.id_token, token_type=tokens.token_type)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Credentials:
        data = json.loads(text)
        return cls(issuer=data["issuer"], access_token=data["access_token"], expires_at=float(data["expires_at"]),
                   scope=data.get("scope", ""), refresh_token=data.get("refresh_token"),
                   id_token=data.get("id_token"), token_type=data.get("token_type", "Bearer"))


class CredentialStore(Protocol):
    #: Human-readable location (for messages).
    location: str

    def load(self) -> Credentials | None: ...

    def save(self, credentials: Credentials) -> None: ...

    def delete(self) -> bool: ...


def config_dir() -> Path:
    override = os.environ.get("BSOPT_CONFIG_DIR")
    if override:
        return Path(override)
    try:
        import platformdirs
    except ImportError:
        return Path.home() / ".config" / "bsopt"
    return Path(platformdirs.user_config_dir("bsopt", appauthor=False))


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name == "posix":
        os.chmod(path, 0o700)
    return path


def write_private(directory: Path, name: str, text: str) -> Path:
    """Write ``directory/name`` as mode 0600 (created so, never readable by others), through
    a temporary file renamed over the old one; the directory is made 0700."""
    _private_dir(directory)
    path = directory / name
    tmp = directory / f".{name}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        if os.name == "posix":
            os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


class FileStore:
    """``credentials.json``, mode 0600, in a 0700 directory."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or config_dir()
        self.path = self.directory / FILE_NAME
        self.location = str(self.path)

    def load(self) -> Credentials | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return Credentials.from_json(text)
        except (ValueError, KeyError, TypeError):
            return None

    def save(self, credentials: Credentials) -> None:
        write_private(self.directory, FILE_NAME, credentials.to_json())

    def delete(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


class KeyringStore:
    """The OS keyring (``keyring`` package), one entry ``bsopt`` / ``credentials``."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.location = f"OS keyring ({type(backend).__name__})"

    def load(self) -> Credentials | None:
        text = self.backend.get_password(KEYRING_SERVICE, KEYRING_USERNAME)
        if not text:
            return None
        try:
            return Credentials.from_json(text)
        except (ValueError, KeyError, TypeError):
            return None

    def save(self, credentials: Credentials) -> None:
        self.backend.set_password(KEYRING_SERVICE, KEYRING_USERNAME, credentials.to_json())

    def delete(self) -> bool:
        try:
            self.backend.delete_password(KEYRING_SERVICE, KEYRING_USERNAME)
        except Exception:  # keyring.errors.PasswordDeleteError: nothing stored
            return False
        return True


def usable_keyring() -> Any | None:
    """The keyring backend when ``keyring`` is importable and its backend is a real one."""
    try:
        import keyring
    except ImportError:
        return None
    try:
        backend = keyring.get_keyring()
    except Exception:
        return None
    module = type(backend).__module__
    if module.startswith(("keyring.backends.fail", "keyring.backends.null")):
        return None
    if getattr(backend, "priority", 1) <= 0:  # e.g. a chainer with no real backend
        return None
    return backend


def default_store() -> CredentialStore:
    choice = os.environ.get("BSOPT_CREDENTIALS_STORE", "").strip().lower()
    if choice != "file":
        backend = usable_keyring()
        if backend is not None:
            return KeyringStore(backend)
        if choice == "keyring":
            raise LoginError("BSOPT_CREDENTIALS_STORE=keyring but no usable keyring backend is available")
    return FileStore()


@contextlib.contextmanager
def _refresh_lock() -> Iterator[None]:
    """Exclusive lock between bsopt processes (POSIX ``flock``; no lock elsewhere)."""
    if sys.platform == "win32":
        yield
        return
    import fcntl

    directory = _private_dir(config_dir())
    fd = os.open(directory / "credentials.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def refresh(credentials: Credentials, http: httpx.Client, key: DPoPKey | None = None) -> Credentials:
    """One ``refresh_token`` grant (with a DPoP proof by ``key``: a DPoP-bound login needs
    the key it was bound to); the new credentials (rotated refresh token)."""
    if not credentials.refresh_token:
        raise NotLoggedInError("the session expired and has no refresh token; run `bsopt login`")
    meta = discover(credentials.issuer, http)
    resp = token_post(http, meta["token_endpoint"], {
        "grant_type": "refresh_token", "refresh_token": credentials.refresh_token, "client_id": CLIENT_ID,
    }, key)
    if resp.status_code == 400 and oauth_error(resp) == "invalid_dpop_proof" and credentials.dpop_bound:
        raise NotLoggedInError("the login is bound to another DPoP key; run `bsopt login` again")
    if resp.status_code == 400 and oauth_error(resp) == "invalid_grant":
        raise NotLoggedInError("the login expired or was revoked; run `bsopt login` again")
    if resp.status_code != 200:
        raise LoginError(f"token refresh failed: HTTP {resp.status_code} {resp.text[:200]}")
    body = resp.json()
    return Credentials(
        issuer=credentials.issuer, access_token=body["access_token"],
        expires_at=time.time() + int(body.get("expires_in", 0)), scope=body.get("scope", credentials.scope),
        refresh_token=body.get("refresh_token", credentials.refresh_token),
        id_token=body.get("id_token", credentials.id_token), token_type=body.get("token_type", "Bearer"),
    )


def valid_access_token(store: CredentialStore | None = None, *, http: httpx.Client | None = None,
                       leeway_seconds: float = REFRESH_LEEWAY_SECONDS) -> str:
    """A stored access token valid for more than ``leeway_seconds``, refreshing (and
    storing the rotation) when needed. Raises :class:`NotLoggedInError` / LoginError."""
    return valid_credentials(store, http=http, leeway_seconds=leeway_seconds).access_token


def valid_credentials(store: CredentialStore | None = None, *, http: httpx.Client | None = None,
                      leeway_seconds: float = REFRESH_LEEWAY_SECONDS) -> Credentials:
    """:func:`valid_access_token`, with its type (``Credentials.token_type``: a DPoP-bound
    token goes with :class:`bsopt_cli.dpop.DPoPAuth` and the installation's key)."""
    store = store or default_store()
    creds = store.load()
    if creds is None:
        raise NotLoggedInError("not logged in; run `bsopt login`")
    if creds.expires_at - time.time() > leeway_seconds:
        return creds
    with _refresh_lock():
        creds = store.load()  # another process may have refreshed meanwhile
        if creds is None:
            raise NotLoggedInError("not logged in; run `bsopt login`")
        if creds.expires_at - time.time() > leeway_seconds:
            return creds
        with contextlib.ExitStack() as stack:
            client = http or stack.enter_context(httpx.Client(timeout=10.0))
            try:
                fresh = refresh(creds, client, load_or_create_key(store))
            except NotLoggedInError:
                store.delete()
                raise
        store.save(fresh)
        return fresh


@dataclass(frozen=True)
class LogoutResult:
    had_credentials: bool
    #: True: revoked at the server; False: tried and failed; None: nothing to revoke or no endpoint.
    revoked: bool | None
    detail: str = ""


def logout(store: CredentialStore | None = None, *, http: httpx.Client | None = None) -> LogoutResult:
    """Revoke the refresh token (RFC 7009, at the metadata's ``revocation_endpoint`` if
    advertised; revoking it ends the whole login) and delete the stored credentials,
    whatever the server said."""
    store = store or default_store()
    creds = store.load()
    if creds is None:
        store.delete()
        return LogoutResult(False, None, "not logged in")
    revoked: bool | None = None
    detail = ""
    token, hint = (creds.refresh_token, "refresh_token") if creds.refresh_token else (creds.access_token,
                                                                                      "access_token")
    with contextlib.ExitStack() as stack:
        client = http or stack.enter_context(httpx.Client(timeout=10.0))
        try:
            meta = discover(creds.issuer, client)
            endpoint = meta.get("revocation_endpoint")
            if endpoint:
                resp = client.post(endpoint, data={"token": token, "token_type_hint": hint, "client_id": CLIENT_ID})
                revoked = resp.status_code == 200
                detail = "" if revoked else f"revocation answered HTTP {resp.status_code}"
            else:
                detail = "the server advertises no revocation_endpoint"
        except (httpx.HTTPError, LoginError) as exc:
            revoked, detail = False, f"could not reach {creds.issuer}: {exc}"
    store.delete()
    return LogoutResult(True, revoked, detail)


__all__ = ["CredentialStore", "Credentials", "FileStore", "KeyringStore", "LogoutResult", "NotLoggedInError",
           "config_dir", "default_store", "logout", "refresh", "usable_keyring", "valid_access_token",
           "valid_credentials", "write_private"]
