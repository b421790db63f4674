"""Retries and circuit breakers: execution.next_attempt_at and replay_of, step_run's
error_code, status_code and next_attempt_at, and the circuit table

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable columns only: a plain ALTER TABLE ADD COLUMN on both dialects, no rewrite.
    op.add_column(
        "execution", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("execution", sa.Column("replay_of", sa.String(64), nullable=True))
    op.create_index("ix_execution_next_attempt_at", "execution", ["next_attempt_at"])
    op.add_column("step_run", sa.Column("error_code", sa.String(32), nullable=True))
    op.add_column("step_run", sa.Column("status_code", sa.Integer(), nullable=True))
    op.add_column(
        "step_run", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_table(
        "circuit",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"], name="fk_circuit_tenant_id_tenant"),
        sa.PrimaryKeyConstraint("tenant_id", "host", name="pk_circuit"),
    )
    op.create_index("ix_circuit_state", "circuit", ["state"])


def downgrade() -> None:
    op.drop_index("ix_circuit_state", table_name="circuit")
    op.drop_table("circuit")
    op.drop_index("ix_execution_next_attempt_at", table_name="execution")
    # Batch mode: SQLite before 3.35 cannot drop a column in place; Alembic copies the table.
    with op.batch_alter_table("step_run") as batch:
        batch.drop_column("next_attempt_at")
        batch.drop_column("status_code")
        batch.drop_column("error_code")
    with op.batch_alter_table("execution") as batch:
        batch.drop_column("replay_of")
        batch.drop_column("next_attempt_at")
