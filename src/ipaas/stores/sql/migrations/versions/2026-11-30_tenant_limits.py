"""tenant: per-tenant overrides of the intake guard rails (rate, burst, queue depth) and
max_concurrency

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    ("rate_limit", sa.Float),
    ("rate_burst", sa.Integer),
    ("max_queued", sa.Integer),
    ("max_concurrency", sa.Integer),
)


def upgrade() -> None:
    # Nullable columns without defaults: a plain ALTER TABLE ADD COLUMN on both dialects.
    for name, type_ in _COLUMNS:
        op.add_column("tenant", sa.Column(name, type_(), nullable=True))


def downgrade() -> None:
    # Batch mode: SQLite before 3.35 cannot drop a column in place; Alembic copies the table.
    with op.batch_alter_table("tenant") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
