"""DPoP proofs (RFC 9449): sender-constrained access and refresh tokens.

One verification of a ``DPoP`` proof JWT, shared by the authorization server's token
endpoint (``bsopt_auth.rfc9449``) and the resource servers (:mod:`.fastapi`).
:func:`verify_proof` checks, in order (§4.3):

1. one well-formed compact JWS; header ``typ`` ``dpop+jwt``, ``alg`` in
   :data:`DPOP_SIGNING_ALGS` (asymmetric only, never ``none`` or HMAC), ``jwk`` a public
   key (a private or symmetric member refuses the proof), the signature against it;
2. claims ``jti`` (string, at most 256 chars), ``htm`` (the request method), ``htu`` (the
   request URL, compared without query and fragment, scheme and host lower-cased,
   default ports dropped; ``ws``/``wss`` count as ``http``/``https``: a WebSocket
   handshake is an HTTP GET), ``iat`` within ``max_age_seconds`` in the past (plus
   ``leeway_seconds`` either way);
3. ``ath`` (base64url SHA-256 of the access token) when an access token comes with it,
   and no ``ath`` otherwise;
4. ``nonce`` when a :class:`NonceIssuer` is given (§8, §9): missing or stale raises
   :class:`UseDPoPNonceError`, carrying a fresh nonce for the ``DPoP-Nonce`` header;
5. ``jti`` unseen (``jti_store``): remembered, as SHA-256 of thumbprint and jti, until the
   proof's ``iat`` can no longer be accepted.

It returns :class:`DPoPProof` with the RFC 7638 thumbprint (``jkt``) the token's
``cnf.jkt`` must equal. Failures raise :class:`InvalidDPoPProofError` (its message is safe
to show; it never contains the proof).

Nonces (:class:`NonceIssuer`) are stateless: base64url of HMAC-SHA256(secret, time slot),
accepted for the current and the previous slot, so every replica sharing the secret
accepts them and nothing is stored. Seen ``jti`` s: :class:`MemoryJtiStore` is a bounded
per-process cache (enough for one replica; a proof replayed to another replica within
``max_age_seconds`` would pass); :class:`~bsopt_common.security.dpop_store.DatabaseJtiStore`
keeps them in Postgres, shared by every replica (resource-api uses it while serving);
the authorization server stores its own in Postgres too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey

DPOP_TYP = "dpop+jwt"
#: Asymmetric algorithms a proof may be signed with (advertised as
#: ``dpop_signing_alg_values_supported``, RFC 9449 §5.1; and in ``algs`` of challenges).
DPOP_SIGNING_ALGS: tuple[str, ...] = ("ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "EdDSA")
#: Members that make a JWK private or symmetric.
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MAX_PROOF_LENGTH = 8192
MAX_JTI_LENGTH = 256
DEFAULT_MAX_AGE_SECONDS = 60
DEFAULT_LEEWAY_SECONDS = 5
_KEY_TYPES = {"EC": ECKey, "RSA": RSAKey, "OKP": OKPKey}


def _registry(alg: str) -> jws.JWSRegistry:
    """A registry for one algorithm whose header limit fits an RSA ``jwk`` (4096-bit)."""
    registry = jws.JWSRegistry(algorithms=[alg])
    registry.max_header_length = 2048
    return registry


class InvalidDPoPProofError(Exception):
    """RFC 9449 ``invalid_dpop_proof``: the DPoP proof is missing, malformed or invalid."""

    error_code = "invalid_dpop_proof"


class UseDPoPNonceError(Exception):
    """RFC 9449 §8/§9 ``use_dpop_nonce``: resend the proof with ``nonce`` = :attr:`nonce`."""

    error_code = "use_dpop_nonce"

    def __init__(self, nonce: str, message: str = "a DPoP nonce is required (DPoP-Nonce header)") -> None:
        super().__init__(message)
        self.nonce = nonce


@dataclass(frozen=True)
class DPoPProof:
    #: RFC 7638 SHA-256 thumbprint of the proof's public key (``cnf.jkt``).
    jkt: str
    jti: str
    iat: int
    jwk: dict[str, Any]
    claims: dict[str, Any]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token_hash(access_token: str) -> str:
    """``ath`` (§4.2): base64url SHA-256 of the ASCII access token."""
    return b64url(hashlib.sha256(access_token.encode("ascii")).digest())


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of a public JWK."""
    key_type = _KEY_TYPES.get(str(jwk.get("kty")))
    if key_type is None:
        raise InvalidDPoPProofError("unsupported jwk kty")
    return str(key_type.import_key(jwk).thumbprint())  # type: ignore[attr-defined]


