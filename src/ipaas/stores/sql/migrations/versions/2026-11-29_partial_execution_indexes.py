"""Partial execution indexes: (workflow_id, dedup_key), next_attempt_at and
(tenant_id, finished_at) leave out the rows where the column is NULL

Most executions have no idempotency key, no pending retry and, while new, no finish, so a
webhook's INSERT no longer writes to these three indexes (~28 % less time per row in a
micro-benchmark, docs/benchmarks.md). Every query using them compares the column, which
implies IS NOT NULL, so each is still usable. On PostgreSQL the indexes are rebuilt: the
table is locked against writes while that runs.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: name -> (columns, unique, the column that must be set)
_INDEXES = {
    "ix_execution_workflow_id_dedup_key": (["workflow_id", "dedup_key"], True, "dedup_key"),
    "ix_execution_next_attempt_at": (["next_attempt_at"], False, "next_attempt_at"),
    "ix_execution_tenant_id_finished_at": (["tenant_id", "finished_at"], False, "finished_at"),
}


def upgrade() -> None:
    for name, (columns, unique, column) in _INDEXES.items():
        predicate = sa.text(f"{column} IS NOT NULL")
        op.drop_index(name, table_name="execution")
        op.create_index(
            name,
            "execution",
            columns,
            unique=unique,
            sqlite_where=predicate,
            postgresql_where=predicate,
        )


def downgrade() -> None:
    for name, (columns, unique, _column) in _INDEXES.items():
        op.drop_index(name, table_name="execution")
        op.create_index(name, "execution", columns, unique=unique)
