"""initial schema: tenants, users, tokens, credentials, workflows, executions, step runs

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id(name: str = "id") -> sa.Column[str]:
    return sa.Column(name, sa.String(64), nullable=False)


def _tenant_id() -> sa.Column[str]:
    return sa.Column("tenant_id", sa.String(64), nullable=False)


def _at(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"], ["tenant.id"], name=f"fk_{table}_tenant_id_tenant"
    )


def upgrade() -> None:
    op.create_table(
        "tenant",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_tenant"),
    )
    op.create_table(
        "app_user",
        _id(),
        _tenant_id(),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_app_user"),
        _tenant_fk("app_user"),
    )
    op.create_index("ix_app_user_email", "app_user", ["email"], unique=True)
    op.create_index("ix_app_user_tenant_id", "app_user", ["tenant_id"])

    op.create_table(
        "api_token",
        _id(),
        _tenant_id(),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("token_hash", sa.String(128), nullable=False),
        _at("created_at"),
        _at("expires_at", nullable=True),
        _at("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_token"),
        _tenant_fk("api_token"),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"], name="fk_api_token_user_id_app_user"),
    )
    op.create_index("ix_api_token_token_hash", "api_token", ["token_hash"], unique=True)
    op.create_index("ix_api_token_tenant_id_created_at", "api_token", ["tenant_id", "created_at"])

    op.create_table(
        "credential",
        _id(),
        _tenant_id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("secret_ciphertext", sa.Text(), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_credential"),
        _tenant_fk("credential"),
    )
    op.create_index("ix_credential_tenant_id_created_at", "credential", ["tenant_id", "created_at"])

    op.create_table(
        "workflow",
        _id(),
        _tenant_id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.JSON(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        _at("created_at"),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_workflow"),
        _tenant_fk("workflow"),
    )
    op.create_index("ix_workflow_tenant_id_created_at", "workflow", ["tenant_id", "created_at"])

    op.create_table(
        "workflow_version",
        _id("workflow_id"),
        sa.Column("version", sa.Integer(), nullable=False),
        _tenant_id(),
        sa.Column("trigger", sa.JSON(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("workflow_id", "version", name="pk_workflow_version"),
        _tenant_fk("workflow_version"),
    )

    op.create_table(
        "execution",
        _id(),
        _tenant_id(),
        sa.Column("workflow_id", sa.String(64), nullable=False),
        sa.Column("workflow_version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        _at("lease_expires_at", nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        _at("created_at"),
        _at("started_at", nullable=True),
        _at("finished_at", nullable=True),
        _at("deadline_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_execution"),
        _tenant_fk("execution"),
    )
    op.create_index(
        "ix_execution_tenant_id_created_at_id", "execution", ["tenant_id", "created_at", "id"]
    )
    op.create_index(
        "ix_execution_tenant_id_workflow_id_created_at_id",
        "execution",
        ["tenant_id", "workflow_id", "created_at", "id"],
    )
    op.create_index(
        "ix_execution_status_created_at_id", "execution", ["status", "created_at", "id"]
    )

    op.create_table(
        "step_run",
        _id("execution_id"),
        sa.Column("step_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        _tenant_id(),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input", sa.JSON(), nullable=True),
        sa.Column("output", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _at("started_at"),
        _at("finished_at"),
        sa.PrimaryKeyConstraint("execution_id", "step_id", "attempt", name="pk_step_run"),
        sa.ForeignKeyConstraint(
            ["execution_id"], ["execution.id"], name="fk_step_run_execution_id_execution"
        ),
        _tenant_fk("step_run"),
    )


def downgrade() -> None:
    # Dropping a table drops its indexes; children before parents for the foreign keys.
    for table in (
        "step_run",
        "execution",
        "workflow_version",
        "workflow",
        "credential",
        "api_token",
        "app_user",
        "tenant",
    ):
        op.drop_table(table)
