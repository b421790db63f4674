"""Failure alerts' pacing: alert_window, one row per workflow whose failures alerted (when
the last alert went out, and the failures held since for the next one, a digest), with a
partial index on the windows holding failures

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_alert_window_last_alert_at"


def upgrade() -> None:
    op.create_table(
        "alert_window",
        sa.Column("workflow_id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("last_alert_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.Column("held_execution_id", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name="fk_alert_window_tenant_id_tenant"
        ),
        sa.PrimaryKeyConstraint("workflow_id", name="pk_alert_window"),
    )
    predicate = sa.text("held > 0")
    op.create_index(
        _INDEX,
        "alert_window",
        ["last_alert_at"],
        sqlite_where=predicate,
        postgresql_where=predicate,
    )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="alert_window")
    op.drop_table("alert_window")
