"""One router per resource; :data:`ROUTERS` is what the app mounts."""

from bsopt_api.api.routes import accounts, broker_connections, coach, digests, health, me, trades, training_jobs

ROUTERS = (
    health.router,
    me.router,
    training_jobs.router,
    accounts.router,
    accounts.imports_router,
    broker_connections.router,
    trades.router,
    digests.router,
    coach.router,
)
