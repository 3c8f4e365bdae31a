"""The Alpaca accounts file: parsing, secrets by value, env or file, errors naming entry and field."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bsopt_broker.adapters.alpaca.accounts import AccountsFileError, load_accounts, parse_accounts
from bsopt_broker.config import BrokerSettings

GOOD = """
accounts:
  - name: alice
    broker: alpaca
    owner: u-alice
    api_key_id: PKINLINE
    api_secret_key_env: ALICE_SECRET
  - name: bob
    broker: alpaca
    owner: u-bob
    api_key_id_file: bob.key
    api_secret_key_file: /ABS/bob.secret
    paper: false
    base_url: http://127.0.0.1:9999/
    min_balance_usd: 2500.50
    read_only: true
    allow_live: true
"""


def test_parses_entries_and_resolves_secrets(tmp_path):
    (tmp_path / "bob.key").write_text("AKBOB\n")
    (tmp_path / "bob.secret").write_text("bob-secret")
    path = tmp_path / "accounts.yml"
    path.write_text(GOOD.replace("/ABS", str(tmp_path)))
    accounts = load_accounts(path, environ={"ALICE_SECRET": "alice-secret"})
    alice, bob = accounts["alice"], accounts["bob"]
    assert alice.api_key_id.get_secret_value() == "PKINLINE"
    assert alice.api_secret_key.get_secret_value() == "alice-secret"
    assert alice.min_balance_usd == Decimal(5000) and alice.paper is None
    assert not alice.read_only and not alice.allow_live and alice.base_url is None
    assert bob.api_key_id.get_secret_value() == "AKBOB"
    assert bob.api_secret_key.get_secret_value() == "bob-secret"
    assert (bob.paper, bob.read_only, bob.allow_live) == (False, True, True)
    assert bob.min_balance_usd == Decimal("2500.50") and bob.base_url == "http://127.0.0.1:9999"
    assert "alice-secret" not in repr(alice) and "PKINLINE" not in repr(alice)


def entry(**fields):
    base = {"name": "carol", "broker": "alpaca", "owner": "u", "api_key_id": "PK1", "api_secret_key": "s3cret"}
    base.update(fields)
    return {"accounts": [{k: v for k, v in base.items() if v is not None}]}


@pytest.mark.parametrize(("fields", "field"), [
    ({"api_secret_key": None}, "api_secret_key"),
    ({"api_key_id": None, "api_key_id_env": "NOPE"}, "api_key_id_env"),
    ({"api_secret_key": None, "api_secret_key_file": "/no/such/file"}, "api_secret_key_file"),
    ({"api_key_id_env": "X"}, "api_key_id"),
    ({"broker": "ibkr"}, "broker"),
    ({"owner": None}, "owner"),
    ({"min_balance_usd": "lots"}, "min_balance_usd"),
    ({"min_balance_usd": -1}, "min_balance_usd"),
    ({"base_url": "ftp://x"}, "base_url"),
    ({"paper": "maybe"}, "paper"),
    ({"surprise": 1}, "surprise"),
])
def test_errors_name_the_entry_and_the_field(fields, field):
    with pytest.raises(AccountsFileError) as err:
        parse_accounts(entry(**fields), environ={"X": "x"})
    message = str(err.value)
    assert "'carol'" in message and f"'{field}'" in message
    assert "s3cret" not in message


def test_duplicate_names_and_shapes_are_errors():
    doc = entry()
    doc["accounts"].append(dict(doc["accounts"][0]))
    with pytest.raises(AccountsFileError, match=r"entry #2 \('carol'\).*duplicate"):
        parse_accounts(doc)
    with pytest.raises(AccountsFileError, match="list of entries"):
        parse_accounts({"accounts": {"name": "x"}})
    with pytest.raises(AccountsFileError, match="entry #1: expected a mapping"):
        parse_accounts(["just a string"])
    assert parse_accounts(None) == {}


def test_bad_yaml_does_not_echo_the_file(tmp_path):
    path = tmp_path / "a.yml"
    path.write_text("accounts:\n  - api_secret_key: topsecret\n    name: [unclosed\n")
    with pytest.raises(AccountsFileError, match="not valid YAML at line") as err:
        load_accounts(path)
    assert "topsecret" not in str(err.value)
    with pytest.raises(AccountsFileError, match="cannot read"):
        load_accounts(tmp_path / "missing.yml")


def test_setting_is_optional(monkeypatch, tmp_path):
    assert BrokerSettings().accounts_file is None
    monkeypatch.setenv("BSOPT_BROKER_ACCOUNTS_FILE", str(tmp_path / "a.yml"))
    assert BrokerSettings().accounts_file == tmp_path / "a.yml"
