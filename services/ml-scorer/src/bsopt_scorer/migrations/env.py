"""Alembic environment: delegates to bsopt_common.migrations (online, engine handed over)."""

from alembic import context

from bsopt_common.migrations import run_env

run_env(context)
