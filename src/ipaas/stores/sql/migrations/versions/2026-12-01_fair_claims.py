"""Fair claims: an execution index on (status, tenant_id, created_at, id)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_execution_status_tenant_id_created_at_id"


def upgrade() -> None:
    op.create_index(_INDEX, "execution", ["status", "tenant_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="execution")