def normalize_htu(url: str) -> str:
    """``scheme://host[:port]/path``: no query or fragment, lower-case scheme and host,
    no default port, ``ws``/``wss`` as ``http``/``https`` (§4.3 item 9, RFC 3986 §6.2)."""
    parts = urlsplit(url.strip())
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme.lower(), parts.scheme.lower())
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path or '/'}"


class JtiStore(Protocol):
    #: True when :meth:`use` does I/O (run it off the event loop).
    blocking: bool

    def use(self, key: str, remember_until: float) -> bool:
        """Record ``key`` until ``remember_until`` (epoch seconds); False when already there."""
        ...


class MemoryJtiStore:
    """Seen proof ``jti`` s of one process: a bounded, thread-safe, time-ordered cache.
    When full the oldest entries go first (a proof older than ``max_age_seconds`` is
    refused by its ``iat`` anyway, so size it for the proofs of one max-age window)."""

    blocking = False

    def __init__(self, max_entries: int = 100_000) -> None:
        self._max = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def use(self, key: str, remember_until: float) -> bool:
        now = time.time()
        with self._lock:
            while self._seen:
                oldest_key, until = next(iter(self._seen.items()))
                if until >= now and len(self._seen) < self._max:
                    break
                del self._seen[oldest_key]
            seen_until = self._seen.get(key)
            if seen_until is not None and seen_until >= now:
                return False
            self._seen[key] = remember_until
            return True

    def __len__(self) -> int:
        return len(self._seen)


