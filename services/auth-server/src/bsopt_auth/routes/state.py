"""What the routes need from the application, kept on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bsopt_auth.config import AuthSettings


@dataclass(frozen=True)
class AppState:
    settings: AuthSettings
    engine: Engine
    session_factory: sessionmaker[Session]
    #: What routes build once per application, lazily (the token endpoint's lanes).
    extras: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def of(request: Request) -> AppState:
        return request.app.state.auth
