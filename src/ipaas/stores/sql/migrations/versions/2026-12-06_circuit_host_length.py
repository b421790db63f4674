"""circuit.host holds the longest key the breaker makes: a host name of 253 characters (the
most DNS allows; a longer one is refused before any call) and a port, ``:65535``

It was VARCHAR(255): on PostgreSQL a failure on a host of 250 characters or more with a
port could not be recorded (``value too long``), so its circuit never opened there.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # PostgreSQL: a longer VARCHAR is a change of the catalog only, no table rewrite.
    # SQLite: the table is copied (it holds a row per tenant and failing host).
    with op.batch_alter_table("circuit") as batch:
        batch.alter_column("host", type_=sa.String(300), existing_type=sa.String(255))


def downgrade() -> None:
    with op.batch_alter_table("circuit") as batch:
        batch.alter_column("host", type_=sa.String(255), existing_type=sa.String(300))
