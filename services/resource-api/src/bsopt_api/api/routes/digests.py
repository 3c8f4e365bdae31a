"""``/v1/digests``: weekly digests, read from this service's projection of
``digests.ready.v1`` (no backend call)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, status

from bsopt_api import projections
from bsopt_api.api.deps import SessionFactory, TradesReader
from bsopt_api.api.schemas import Digest
from bsopt_common.db import session_scope

router = APIRouter(prefix="/v1/digests", tags=["digests"])


@router.get("/latest", response_model=Digest, responses={404: {"description": "no digest yet"}})
async def latest_digest(principal: TradesReader, factory: SessionFactory) -> dict[str, Any]:
    """The caller's digest of the most recent week (its highest version)."""

    def read() -> dict[str, Any] | None:
        with session_scope(factory) as session:
            return projections.latest_digest(session, principal.subject)

    digest = await asyncio.to_thread(read)
    if digest is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, "no weekly digest yet; import and score some trades first"
        )
    return digest
