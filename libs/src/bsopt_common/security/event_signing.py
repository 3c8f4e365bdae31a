"""Event signatures: each producer proves, for every event it publishes, that it holds
its own private key.

Every service (an OAuth client; its client id is the producer id in
:attr:`bsopt_common.topics.Topic.producers`) has an asymmetric key pair: EC P-256
(ES256) by default; RSA (RS256, PS256) and Ed25519 (EdDSA) are accepted too. The public
half is published as the client's JWKS (the authorization server serves it at
``/oauth2/clients/<client_id>/jwks.json``).

:class:`EventSigner` signs one event as a compact JWS (RFC 7515) whose protected header
is ``{"alg", "kid", "typ": "bsopt-event+jwt"}`` and whose claims bind everything a
consumer acts on:

==================  ====================================================================
``iss``             the producer's client id
``ce_id``           CloudEvents ``id``: the idempotency key (a new id needs a new signature)
``ce_type``         CloudEvents ``type`` (the payload's protobuf message name)
``ce_source``       CloudEvents ``source``
``ce_subject``      CloudEvents ``subject``
``ce_time``         CloudEvents ``time``, the exact RFC 3339 string of the header
``topic``           the Kafka topic it was published to
``key``             the Kafka partition key (or null)
``data_sha256``     base64url (no padding) SHA-256 of the exact payload bytes
``iat``             when it was signed (informational)
==================  ====================================================================

There is no ``exp``: the log is replayed later (a consumer group reset, a new
projection), and an authentic old event must verify then. Authenticity rests on the key:
an event verifies as long as its producer still publishes the key that signed it, and
stops verifying once that key is removed from the producer's JWKS (revocation). Copying
a signature onto another payload, topic, key or id fails (the claims no longer match);
re-sending an authentic event unchanged is a duplicate, which consumers skip by ``ce_id``.

:class:`EventSignatureVerifier` checks a signature for one topic (see
:meth:`EventSignatureVerifier.verify`). It keeps one :class:`~bsopt_common.security.jwt.JWKSCache`
per producer, created only for client ids that some topic being verified allows, so a
forged ``iss`` never causes a fetch or a new cache.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, JWKRegistry, Key, KeySet, OKPKey, RSAKey

from bsopt_common.security.jwt import InvalidTokenError, JWKSCache

if TYPE_CHECKING:
    from bsopt_common.topics import Topic

#: JOSE ``typ`` of an event signature.
EVENT_SIGNATURE_TYPE = "bsopt-event+jwt"
#: Kafka header (a CloudEvents extension attribute in the Kafka binding) carrying it.
SIGNATURE_HEADER = "ce_signature"
#: Algorithms an event signature may use.
EVENT_SIGNING_ALGORITHMS = ("ES256", "RS256", "PS256", "EdDSA")
#: Claims that must equal the received CloudEvents headers.
SIGNED_HEADERS = ("ce_id", "ce_type", "ce_source", "ce_subject", "ce_time")
#: Longest signature accepted (a compact JWS of these claims is well under 2 KiB,
#: RSA-4096 included).
MAX_SIGNATURE_LENGTH = 8192
MIN_RSA_BITS = 2048


class SigningKeyError(ValueError):
    """The text is not a usable private signing key (the message never contains it)."""


class EventSignatureError(Exception):
    """An event signature is missing, malformed, or does not prove the event; the message
    is safe to log and to put in a ``dlq_error`` header."""


# --------------------------------------------------------------------------- keys


def signing_algorithm(key: Key) -> str:
    """The JWS algorithm a key signs events with: ES256 (EC P-256), EdDSA (Ed25519),
    or the RSA key's own ``alg`` (RS256 or PS256; RS256 when it names none).

    Raises SigningKeyError for any other key."""
    if isinstance(key, ECKey):
        if key.get("crv") != "P-256":
            raise SigningKeyError("EC signing keys must use curve P-256 (ES256)")
        alg = "ES256"
    elif isinstance(key, OKPKey):
        if key.get("crv") != "Ed25519":
            raise SigningKeyError("OKP signing keys must be Ed25519 (EdDSA)")
        alg = "EdDSA"
    elif isinstance(key, RSAKey):
        if key.raw_value.key_size < MIN_RSA_BITS:
            raise SigningKeyError(f"RSA signing keys must have at least {MIN_RSA_BITS} bits")
        alg = key.alg or "RS256"
        if alg not in ("RS256", "PS256"):
            raise SigningKeyError("RSA signing keys must use RS256 or PS256")
    else:
        raise SigningKeyError("signing keys must be asymmetric (EC P-256, RSA or Ed25519)")
    if key.alg is not None and key.alg != alg:
        raise SigningKeyError(f"the key is for {key.alg}, not {alg}")
    return alg


def _checked_private(key: Key) -> Key:
    signing_algorithm(key)
    if not key.is_private:
        raise SigningKeyError("a public key cannot sign: a private key is needed")
    key.ensure_kid()  # RFC 7638 thumbprint when the key names no kid
    return key


def load_signing_key(text: str) -> Key:
    """A private signing key from ``text``: a private JWK (JSON object) or a PEM private
    key (PKCS#8, or traditional EC/RSA). Its ``kid`` is kept, or set to the key's RFC 7638
    thumbprint when absent.

    Raises SigningKeyError for anything else: a public-only key, a symmetric (``oct``)
    key, an unsupported key type or curve, an encrypted PEM, text that is not a key."""
    text = text.strip()
    if not text:
        raise SigningKeyError("no signing key given")
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise SigningKeyError("the signing key is not valid JSON") from None
        if not isinstance(data, dict) or "kty" not in data:
            raise SigningKeyError("the signing key JSON is not a JWK (a JWK Set is not accepted)")
        if data.get("kty") == "oct":
            raise SigningKeyError("symmetric (oct) keys cannot sign events: an asymmetric private key is needed")
        if data.get("kty") not in ("EC", "RSA", "OKP"):
            raise SigningKeyError("unsupported key type: use EC P-256, RSA or Ed25519")
        try:
            key = JWKRegistry.import_key(data)
        except (JoseError, ValueError, TypeError):
            raise SigningKeyError("the JWK is not a valid key") from None
        return _checked_private(key)
    if "-----BEGIN" in text:
        if "PRIVATE KEY-----" not in text:
            raise SigningKeyError("the PEM is not a private key (a public key or certificate cannot sign)")
        try:
            native = load_pem_private_key(text.encode(), password=None)
        except TypeError:
            raise SigningKeyError("encrypted PEM private keys are not supported") from None
        except (ValueError, UnsupportedAlgorithm):
            raise SigningKeyError("the PEM is not a valid private key") from None
        jwk: Key
        if isinstance(native, ec.EllipticCurvePrivateKey):
            jwk = ECKey.import_key(text)
        elif isinstance(native, rsa.RSAPrivateKey):
            jwk = RSAKey.import_key(text)
        elif isinstance(native, ed25519.Ed25519PrivateKey):
            jwk = OKPKey.import_key(text)
        else:
            raise SigningKeyError("unsupported key type: use EC P-256, RSA or Ed25519")
        return _checked_private(jwk)
    raise SigningKeyError("the signing key is neither a private JWK (JSON) nor a PEM private key")


def generate_signing_key() -> Key:
    """A fresh EC P-256 private key for ES256, ``kid`` = its RFC 7638 thumbprint."""
    key = ECKey.generate_key("P-256", parameters={"alg": "ES256", "use": "sig"})
    key.ensure_kid()
    return key


def private_jwk_json(key: Key) -> str:
    """The private JWK of ``key`` as JSON (with ``kid``, ``alg`` and ``use``): what
    :func:`load_signing_key` reads back. Secret: store it as one."""
    key = _checked_private(key)
    return json.dumps(key.as_dict(private=True, alg=signing_algorithm(key), use="sig"))


def public_jwks(key: Key, *more: Key) -> dict[str, Any]:
    """The public JWK Set of ``key`` (and ``more``, e.g. the next key during a rotation):
    what the authorization server publishes for the client. Never contains private parts."""
    keys = []
    for k in (key, *more):
        k.ensure_kid()
        keys.append(k.as_dict(private=False, alg=signing_algorithm(k), use="sig"))
    return {"keys": keys}


def payload_digest(payload: bytes) -> str:
    """``data_sha256``: base64url, unpadded, of SHA-256 of the exact payload bytes."""
    return base64.urlsafe_b64encode(hashlib.sha256(payload).digest()).rstrip(b"=").decode()


# --------------------------------------------------------------------------- signing


class EventSigner:
    """Signs the events of one producer (``client_id``) with its private ``key``."""

    def __init__(self, client_id: str, key: Key):
        if not client_id:
            raise ValueError("EventSigner needs the producer's client id")
        self.client_id = client_id
        self._key = _checked_private(key)
        self.algorithm = signing_algorithm(self._key)
        kid = self._key.kid
        assert kid is not None  # set by _checked_private
        self.kid: str = kid

    def __repr__(self) -> str:  # never show the key
        return f"EventSigner(client_id={self.client_id!r}, kid={self.kid!r}, alg={self.algorithm!r})"

    def sign(
        self, *, topic: str, key: str | None, event_id: str, event_type: str, source: str, subject: str,
        time: str, payload: bytes,
    ) -> str:
        """The ``ce_signature`` of one event: a compact JWS over its attributes, topic,
        partition key and the SHA-256 of ``payload`` (see the module docstring)."""
        header = {"alg": self.algorithm, "kid": self.kid, "typ": EVENT_SIGNATURE_TYPE}
        claims = {
            "iss": self.client_id,
            "ce_id": event_id,
            "ce_type": event_type,
            "ce_source": source,
            "ce_subject": subject,
            "ce_time": time,
            "topic": topic,
            "key": key,
            "data_sha256": payload_digest(payload),
            "iat": int(_now()),
        }
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=SecurityWarning)
            return jwt.encode(header, claims, self._key, algorithms=[self.algorithm])


def _now() -> float:
    return time.time()


# --------------------------------------------------------------------------- verifying


def _segment(token: str, index: int) -> dict[str, Any]:
    seg = token.split(".")[index]
    try:
        value = json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise EventSignatureError("malformed event signature") from None
    if not isinstance(value, dict):
        raise EventSignatureError("malformed event signature")
    return value


def _shown(value: object) -> str:
    """An attacker-chosen value, shortened for an error message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class EventSignatureVerifier:
    """Verify event signatures against each producer's published JWKS.

    ``client_jwks_url``: the JWKS URL of a client id, as a function or as a template
    containing ``{client_id}`` (e.g. ``https://auth.example/oauth2/clients/{client_id}/jwks.json``;
    the id is URL-quoted). ``cache_options``: keyword arguments for each
    :class:`~bsopt_common.security.jwt.JWKSCache` (max-age bounds, refetch interval, ...).
    """

    def __init__(
        self,
        client_jwks_url: Callable[[str], str] | str,
        *,
        http_client: httpx.AsyncClient | None = None,
        cache_options: Mapping[str, Any] | None = None,
    ):
        if isinstance(client_jwks_url, str):
            template = client_jwks_url
            if "{client_id}" not in template:
                raise ValueError("the client JWKS URL template must contain '{client_id}'")

            def url_of(client_id: str) -> str:
                return template.replace("{client_id}", quote(client_id, safe=""))

            self._url_of: Callable[[str], str] = url_of
        else:
            self._url_of = client_jwks_url
        self._http_client = http_client
        self._cache_options = dict(cache_options or {})
        self._caches: dict[str, JWKSCache] = {}

    @property
    def caches(self) -> Mapping[str, JWKSCache]:
        """The JWKS cache of each producer seen so far (only registered producers)."""
        return dict(self._caches)

    def _cache(self, client_id: str) -> JWKSCache:
        cache = self._caches.get(client_id)
        if cache is None:
            cache = JWKSCache(self._url_of(client_id), http_client=self._http_client, **self._cache_options)
            self._caches[client_id] = cache
        return cache

    async def verify(
        self, token: str, *, topic: Topic[Any], headers: Mapping[str, str], key: str | None, payload: bytes,
    ) -> str:
        """The client id of the producer that signed this very event, or raise
        EventSignatureError.

        ``headers``: the received CloudEvents attributes (``ce_id``, ``ce_type``,
        ``ce_source``, ``ce_subject``, ``ce_time``); ``key``: the received partition key;
        ``payload``: the received value bytes. Checks, in order: a well-formed compact
        JWS; header ``typ`` ``bsopt-event+jwt``, ``alg`` in
        :data:`EVENT_SIGNING_ALGORITHMS`, a ``kid``; ``iss`` a registered producer of
        ``topic`` (before any key lookup); the signature, with that producer's published
        key ``kid``; every signed attribute equal to what was received, and
        ``data_sha256`` equal to the payload's hash. No expiry (see the module docstring).
        """
        if not isinstance(token, str) or not token or len(token) > MAX_SIGNATURE_LENGTH or token.count(".") != 2:
            raise EventSignatureError("malformed event signature")
        # Header and claims are read before the signature check only to choose the key;
        # everything taken from them is checked again by the verification below.
        header = _segment(token, 0)
        if header.get("typ") != EVENT_SIGNATURE_TYPE:
            raise EventSignatureError(f"event signature type is not {EVENT_SIGNATURE_TYPE}")
        alg = header.get("alg")
        if alg not in EVENT_SIGNING_ALGORITHMS:
            raise EventSignatureError("unsupported event signature algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise EventSignatureError("event signature header has no kid")
        issuer = _segment(token, 1).get("iss")
        if not isinstance(issuer, str) or issuer not in topic.producers:
            raise EventSignatureError(f"client {_shown(issuer)} may not publish to {topic.name}")
        try:
            keys = await self._cache(issuer).get_key_set(kid)
        except InvalidTokenError:
            raise EventSignatureError(f"signing keys of {issuer!r} are unavailable") from None
        if keys is None or kid not in {k.kid for k in keys}:
            raise EventSignatureError(f"event signed by a key that {issuer!r} does not publish")
        candidate = keys.get_by_kid(kid)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=SecurityWarning)
                decoded = jwt.decode(token, KeySet([candidate]), algorithms=[alg])
        except JoseError:
            raise EventSignatureError("bad event signature") from None
        claims = decoded.claims
        if claims.get("iss") != issuer or decoded.header.get("alg") != alg:
            raise EventSignatureError("bad event signature")
        if not isinstance(claims.get("iat"), int):
            raise EventSignatureError("event signature has no iat")
        for name in SIGNED_HEADERS:
            if claims.get(name) != headers.get(name, "" if name == "ce_subject" else None):
                raise EventSignatureError(f"signed {name} does not match the event")
        if claims.get("topic") != topic.name:
            raise EventSignatureError("signed topic does not match the event")
        if "key" not in claims or claims["key"] != key:
            raise EventSignatureError("signed partition key does not match the event")
        if claims.get("data_sha256") != payload_digest(payload):
            raise EventSignatureError("signed data_sha256 does not match the payload")
        return issuer

    async def aclose(self) -> None:
        for cache in self._caches.values():
            await cache.aclose()
        self._caches.clear()
