"""PostgreSQL: ipaas_running_after_claim_lock(tenant_id), so a claim by id is one statement

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

A claim by id must count the tenant's running executions after taking the tenant's claim
lock, or two claimers can both see room under the cap. As separate statements that was
BEGIN, the lock, the UPDATE and COMMIT: four round trips, the lock held across two of them,
and with one busy tenant every worker's claims queued behind it. In one statement the count
would be read in the snapshot taken before the lock was granted; a VOLATILE SQL function
takes a fresh snapshot for each of its statements, so the count it returns sees every claim
committed before the lock was released. Called from the claim's ``WHERE``, the lock is held
only while that statement runs (``stores/sql/engine.py``, ``running_under_claim_lock``).

SQLite needs nothing: one writer, no concurrent claim.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 8097 = 0x1FA1, the claim locks' first key (``_CLAIM_LOCK_SPACE`` in stores/sql/engine.py).
_CREATE = """
CREATE OR REPLACE FUNCTION ipaas_running_after_claim_lock(p_tenant_id text) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT pg_advisory_xact_lock(8097, hashtext(p_tenant_id));
    SELECT count(*) FROM execution WHERE tenant_id = p_tenant_id AND status = 'running';
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS ipaas_running_after_claim_lock(text)")
