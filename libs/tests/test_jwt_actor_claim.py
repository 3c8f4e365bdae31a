"""The RFC 8693 ``act`` claim as :class:`AccessTokenClaims.actor` exposes it."""

from __future__ import annotations

from typing import Any

import pytest

from bsopt_common.security.jwt import MAX_ACTOR_DEPTH, InvalidTokenError, _actor_chain


def nested(*subs: str) -> dict[str, Any] | None:
    act: dict[str, Any] | None = None
    for sub in reversed(subs):
        act = {"sub": sub, **({"act": act} if act is not None else {})}
    return act


def test_chain_outermost_first() -> None:
    assert _actor_chain(None) == ()
    assert _actor_chain({"sub": "resource-api"}) == ("resource-api",)
    assert _actor_chain(nested("rl-trainer", "resource-api")) == ("rl-trainer", "resource-api")
    assert _actor_chain({"sub": "a", "client_id": "ignored"}) == ("a",)


@pytest.mark.parametrize("act", [
    "resource-api", ["resource-api"], {}, {"sub": ""}, {"sub": 7}, {"sub": "a", "act": "b"},
    {"sub": "a", "act": {}}, nested(*[f"c{i}" for i in range(MAX_ACTOR_DEPTH + 1)]),
])
def test_malformed_act_refuses_the_token(act: Any) -> None:
    with pytest.raises(InvalidTokenError, match="act"):
        _actor_chain(act)


def test_depth_limit_itself_is_accepted() -> None:
    assert len(_actor_chain(nested(*[f"c{i}" for i in range(MAX_ACTOR_DEPTH)]))) == MAX_ACTOR_DEPTH
