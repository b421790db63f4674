"""The queue's index holds only the executions ready to run: (tenant_id, created_at, id)
WHERE status = 'queued' AND next_attempt_at IS NULL, in place of WHERE status = 'queued'

An execution waiting (a retry's backoff, a delay step's wait of up to 30 days) stayed in
the queue's index, and every claim of its tenant read past it to the first due one: with
20,000 executions of one tenant waiting, a claim took 7.7 ms per execution claimed on
SQLite against 0.12 ms with none (docs/benchmarks.md, "Thirty-second session"). Waiting
rows are now found by the ``next_attempt_at`` index alone; the due pass clears a wait that
has come, which puts the row into this index.

On PostgreSQL the index is rebuilt while the table is locked against writes.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ix_execution_queued"
_COLUMNS = ["tenant_id", "created_at", "id"]
_READY = "status = 'queued' AND next_attempt_at IS NULL"
_QUEUED = "status = 'queued'"


def _rebuild(predicate: str) -> None:
    op.drop_index(_NAME, table_name="execution")
    where = sa.text(predicate)
    op.create_index(_NAME, "execution", _COLUMNS, sqlite_where=where, postgresql_where=where)


def upgrade() -> None:
    _rebuild(_READY)


def downgrade() -> None:
    _rebuild(_QUEUED)