class NonceIssuer:
    """Stateless server nonces (§8, §9): ``b64url(HMAC-SHA256(secret, slot))[:32]`` of the
    current ``lifetime_seconds`` time slot; the current and the previous slot's nonce are
    accepted (so a nonce lives between one and two slots)."""

    def __init__(self, secret: bytes | None = None, lifetime_seconds: int = 300) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.lifetime_seconds = lifetime_seconds

    def _for_slot(self, slot: int) -> str:
        return b64url(hmac.new(self._secret, f"dpop-nonce {slot}".encode(), hashlib.sha256).digest())[:32]

    def current(self, now: float | None = None) -> str:
        return self._for_slot(int((time.time() if now is None else now) // self.lifetime_seconds))

    def valid(self, nonce: str, now: float | None = None) -> bool:
        slot = int((time.time() if now is None else now) // self.lifetime_seconds)
        return any(hmac.compare_digest(nonce, self._for_slot(s)) for s in (slot, slot - 1))


def _header(proof: str) -> dict[str, Any]:
    try:
        seg = proof.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidDPoPProofError("malformed DPoP proof header") from exc
    if not isinstance(header, dict):
        raise InvalidDPoPProofError("malformed DPoP proof header")
    return header


def single_proof(values: Sequence[str]) -> str | None:
    """The one ``DPoP`` header value (§4.3 item 1: not more than one); None when absent."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    if len(values) > 1 or "," in values[0]:
        raise InvalidDPoPProofError("more than one DPoP header")
    return values[0].strip()


def verify_proof(
    proof: str,
    *,
    htm: str,
    htu: str,
    access_token: str | None = None,
    nonces: NonceIssuer | None = None,
    jti_store: JtiStore | None = None,
    algorithms: Sequence[str] = DPOP_SIGNING_ALGS,
    max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS,
    leeway_seconds: int = DEFAULT_LEEWAY_SECONDS,
    now: float | None = None,
) -> DPoPProof:
    """Check a DPoP proof (module docstring); raise InvalidDPoPProofError / UseDPoPNonceError."""
    if not proof or len(proof) > MAX_PROOF_LENGTH or proof.count(".") != 2:
        raise InvalidDPoPProofError("malformed DPoP proof")
    header = _header(proof)
    if str(header.get("typ", "")).lower() != DPOP_TYP:
        raise InvalidDPoPProofError("DPoP proof typ is not dpop+jwt")
    alg = header.get("alg")
    if alg not in algorithms:
        raise InvalidDPoPProofError("unsupported DPoP proof algorithm")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise InvalidDPoPProofError("DPoP proof header has no jwk")
    if PRIVATE_JWK_MEMBERS & jwk.keys():
        raise InvalidDPoPProofError("DPoP proof jwk must be a public key")
    key_type = _KEY_TYPES.get(str(jwk.get("kty")))
    if key_type is None:
        raise InvalidDPoPProofError("unsupported DPoP proof jwk kty")
    try:
        key = key_type.import_key(jwk)  # type: ignore[attr-defined]
        decoded = jws.deserialize_compact(proof, key, registry=_registry(str(alg)))
        claims = json.loads(decoded.payload)
        jkt = str(key.thumbprint())
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InvalidDPoPProofError("bad DPoP proof signature or key") from exc
    if not isinstance(claims, dict):
        raise InvalidDPoPProofError("DPoP proof payload is not a JSON object")

    jti, iat = claims.get("jti"), claims.get("iat")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise InvalidDPoPProofError("DPoP proof jti is missing or too long")
    if claims.get("htm") != htm.upper():
        raise InvalidDPoPProofError("DPoP proof htm does not match the request method")
    claimed_htu = claims.get("htu")
    if not isinstance(claimed_htu, str) or normalize_htu(claimed_htu) != normalize_htu(htu):
        raise InvalidDPoPProofError("DPoP proof htu does not match the request URL")
    current = time.time() if now is None else now
    if not isinstance(iat, int | float) or isinstance(iat, bool):
        raise InvalidDPoPProofError("DPoP proof iat is missing")
    if iat > current + leeway_seconds or iat < current - max_age_seconds - leeway_seconds:
        raise InvalidDPoPProofError("DPoP proof iat is outside the acceptable window")
    if access_token is not None:
        ath = claims.get("ath")
        if not isinstance(ath, str) or not hmac.compare_digest(ath, access_token_hash(access_token)):
            raise InvalidDPoPProofError("DPoP proof ath does not match the access token")
    if nonces is not None:
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not nonces.valid(nonce, current):
            raise UseDPoPNonceError(nonces.current(current))
    if jti_store is not None:
        replay_key = hashlib.sha256(f"{jkt}\n{jti}".encode()).hexdigest()
        if not jti_store.use(replay_key, float(iat) + max_age_seconds + 2 * leeway_seconds):
            raise InvalidDPoPProofError("DPoP proof was already used (jti)")
    return DPoPProof(jkt=jkt, jti=jti, iat=int(iat), jwk=dict(jwk), claims=claims)


def dpop_challenge(algorithms: Sequence[str] = DPOP_SIGNING_ALGS, error: str | None = None,
                   description: str | None = None) -> str:
    """An RFC 9449 §7.1 ``WWW-Authenticate: DPoP`` challenge."""
    parts = []
    if error:
        parts.append(f'error="{error}"')
        if description:
            parts.append('error_description="{}"'.format(description.replace('"', "'")))
    parts.append(f'algs="{" ".join(algorithms)}"')
    return "DPoP " + ", ".join(parts)


__all__ = [
    "DPOP_SIGNING_ALGS",
    "DPOP_TYP",
    "DPoPProof",
    "InvalidDPoPProofError",
    "JtiStore",
    "MemoryJtiStore",
    "NonceIssuer",
    "ResourceServerDPoP",
    "UseDPoPNonceError",
    "access_token_hash",
    "dpop_challenge",
    "jwk_thumbprint",
    "normalize_htu",
    "single_proof",
    "verify_proof",
]


class ResourceServerDPoP:
    """A resource server's DPoP policy (used by :mod:`.fastapi`): where its public URL is
    (``htu`` behind a proxy: ``public_base_url`` + the request path; default: the URL the
    request arrived at), whether it requires a server nonce, and its replay store (a
    :class:`MemoryJtiStore` by default: one replica)."""

    def __init__(self, *, public_base_url: str | None = None, nonces: NonceIssuer | None = None,
                 jti_store: JtiStore | None = None, algorithms: Sequence[str] = DPOP_SIGNING_ALGS,
                 max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS,
                 leeway_seconds: int = DEFAULT_LEEWAY_SECONDS) -> None:
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.nonces = nonces
        self.jti_store: JtiStore = jti_store if jti_store is not None else MemoryJtiStore()
        self.algorithms = tuple(algorithms)
        self.max_age_seconds = max_age_seconds
        self.leeway_seconds = leeway_seconds

    def htu(self, request_url: str, path: str) -> str:
        return self.public_base_url + path if self.public_base_url else request_url

    def check(self, proof: str, *, htm: str, htu: str, access_token: str) -> DPoPProof:
        return verify_proof(proof, htm=htm, htu=htu, access_token=access_token, nonces=self.nonces,
                            jti_store=self.jti_store, algorithms=self.algorithms,
                            max_age_seconds=self.max_age_seconds, leeway_seconds=self.leeway_seconds)
