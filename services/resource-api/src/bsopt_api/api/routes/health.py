"""Liveness and readiness probes (no token): ``/healthz`` answers while the process
serves; ``/readyz`` only once start-up (database, migrations, consumers) is done."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bsopt_api.problems import problem

router = APIRouter(tags=["health"])


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    if not getattr(request.app.state, "ready", False):
        return problem(503, "starting or draining", instance=request.url.path)
    return JSONResponse({"status": "ready"})
