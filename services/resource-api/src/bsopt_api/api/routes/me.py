"""``/v1/me``: who the token says the caller is."""

from __future__ import annotations

from fastapi import APIRouter

from bsopt_api.api.deps import AnyPrincipal
from bsopt_api.api.schemas import Me

router = APIRouter(prefix="/v1", tags=["me"])


@router.get("/me", response_model=Me)
async def read_me(principal: AnyPrincipal) -> Me:
    """Any valid token: its subject (the user id), client and scopes (sorted)."""
    return Me(sub=principal.subject, client_id=principal.client_id, scopes=sorted(principal.scopes))
