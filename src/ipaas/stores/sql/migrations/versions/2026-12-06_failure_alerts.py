"""Failure alerts: workflow.error_workflow_id (the workflow run for each failure of this one)
and execution.alert_pending (a failure the alert pass has not dealt with yet), with a partial
index on the pending rows

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_execution_finished_at"


def upgrade() -> None:
    # Nullable, no default: a plain ALTER TABLE ADD COLUMN on both dialects, no rewrite.
    op.add_column("workflow", sa.Column("error_workflow_id", sa.String(64), nullable=True))
    op.add_column("execution", sa.Column("alert_pending", sa.Boolean(), nullable=True))
    predicate = sa.text("alert_pending IS NOT NULL")
    op.create_index(
        _INDEX, "execution", ["finished_at"], sqlite_where=predicate, postgresql_where=predicate
    )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="execution")
    with op.batch_alter_table("execution") as batch:
        batch.drop_column("alert_pending")
    with op.batch_alter_table("workflow") as batch:
        batch.drop_column("error_workflow_id")
