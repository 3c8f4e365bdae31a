"""trainer schema: training jobs, paper-trading runs, event tables.

Revision ID: 0001
"""

from alembic import op

from bsopt_common.events import create_event_tables
from bsopt_trainer import models

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    models.metadata.create_all(bind)
    create_event_tables(bind, models.SCHEMA)


def downgrade() -> None:
    models.metadata.drop_all(op.get_bind())
