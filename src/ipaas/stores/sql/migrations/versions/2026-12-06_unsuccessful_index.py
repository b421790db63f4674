"""A partial index on the executions that did not succeed: (tenant_id, created_at, id) WHERE
status IN ('cancelled', 'failed', 'timed_out')

The executions list filtered by one of those statuses, of every workflow (the console's
failed filter, which refreshes itself, and a bulk retry's scan), read the tenant's listing
index from its newest execution until it had a page of matches: the tenant's whole history
when failures are rare. Filtered by a workflow too, it reads that workflow's listing index
as before. Succeeded rows never enter this index, so webhooks and their executions write nothing
more. On PostgreSQL it is built while the table is locked against writes.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = {"ix_execution_unsuccessful": ["tenant_id", "created_at", "id"]}
_PREDICATE = "status IN ('cancelled', 'failed', 'timed_out')"


def upgrade() -> None:
    predicate = sa.text(_PREDICATE)
    for name, columns in _INDEXES.items():
        op.create_index(
            name, "execution", columns, sqlite_where=predicate, postgresql_where=predicate
        )


def downgrade() -> None:
    for name in _INDEXES:
        op.drop_index(name, table_name="execution")
