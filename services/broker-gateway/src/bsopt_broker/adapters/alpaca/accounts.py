"""The Alpaca accounts file (``BSOPT_BROKER_ACCOUNTS_FILE``), YAML::

    accounts:
      - name: alice-paper
        broker: alpaca
        owner: 1b4e28ba-...         # the bsopt user id (the sub of their tokens), not the username
        api_key_id_env: ALICE_KEY    # or api_key_id: PK..., or api_key_id_file: /run/secrets/k
        api_secret_key_file: /run/secrets/alice_secret
        paper: true                  # optional manual override of detection
        base_url: http://127.0.0.1:8080   # optional: a proxy or a local stand-in
        min_balance_usd: 5000        # optional, default 5000
        read_only: false             # optional: may import, never place orders
        allow_live: false            # optional: live accounts refuse orders without it
        sell_rules:                  # optional: the account's sell worker (bsopt_broker.sell)
          stop_loss_pct: 5           #   sell a position 5 % below its average entry price
          take_profit_pct: 10        #   sell a position 10 % above it
          check_interval_s: 5        #   seconds between two evaluations (default 5)
        on_balance_unavailable: refuse   # optional: or allow (the order goes, with a warning)

A top-level list of entries is accepted too. Each credential is given exactly one way:
inline, ``*_env`` (an environment variable's name) or ``*_file`` (a path, relative to the
accounts file). A malformed file or a missing secret raises :class:`AccountsFileError`
naming the entry and the field. Secrets are :class:`~pydantic.SecretStr`: never in a repr,
a log line or an error message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from bsopt_common.errors import InvalidArgument

DEFAULT_MIN_BALANCE_USD = Decimal(5000)
_SECRETS = ("api_key_id", "api_secret_key")


class AccountsFileError(InvalidArgument):
    """The accounts file is malformed or names a secret that cannot be read."""


class SellRulesConfig(BaseModel):
    """``sell_rules`` of an entry: thresholds in percent from a position's average entry
    price (``stop_loss_pct`` in (0, 100), ``take_profit_pct`` > 0; either may be left out)
    and ``check_interval_s``, seconds between two evaluations (> 0, default 5)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stop_loss_pct: Decimal | None = Field(default=None, gt=0, lt=100)
    take_profit_pct: Decimal | None = Field(default=None, gt=0)
    check_interval_s: float = Field(default=5.0, gt=0, le=3600)


class AlpacaAccountConfig(BaseModel):
    """One resolved entry of the accounts file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    broker: Literal["alpaca"]
    owner: str = Field(min_length=1)
    api_key_id: SecretStr
    api_secret_key: SecretStr
    paper: bool | None = None
    base_url: str | None = None
    min_balance_usd: Decimal = Field(default=DEFAULT_MIN_BALANCE_USD, ge=0)
    read_only: bool = False
    allow_live: bool = False
    sell_rules: SellRulesConfig | None = None
    #: When the balance cannot be read before an order (Alpaca unreachable within the
    #: request timeout and retries): ``refuse`` the order (UNAVAILABLE), or ``allow`` it
    #: unchecked with a warning (a log line and ``balance_unchecked`` on the result).
    on_balance_unavailable: Literal["refuse", "allow"] = "refuse"

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/") if v else v


def _entry_label(index: int, raw: object) -> str:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    return f"entry #{index + 1} ({name!r})" if isinstance(name, str) and name else f"entry #{index + 1}"


def _resolve_secret(raw: dict[str, Any], field: str, label: str, environ: Mapping[str, str],
                    base_dir: Path) -> str:
    given = [k for k in (field, f"{field}_env", f"{field}_file") if raw.get(k) not in (None, "")]
    if not given:
        raise AccountsFileError(f"accounts file: {label}: field {field!r} is missing "
                                f"(give {field}, {field}_env or {field}_file)")
    if len(given) > 1:
        raise AccountsFileError(f"accounts file: {label}: field {field!r} is given more than once ({', '.join(given)})")
    key = given[0]
    value = raw.pop(key)
    if not isinstance(value, str):
        raise AccountsFileError(f"accounts file: {label}: field {key!r} must be a string")
    if key == field:
        return value
    if key.endswith("_env"):
        secret = environ.get(value, "")
        if not secret:
            raise AccountsFileError(f"accounts file: {label}: field {key!r}: environment variable {value!r} "
                                    "is not set or empty")
        return secret
    path = Path(value) if Path(value).is_absolute() else base_dir / value
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AccountsFileError(f"accounts file: {label}: field {key!r}: cannot read {path}: "
                                f"{exc.strerror or exc}") from None
    if not secret:
        raise AccountsFileError(f"accounts file: {label}: field {key!r}: {path} is empty")
    return secret


def parse_accounts(document: object, *, environ: Mapping[str, str] | None = None,
                   base_dir: Path | None = None) -> dict[str, AlpacaAccountConfig]:
    """Validate a parsed accounts document; entries by name (names are unique)."""
    env = os.environ if environ is None else environ
    base = base_dir or Path.cwd()
    if isinstance(document, Mapping):
        if set(document) - {"accounts"}:
            raise AccountsFileError(f"accounts file: unknown top-level keys {sorted(set(document) - {'accounts'})}")
        document = document.get("accounts")
    if document is None:
        return {}
    if not isinstance(document, list):
        raise AccountsFileError("accounts file: expected a list of entries under 'accounts'")
    accounts: dict[str, AlpacaAccountConfig] = {}
    for i, item in enumerate(document):
        label = _entry_label(i, item)
        if not isinstance(item, Mapping):
            raise AccountsFileError(f"accounts file: {label}: expected a mapping of fields")
        raw = dict(item)
        for field in _SECRETS:
            raw[field] = _resolve_secret(raw, field, label, env, base)
        try:
            config = AlpacaAccountConfig.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors(include_input=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "(entry)"
            raise AccountsFileError(f"accounts file: {label}: field {where!r}: {first['msg']}") from None
        if config.name in accounts:
            raise AccountsFileError(f"accounts file: {label}: field 'name': duplicate name {config.name!r}")
        accounts[config.name] = config
    return accounts


def load_accounts(path: Path | str, *, environ: Mapping[str, str] | None = None) -> dict[str, AlpacaAccountConfig]:
    """Read and validate the accounts file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise AccountsFileError(f"accounts file {p}: cannot read: {exc.strerror or exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        # The parser's own message may quote the offending line, which can hold a secret.
        raise AccountsFileError(f"accounts file {p}: not valid YAML{where}") from None
    return parse_accounts(document, environ=environ, base_dir=p.parent)
