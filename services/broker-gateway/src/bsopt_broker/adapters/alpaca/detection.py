"""Paper or live: decided from evidence, never guessed.

Evidence, each optional:

* the key id prefix: ``PK`` paper, ``AK`` live (other prefixes, e.g. OAuth tokens or a
  local stand-in's keys, say nothing);
* the account number the broker reports: ``PA…`` paper, anything else live;
* a probe: which endpoint accepted the credentials (paper or live).

The manual ``paper`` override of the accounts file wins when nothing contradicts it. Any
disagreement (between the override and the evidence, or between two pieces of evidence)
raises :class:`AccountKindContradiction`; no evidence and no override raises
:class:`AccountKindUnknown`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bsopt_common.errors import FailedPrecondition


class AccountKind(StrEnum):
    PAPER = "paper"
    LIVE = "live"


class AccountKindContradiction(FailedPrecondition):
    """The override and the evidence (or two pieces of evidence) disagree."""


class AccountKindUnknown(FailedPrecondition):
    """Nothing decides paper or live: set ``paper:`` in the accounts file."""


def kind_from_key_id(key_id: str | None) -> AccountKind | None:
    if not key_id:
        return None
    if key_id.startswith("PK"):
        return AccountKind.PAPER
    if key_id.startswith("AK"):
        return AccountKind.LIVE
    return None


def kind_from_account_number(account_number: str | None) -> AccountKind | None:
    if not account_number:
        return None
    return AccountKind.PAPER if account_number.startswith("PA") else AccountKind.LIVE


@dataclass(frozen=True, slots=True)
class Detection:
    kind: AccountKind
    reasons: tuple[str, ...]
    """What decided it, e.g. ``("override", "key id prefix")``."""


def detect(*, account: str, key_id: str | None, override: bool | None = None,
           account_number: str | None = None, probe: AccountKind | None = None) -> Detection:
    """Decide paper or live for ``account``. Raises AccountKindContradiction or AccountKindUnknown."""
    evidence: list[tuple[str, AccountKind]] = []
    if (k := kind_from_key_id(key_id)) is not None:
        evidence.append(("key id prefix", k))
    if (k := kind_from_account_number(account_number)) is not None:
        evidence.append((f"account number {account_number}", k))
    if probe is not None:
        evidence.append(("endpoint probe", probe))
    if override is not None:
        wanted = AccountKind.PAPER if override else AccountKind.LIVE
        against = [f"{src} says {k}" for src, k in evidence if k is not wanted]
        if against:
            raise AccountKindContradiction(
                f"account {account!r}: accounts file says paper: {str(override).lower()} ({wanted}), "
                f"but {'; '.join(against)}")
        return Detection(wanted, ("override", *(src for src, _ in evidence)))
    kinds = {k for _, k in evidence}
    if len(kinds) > 1:
        raise AccountKindContradiction(
            f"account {account!r}: evidence disagrees: {'; '.join(f'{src} says {k}' for src, k in evidence)}")
    if not kinds:
        raise AccountKindUnknown(f"account {account!r}: cannot tell paper from live (no key id prefix, "
                                 "account number or probe); set paper: true|false in the accounts file")
    return Detection(kinds.pop(), tuple(src for src, _ in evidence))
