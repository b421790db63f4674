"""Team members: app_user.role (owner or member), and an invitation's token hash and expiry,
the hash unique where set (the accept looks it up)

Until now each tenant had one user, who signed it up: existing rows are owners.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_app_user_invite_hash"


def upgrade() -> None:
    # A constant default: a plain ALTER TABLE ADD COLUMN on both dialects, no table rewrite.
    op.add_column(
        "app_user", sa.Column("role", sa.String(16), nullable=False, server_default="owner")
    )
    op.add_column("app_user", sa.Column("invite_hash", sa.String(64), nullable=True))
    op.add_column(
        "app_user", sa.Column("invite_expires_at", sa.DateTime(timezone=True), nullable=True)
    )
    predicate = sa.text("invite_hash IS NOT NULL")
    op.create_index(
        _INDEX,
        "app_user",
        ["invite_hash"],
        unique=True,
        sqlite_where=predicate,
        postgresql_where=predicate,
    )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="app_user")
    with op.batch_alter_table("app_user") as batch:
        batch.drop_column("invite_expires_at")
        batch.drop_column("invite_hash")
        batch.drop_column("role")
