"""api_token.session: the tokens made with the password (sign-up, log-in), which a new
password ends, told apart from those made on purpose by a flag rather than by name

Until now a password change ended the user's tokens named ``signup`` or ``login``, so an
API token a user had named ``login`` ended with them. Existing rows keep what they had:
those two names are sessions.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "api_token",
        sa.Column("session", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.execute(
        "UPDATE api_token SET session = TRUE "
        "WHERE name IN ('signup', 'login') AND user_id IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("api_token") as batch:
        batch.drop_column("session")
