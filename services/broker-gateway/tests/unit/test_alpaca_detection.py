"""Paper/live detection: every combination of override, key prefix, account number and probe."""

from __future__ import annotations

import itertools

import pytest

from bsopt_broker.adapters.alpaca.detection import (
    AccountKind,
    AccountKindContradiction,
    AccountKindUnknown,
    detect,
)

P, L = AccountKind.PAPER, AccountKind.LIVE
KEYS = {"PKABC": P, "AKABC": L, "XYZ": None, None: None}
NUMBERS = {"PA123": P, "123456": L, None: None}
PROBES = {P: P, L: L, None: None}
OVERRIDES = {True: P, False: L, None: None}


def expected(override: bool | None, key: str | None, number: str | None, probe: AccountKind | None):
    said = {k for k in (KEYS[key], NUMBERS[number], PROBES[probe], OVERRIDES[override]) if k is not None}
    if len(said) > 1:
        return AccountKindContradiction
    if not said:
        return AccountKindUnknown
    return said.pop()


@pytest.mark.parametrize(("override", "key", "number", "probe"),
                         list(itertools.product(OVERRIDES, KEYS, NUMBERS, PROBES)))
def test_detection_matrix(override, key, number, probe):
    want = expected(override, key, number, probe)
    if isinstance(want, type):
        with pytest.raises(want) as err:
            detect(account="acct", key_id=key, override=override, account_number=number, probe=probe)
        assert "'acct'" in str(err.value)
    else:
        got = detect(account="acct", key_id=key, override=override, account_number=number, probe=probe)
        assert got.kind is want
        if override is not None:
            assert got.reasons[0] == "override"


def test_override_contradicted_by_broker_names_both():
    with pytest.raises(AccountKindContradiction, match=r"paper: true.*account number 123456 says live"):
        detect(account="a", key_id=None, override=True, account_number="123456")
