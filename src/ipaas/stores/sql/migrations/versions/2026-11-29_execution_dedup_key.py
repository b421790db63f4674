"""execution.dedup_key: unique per workflow when set (schedule ticks, later Idempotency-Key)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column: a plain ALTER TABLE ADD COLUMN on both dialects, no table rewrite.
    op.add_column("execution", sa.Column("dedup_key", sa.String(255), nullable=True))
    # Rows without a key (NULL) never collide in a unique index on SQLite or PostgreSQL.
    op.create_index(
        "ix_execution_workflow_id_dedup_key",
        "execution",
        ["workflow_id", "dedup_key"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("ix_execution_workflow_id_dedup_key", table_name="execution")
    # Batch mode: SQLite before 3.35 cannot drop a column in place; Alembic copies the table.
    with op.batch_alter_table("execution") as batch:
        batch.drop_column("dedup_key")
