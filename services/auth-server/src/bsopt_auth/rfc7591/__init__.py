"""RFC 7591 §2 client metadata ``jwks``: a client's registered PUBLIC keys.

A service client registers the public half of its own key pair; it signs its
``private_key_jwt`` client assertions (RFC 7523, :mod:`bsopt_auth.rfc7523`) and the
events it publishes with the private half, which never leaves the service. Consumers of
its events fetch the keys from ``/oauth2/clients/{client_id}/jwks.json``.

:func:`normalize_client_jwks` is the one gate in front of ``auth.clients.jwks`` (the
admin CLI and the dev seed both go through it). It takes a JWK Set (RFC 7517 §5) or a
single JWK and returns a JWK Set holding, per key, only:

* the public members of the key type (RFC 7518 §6.2.1, §6.3.1; RFC 8037 §2), checked by
  importing the key: ``EC`` on ``P-256`` (``ES256``), ``RSA`` of at least 2048 bits
  (``RS256`` / ``PS256``), ``OKP`` on ``Ed25519`` (``EdDSA`` / ``Ed25519``);
* ``kid`` (the given one, else the RFC 7638 thumbprint), ``alg`` when given (it must fit
  the key) and ``use`` = ``sig`` (refused when given as anything else).

A key carrying a private member (``d``, ``p``, ``q``, ``dp``, ``dq``, ``qi``, ``oth``)
or symmetric material (``oct`` / ``k``) is refused, never silently stripped: whoever
uploads a private key must learn that it has left its service. Every problem is
:class:`InvalidClientMetadataError` (RFC 7591 §3.2.2 ``invalid_client_metadata``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey
from sqlalchemy.orm import Session

from bsopt_auth.models import Client
from bsopt_auth.rfc6749.errors import OAuth2Error

#: Asymmetric JWS algorithms (RFC 7518 §3.1, RFC 8037 §3.1, RFC 9864 §2.2) a client key
#: may sign with. Never ``none`` nor ``HS*``. ``EdDSA`` (RFC 8037) and its fully
#: specified successor ``Ed25519`` (RFC 9864) are the same signature with an Ed25519 key.
CLIENT_SIGNING_ALGS = ("ES256", "RS256", "PS256", "EdDSA", "Ed25519")
#: Algorithms each key type may be used with.
ALGS_BY_KTY: Mapping[str, tuple[str, ...]] = {
    "EC": ("ES256",), "RSA": ("RS256", "PS256"), "OKP": ("EdDSA", "Ed25519"),
}

# joserfc warns on every use of "EdDSA" (deprecated by RFC 9864 in favour of "Ed25519");
# both are accepted here on purpose, for Ed25519 keys only.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)
#: JWK members of private (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2) or symmetric (§6.4) keys.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MIN_RSA_BITS = 2048
#: At most this many keys per client (a current and a next one is the usual case).
MAX_KEYS = 8
MAX_KID_LENGTH = 255

ClientKey = ECKey | RSAKey | OKPKey


class InvalidClientMetadataError(OAuth2Error):
    """The value of one of the client metadata fields is invalid and the server has
    rejected this request. (RFC 7591 §3.2.2)"""

    error = "invalid_client_metadata"


def _import(member: Mapping[str, Any]) -> ClientKey:
    """Import the public members of ``member``; refuse other curves and short RSA keys."""
    kty = member.get("kty")
    try:
        if kty == "EC":
            if member.get("crv") != "P-256":
                raise InvalidClientMetadataError("EC keys must be on curve P-256 (ES256)")
            return ECKey.import_key({k: member[k] for k in ("kty", "crv", "x", "y") if k in member})
        if kty == "RSA":
            rsa_key = RSAKey.import_key({k: member[k] for k in ("kty", "n", "e") if k in member})
            public = rsa_key.public_key
            if not isinstance(public, rsa.RSAPublicKey) or public.key_size < MIN_RSA_BITS:
                raise InvalidClientMetadataError(f"RSA keys must have at least {MIN_RSA_BITS} bits")
            return rsa_key
        if kty == "OKP":
            if member.get("crv") != "Ed25519":
                raise InvalidClientMetadataError("OKP keys must be on curve Ed25519 (EdDSA / Ed25519)")
            return OKPKey.import_key({k: member[k] for k in ("kty", "crv", "x") if k in member})
    except InvalidClientMetadataError:
        raise
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InvalidClientMetadataError(f"not a valid {kty} public key ({type(exc).__name__})") from None
    if kty == "oct":
        raise InvalidClientMetadataError("symmetric (oct) keys cannot be registered: a client key is asymmetric")
    raise InvalidClientMetadataError("kty must be EC, RSA or OKP")


def normalize_client_key(member: object) -> dict[str, Any]:
    """One registered key: public members, ``kid``, ``use`` = ``sig``, ``alg`` if given."""
    if not isinstance(member, Mapping):
        raise InvalidClientMetadataError("each key must be a JSON object (a JWK)")
    private = sorted(PRIVATE_MEMBERS & set(member))
    if private:
        raise InvalidClientMetadataError(
            f"refusing a private or symmetric key (member {private[0]!r}): register the PUBLIC key only "
            "and keep the private key in the service"
        )
    key = _import(member)
    kty = str(member["kty"])
    alg = member.get("alg")
    if alg is not None and alg not in ALGS_BY_KTY[kty]:
        raise InvalidClientMetadataError(f"alg must be one of {', '.join(ALGS_BY_KTY[kty])} for a {kty} key")
    use = member.get("use")
    if use is not None and use != "sig":
        raise InvalidClientMetadataError("use must be 'sig': client keys only sign")
    key_ops = member.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or not set(key_ops) <= {"verify"}):
        raise InvalidClientMetadataError("key_ops of a public signing key may only be ['verify']")
    kid = member.get("kid")
    if kid is None:
        kid = key.thumbprint()
    elif not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH or not kid.isprintable():
        raise InvalidClientMetadataError(f"kid must be a printable string of 1 to {MAX_KID_LENGTH} characters")
    jwk: dict[str, Any] = {**key.as_dict(private=False), "kid": kid, "use": "sig"}
    for extra in ("key_ops",):  # joserfc may carry parameters over; keep only ours
        jwk.pop(extra, None)
    if alg is not None:
        jwk["alg"] = alg
    if PRIVATE_MEMBERS & set(jwk):  # cannot happen: only public members were imported
        raise InvalidClientMetadataError("key has private members")
    return jwk


def normalize_client_jwks(document: object) -> dict[str, list[dict[str, Any]]]:
    """A JWK Set of public keys for ``auth.clients.jwks``, from a JWK Set or one JWK.
    Raises :class:`InvalidClientMetadataError` (private members, symmetric keys, other
    curves or key types, short RSA keys, duplicate kids, no keys)."""
    if isinstance(document, Mapping) and "keys" in document:
        keys = document["keys"]
        if not isinstance(keys, Sequence) or isinstance(keys, str | bytes):
            raise InvalidClientMetadataError("jwks.keys must be an array of JWKs")
    elif isinstance(document, Mapping) and "kty" in document:
        keys = [document]
    else:
        raise InvalidClientMetadataError('expected a JWK Set ({"keys": [...]}) or a single JWK')
    if not keys:
        raise InvalidClientMetadataError("jwks.keys is empty")
    if len(keys) > MAX_KEYS:
        raise InvalidClientMetadataError(f"at most {MAX_KEYS} keys per client")
    # Every member is checked for private material before any is imported.
    for member in keys:
        if isinstance(member, Mapping) and PRIVATE_MEMBERS & set(member):
            normalize_client_key(member)  # raises with the member named
    normalized = [normalize_client_key(member) for member in keys]
    kids = [k["kid"] for k in normalized]
    if len(set(kids)) != len(kids):
        raise InvalidClientMetadataError("kid values must be unique")
    return {"keys": normalized}


def load_client_jwks(text: str) -> dict[str, list[dict[str, Any]]]:
    """:func:`normalize_client_jwks` of a JSON text (a file's content)."""
    try:
        document = json.loads(text)
    except ValueError:
        raise InvalidClientMetadataError("not JSON: expected a JWK Set or a single JWK") from None
    return normalize_client_jwks(document)


def public_jwks(stored: Mapping[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    """What is published of a stored JWKS: each key filtered through
    :func:`normalize_client_key` again, so no private member can ever be served."""
    if not stored:
        return {"keys": []}
    return {"keys": [normalize_client_key(k) for k in stored.get("keys", [])]}


def algorithms_for(jwk: Mapping[str, Any]) -> tuple[str, ...]:
    """The algorithms an assertion signed with ``jwk`` may name: its ``alg``, else every
    algorithm of its key type."""
    allowed = ALGS_BY_KTY.get(str(jwk.get("kty")), ())
    alg = jwk.get("alg")
    return (alg,) if alg in allowed else allowed


def import_client_key(jwk: Mapping[str, Any]) -> ClientKey:
    """The joserfc key of a registered (already normalized) JWK."""
    return _import(jwk)


#: The RFC 7591 ``token_endpoint_auth_method`` of clients with registered keys.
PRIVATE_KEY_JWT = "private_key_jwt"


def register_client_jwks(session: Session, client_id: str, document: object) -> dict[str, list[dict[str, Any]]]:
    """Register ``document``'s public keys for the confidential client ``client_id`` and
    switch it to ``private_key_jwt``: its secret hash is dropped (a secret no longer
    authenticates it). Replaces any keys registered before. Returns the stored JWKS.
    Raises KeyError (unknown client) or :class:`InvalidClientMetadataError`."""
    jwks = normalize_client_jwks(document)
    client = session.get(Client, client_id)
    if client is None:
        raise KeyError(client_id)
    if client.is_public:
        raise InvalidClientMetadataError("a public client cannot authenticate; register keys for a confidential one")
    client.jwks = jwks
    client.token_endpoint_auth_method = PRIVATE_KEY_JWT
    client.client_secret_hash = None
    session.flush()
    return jwks


__all__ = [
    "ALGS_BY_KTY",
    "CLIENT_SIGNING_ALGS",
    "MAX_KEYS",
    "MIN_RSA_BITS",
    "PRIVATE_KEY_JWT",
    "PRIVATE_MEMBERS",
    "ClientKey",
    "InvalidClientMetadataError",
    "algorithms_for",
    "import_client_key",
    "load_client_jwks",
    "normalize_client_jwks",
    "normalize_client_key",
    "public_jwks",
    "register_client_jwks",
]
