"""execution.trace_context (the W3C traceparent that links a worker's spans to the webhook's)
and an index on (tenant_id, finished_at) for GET /api/stats

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: a plain ALTER TABLE ADD COLUMN on both dialects, no rewrite.
    op.add_column("execution", sa.Column("trace_context", sa.String(128), nullable=True))
    op.create_index("ix_execution_tenant_id_finished_at", "execution", ["tenant_id", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_execution_tenant_id_finished_at", table_name="execution")
    with op.batch_alter_table("execution") as batch:
        batch.drop_column("trace_context")
