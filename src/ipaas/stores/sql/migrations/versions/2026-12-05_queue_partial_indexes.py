"""Queue indexes hold only queued or running rows: (tenant_id, created_at, id) WHERE status =
'queued' and (tenant_id) WHERE status = 'running', in place of (status, created_at, id) and
(status, tenant_id, created_at, id)

With ``status`` leading an index, PostgreSQL's planner had two bad choices open to it:
- a claim of a tenant's oldest due execution read the listing index (tenant_id, created_at,
  id) and filtered on the status whenever queued rows looked common (a backlog), reading
  every finished execution of the tenant before the first queued one: O(history) per claim;
- the finish's guard (``id = ? AND status = 'running'``) read the (status, ...) index's
  whole running range, dead entries and all, instead of the primary key.
A partial index on the queued rows is cheaper for the claim at any statistics, and with no
index led by ``status`` the guard has only the primary key. A webhook's insert and an
execution's claim write one index entry fewer each, its finish two fewer (a row version
enters a queue index only while its status is the index's).

The oldest queued execution over every tenant (the queue's figures for /metrics, the
reaper's overdue rows) now reads the tenants' queued entries whole, as the reaper already
did; nothing on the path of an execution needs that order.

On PostgreSQL the indexes are built while the table is locked against writes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = {
    "ix_execution_status_created_at_id": ["status", "created_at", "id"],
    "ix_execution_status_tenant_id_created_at_id": ["status", "tenant_id", "created_at", "id"],
}
#: name -> (columns, status)
_NEW = {
    "ix_execution_queued": (["tenant_id", "created_at", "id"], "queued"),
    "ix_execution_running": (["tenant_id"], "running"),
}


def upgrade() -> None:
    for name, (columns, status) in _NEW.items():
        predicate = sa.text(f"status = '{status}'")
        op.create_index(
            name, "execution", columns, sqlite_where=predicate, postgresql_where=predicate
        )
    for name in _OLD:
        op.drop_index(name, table_name="execution")


def downgrade() -> None:
    for name, columns in _OLD.items():
        op.create_index(name, "execution", columns)
    for name in _NEW:
        op.drop_index(name, table_name="execution")
