"""SQLite plans of the engine's queue statements: each reads an index, none the whole
``execution`` table.

SQLite uses a partial index only where the query's ``WHERE`` names the index's own term
(``status = 'queued'``, written into the SQL as a constant); an ``OR`` of a queued and a
running condition once made the reaper's deadline pass read every row, history included, at
every pass (``statements.reap_timed_out``). ``EXPLAIN QUERY PLAN`` reports a whole-table read
as ``SCAN execution`` with no index.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from ipaas.executions.models import ExecutionStatus
from ipaas.stores.sql import run_migrations
from ipaas.stores.sql import statements as q


def _unlocked(query: sa.Select[tuple[str]]) -> sa.Select[tuple[str]]:
    return query  # SQLite's lock_claimable: one writer


STATEMENTS = {
    "claim of a tenant": q.claim_due_of_tenant(_unlocked),
    "next of a tenant": q.next_of_tenant(q.p("p_tenant_id"), _unlocked),
    "tenants to share": q.TENANTS_TO_SHARE,
    "claim by id": q.claim_one(None),
    "finish": q.FINISH,
    "release": q.RELEASE,
    "queue depth of a tenant": q.COUNT_QUEUED_OF_TENANT,
    "queue figures": q.QUEUE_STATS,
    "due retries": q.DUE_RETRIES,
    "reap overdue ready": q.reap_timed_out(_unlocked, q.IS_READY),
    "reap overdue waiting": q.reap_timed_out(_unlocked, q.IS_WAITING),
    "cancel the ready ones": q.CANCEL_PENDING[False][0][0],
    "cancel the waiting ones": q.CANCEL_PENDING[True][0][1],
    "count the ready ones": q.COUNT_QUEUED,
    "reap overdue running": q.reap_timed_out(_unlocked, q.LEASE_EXPIRED),
    "reap cancelled": q.reap_cancelled(_unlocked),
    "reap requeued": q.reap_requeued(_unlocked),
    "pending alerts": q.PENDING_ALERTS,
    "settle an alert": q.SETTLE_ALERT,
}


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plans") / "plans.db"
    run_migrations(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.mark.parametrize("name", list(STATEMENTS))
def test_reads_an_index_never_the_whole_table(migrated: Path, name: str) -> None:
    sql = str(STATEMENTS[name].compile(dialect=sqlite.dialect()))
    with sqlite3.connect(migrated) as conn:
        plan = [
            row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [None] * sql.count("?"))
        ]
    reads = [step for step in plan if " execution" in step or " run" in step or " other" in step]
    assert reads, plan
    assert [step for step in reads if step.startswith("SCAN") and "INDEX" not in step] == [], plan


RETENTION = {
    # (statement, the index it must search, as EXPLAIN QUERY PLAN names it)
    "keep horizon": (q.KEEP_HORIZON, "ix_execution_tenant_id_finished_at (tenant_id=?"),
    "prune older": (q.PRUNE_OLDER, "ix_execution_tenant_id_finished_at (tenant_id=?"),
    "delete step runs": (q.DELETE_STEP_RUNS, "sqlite_autoindex_step_run_1 (execution_id=?)"),
    # Not the tenant's listing index: with ``tenant_id = ?`` in the delete, SQLite (no
    # statistics) searched it, every entry of the tenant's, 31 ms per batch at 150,000.
    "delete executions": (q.DELETE_EXECUTIONS, "sqlite_autoindex_execution_1 (id=?)"),
}


ALERT_WINDOWS = {
    # Every worker's pass, each second: only the windows holding failures, oldest first.
    "due digests": (q.DUE_ALERT_DIGESTS, "ix_alert_window_last_alert_at (last_alert_at<?)"),
    "reopen a window": (q.REOPEN_ALERT_WINDOW, "sqlite_autoindex_alert_window_1 (workflow_id=?)"),
    "hold a failure": (q.HOLD_ALERT, "sqlite_autoindex_alert_window_1 (workflow_id=?)"),
    "settle a digest": (q.SETTLE_ALERT_DIGEST, "sqlite_autoindex_alert_window_1 (workflow_id=?)"),
}
# Claims read only the rows ready to run, oldest first: never past the waiting ones (a
# delay of days, a retry's backoff), which the queue's index leaves out (migration 0016).
QUEUE = {
    "claim of a tenant": (q.claim_due_of_tenant(_unlocked), "ix_execution_queued (tenant_id=?)"),
    "next of a tenant": (
        q.next_of_tenant(q.p("p_tenant_id"), _unlocked),
        "ix_execution_queued (tenant_id=?)",
    ),
    "queue depth of a tenant": (q.COUNT_QUEUED_OF_TENANT, "ix_execution_queued (tenant_id=?)"),
}
RETENTION_AND_ALERT_WINDOWS = RETENTION | ALERT_WINDOWS | QUEUE


@pytest.mark.parametrize("name", list(RETENTION_AND_ALERT_WINDOWS))
def test_reads_by_the_right_index_in_order(migrated: Path, name: str) -> None:
    statement, index = RETENTION_AND_ALERT_WINDOWS[name]
    sql = str(statement.compile(dialect=sqlite.dialect()))
    sql = sql.replace("__[POSTCOMPILE_p_ids]", "?, ?, ?")  # a batch's ids
    with sqlite3.connect(migrated) as conn:
        plan = [
            row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [None] * sql.count("?"))
        ]
    assert any(step.startswith("SEARCH") and index in step for step in plan), plan
    assert not [step for step in plan if "TEMP B-TREE" in step], plan  # no sort


@pytest.mark.parametrize(
    ("status", "workflow", "index"),
    [
        (ExecutionStatus.failed, False, "ix_execution_unsuccessful"),
        (ExecutionStatus.timed_out, False, "ix_execution_unsuccessful"),
        (ExecutionStatus.cancelled, False, "ix_execution_unsuccessful"),
        (ExecutionStatus.succeeded, False, "ix_execution_tenant_id_created_at_id"),
        (None, True, "ix_execution_tenant_id_workflow_id_created_at_id"),
        (ExecutionStatus.failed, True, "ix_execution_tenant_id_workflow_id_created_at_id"),
    ],
)
def test_the_list_by_status_reads_only_those_that_did_not_succeed(
    migrated: Path, status: ExecutionStatus | None, workflow: bool, index: str
) -> None:
    """Filtered by failed, timed_out or cancelled (of every workflow), a page of the list reads
    the partial index of those, not the tenant's history (the listing index), and needs no
    sort; filtered by a workflow too, the workflow's listing index."""
    query = q.list_executions(workflow=workflow, status=status, before=True, since=True)
    sql = str(query.compile(dialect=sqlite.dialect()))
    with sqlite3.connect(migrated) as conn:
        plan = [
            row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [None] * sql.count("?"))
        ]
    assert any(step.startswith("SEARCH") and f"INDEX {index} " in step for step in plan), plan
    assert not [step for step in plan if "TEMP B-TREE" in step], plan
