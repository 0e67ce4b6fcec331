"""jobs.queued_at: when a job was last queued, for the Celery sweep

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

import vitgrade.service.db

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('queued_at', vitgrade.service.db.UtcDateTime(timezone=True), nullable=True))
    op.execute("UPDATE jobs SET queued_at = created_at")  # a job's last queueing before now is unknown: its first
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.alter_column('queued_at', existing_type=vitgrade.service.db.UtcDateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('queued_at')
