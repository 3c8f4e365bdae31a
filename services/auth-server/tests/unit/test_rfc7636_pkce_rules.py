"""RFC 7636 rules, without a server (vector from RFC 7636 Appendix B)."""

from __future__ import annotations

import pytest

from bsopt_auth.rfc6749.errors import InvalidGrantError, InvalidRequestError
from bsopt_auth.rfc7636 import create_s256_code_challenge, validate_code_challenge, verify_code_verifier

VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_rfc_appendix_b_vector() -> None:
    assert create_s256_code_challenge(VERIFIER) == CHALLENGE
    verify_code_verifier(VERIFIER, CHALLENGE, "S256")


def test_wrong_verifier() -> None:
    with pytest.raises(InvalidGrantError):
        verify_code_verifier(VERIFIER[:-1] + "A", CHALLENGE, "S256")


@pytest.mark.parametrize("verifier", ["short", "x" * 129, "a" * 42 + "!", "a" * 43 + " "])
def test_malformed_verifier(verifier: str) -> None:
    with pytest.raises(InvalidGrantError):
        verify_code_verifier(verifier, CHALLENGE, "S256")


def test_missing_verifier() -> None:
    with pytest.raises(InvalidRequestError):
        verify_code_verifier(None, CHALLENGE, "S256")


def test_plain_never_verifies() -> None:
    with pytest.raises(InvalidGrantError):
        verify_code_verifier(VERIFIER, VERIFIER, "plain")


@pytest.mark.parametrize(
    ("challenge", "method"),
    [(None, "S256"), ("", "S256"), (CHALLENGE, "plain"), (CHALLENGE, None), (CHALLENGE, "s256"),
     (CHALLENGE + "A", "S256"), (CHALLENGE[:-1] + "=", "S256")],
)
def test_invalid_challenges(challenge: str | None, method: str | None) -> None:
    with pytest.raises(InvalidRequestError):
        validate_code_challenge(challenge, method)


def test_valid_challenge() -> None:
    validate_code_challenge(CHALLENGE, "S256")
