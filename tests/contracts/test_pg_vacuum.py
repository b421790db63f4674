"""PostgreSQL: ``vacuum_queue`` clears the dead queue entries that a tenant's claim steps over.

Every claim and finish leaves the execution's previous row version dead, with its entry in a
queue index, until a VACUUM. A claim reads the tenant's queued entries oldest first, over
every one claimed since the last VACUUM: with autovacuum off (as on the machine these tests
were written on) the scale-out bench's claims read 100 buffers per execution at first and
~980 after 70,000 executions (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from ipaas.stores.sql import SqlStore
from ipaas.stores.sql.engine import PoolSize, PostgresDatabase
from tests.contracts.conftest import POSTGRES_ONLY
from tests.contracts.test_pg_plans import _asyncpg_dsn, _captured, _nodes, _seed, pg_store
from tests.contracts.test_store import TIMEOUT_S, at, new_account, new_workflow

pytestmark = POSTGRES_ONLY
__all__ = ["pg_store"]  # the shared fixture, re-used here

QUEUED = 3_000
#: Claimed, then finished: two dead row versions each.
CHURNED = 2_500


async def _churned(pg_store: SqlStore, url: str) -> str:
    """A tenant with ``QUEUED`` executions queued, of which its oldest ``CHURNED`` were then
    claimed and finished (a statement each way, as many claims and finishes would leave
    them); its id."""
    account = await new_account(pg_store)
    workflow = await new_workflow(pg_store, account.id)
    await _seed(url, [(account.id, workflow.id)], history=0, backlog=QUEUED)
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        oldest = [f"ex_q_{n}" for n in range(1, CHURNED + 1)]
        await conn.execute(
            "UPDATE execution SET status = 'running', started_at = $2 WHERE id = ANY($1)",
            oldest,
            at(11),
        )
        await conn.execute(
            "UPDATE execution SET status = 'succeeded', finished_at = $2 WHERE id = ANY($1)",
            oldest,
            at(12),
        )
    finally:
        await conn.close()  # its statistics reach the server as it ends
    return account.id


@dataclass(frozen=True)
class _TableStats:
    dead: int
    vacuums: int
    analyzed_at: datetime | None


async def _table_stats(url: str) -> _TableStats:
    """The execution table's dead row versions, VACUUM count and last ANALYZE (by hand)."""
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await conn.fetchrow(
            "SELECT n_dead_tup, vacuum_count, last_analyze FROM pg_stat_user_tables"
            " WHERE relname = 'execution'"
        )
        assert row is not None
        return _TableStats(int(row[0]), int(row[1]), row[2])
    finally:
        await conn.close()


async def _dead_counted(url: str, at_least: int) -> None:
    """Until the statistics show ``at_least`` dead row versions (before PostgreSQL 15 they
    reach the server through the statistics collector, a little later)."""
    deadline = time.monotonic() + 10
    while (await _table_stats(url)).dead < at_least:
        assert time.monotonic() < deadline, "the dead row versions were never counted"
        await asyncio.sleep(0.1)


async def _explained(
    url: str, statements: list[tuple[str, Any]], mode: str = "auto"
) -> list[dict[str, Any]]:
    """The plans of the statements, each run once with EXPLAIN (ANALYZE, BUFFERS) in a
    transaction that is rolled back, with ``plan_cache_mode`` set to ``mode``."""
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        await conn.execute(f"SET plan_cache_mode = {mode}")
        plans = []
        for sql, params in statements:
            transaction = conn.transaction()
            await transaction.start()
            try:
                row = await conn.fetchrow(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *params)
            finally:
                await transaction.rollback()
            assert row is not None
            (report,) = json.loads(row[0])
            plans.append(report["Plan"])
        return plans
    finally:
        await conn.close()


async def _queue_index_buffers(url: str, statements: list[tuple[str, Any]]) -> int:
    """Buffers the statements read of the queued rows' index."""
    return sum(
        node["Shared Hit Blocks"] + node["Shared Read Blocks"]
        for plan in await _explained(url, statements)
        for node in _nodes(plan)
        if node.get("Index Name") == "ix_execution_queued"
    )


async def test_a_vacuum_clears_the_dead_entries_a_claim_steps_over(
    pg_store: SqlStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _churned(pg_store, postgres_url)
    with _captured(pg_store, monkeypatch) as captured:
        kwargs: dict[str, Any] = {"owner": "w1", "lease_until": at(60), "timeout_s": TIMEOUT_S}
        claimed = await pg_store.claim_next(now=at(20), limit=1, tenant_cap=None, **kwargs)
    assert [ex.id for ex in claimed] == [f"ex_q_{CHURNED + 1}"]  # the oldest still queued
    claims = [(sql, params) for sql, params in captured if "UPDATE execution" in sql]
    assert claims
    # The claim is rolled back each time it is explained: the same rows every time.
    before = await _queue_index_buffers(postgres_url, claims)
    await _dead_counted(postgres_url, CHURNED)
    table = await _table_stats(postgres_url)
    assert table.analyzed_at is not None  # by ``_seed``, moments ago

    done = await pg_store.vacuum_queue(min_dead=CHURNED)

    assert done is not None
    assert done.vacuumed
    assert done.dead >= CHURNED
    vacuumed = await _table_stats(postgres_url)
    assert vacuumed.vacuums == table.vacuums + 1
    assert vacuumed.analyzed_at == table.analyzed_at  # analyzed lately: not again
    assert vacuumed.dead < CHURNED / 10
    after = await _queue_index_buffers(postgres_url, claims)
    # Over 2,500 dead entries the claim read 26 buffers of the index, after the VACUUM 3:
    # the way down to the leaf that holds the tenant's oldest queued entry.
    assert before >= 10, before
    assert after <= 3, after


async def test_a_backlog_after_a_vacuum_of_an_idle_queue_is_claimed_through_the_index(
    pg_store: SqlStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VACUUM replaces the sizes the planner works from: with the queue empty, the queued
    rows' index looks empty however many pages it keeps. Without the table's statistics
    beside them (a table never analyzed: autovacuum off), PostgreSQL then planned a claim of
    a later backlog as a bitmap scan of all of the tenant's queued rows and a sort: 370
    buffers per claim with 5,000 queued, against 30. ``vacuum_queue`` analyzes too, unless
    the table was analyzed lately."""
    account = await new_account(pg_store)
    workflow = await new_workflow(pg_store, account.id)
    await _seed(postgres_url, [(account.id, workflow.id)], history=60_000, backlog=QUEUED)
    conn = await asyncpg.connect(_asyncpg_dsn(postgres_url))
    try:
        # Never analyzed: no statistics, and none on record (``_seed`` analyzes).
        await conn.execute("DELETE FROM pg_statistic WHERE starelid = 'execution'::regclass")
        await conn.execute("SELECT pg_stat_reset_single_table_counters('execution'::regclass)")
        for status in ("running", "succeeded"):  # the whole backlog claimed and finished
            await conn.execute("UPDATE execution SET status = $1 WHERE id LIKE 'ex_q_%'", status)
    finally:
        await conn.close()
    await _dead_counted(postgres_url, 2 * QUEUED)
    assert (await _table_stats(postgres_url)).analyzed_at is None
    done = await pg_store.vacuum_queue(min_dead=QUEUED)
    assert done is not None
    assert done.vacuumed
    assert (await _table_stats(postgres_url)).analyzed_at is not None
    conn = await asyncpg.connect(_asyncpg_dsn(postgres_url))
    try:
        await conn.execute(
            "INSERT INTO execution (id, tenant_id, workflow_id, workflow_version, status,"
            " trigger, attempt, cancel_requested, created_at)"
            " SELECT 'ex_b_' || g, $1, $2, 1, 'queued', '{}', 1, false,"
            " $3::timestamptz + g * interval '1 ms' FROM generate_series(1, 5000) g",
            account.id,
            workflow.id,
            at(15),
        )
    finally:
        await conn.close()
    with _captured(pg_store, monkeypatch) as captured:
        kwargs: dict[str, Any] = {"owner": "w1", "lease_until": at(60), "timeout_s": TIMEOUT_S}
        claimed = await pg_store.claim_next(now=at(20), limit=1, tenant_cap=None, **kwargs)
    assert [ex.id for ex in claimed] == ["ex_b_1"]
    claims = [(sql, params) for sql, params in captured if "UPDATE execution" in sql]
    for mode in ("force_custom_plan", "force_generic_plan"):
        plans = await _explained(postgres_url, claims, mode)
        read = [node["Node Type"] for plan in plans for node in _nodes(plan)]
        assert "Bitmap Heap Scan" not in read, (mode, read)
        assert "Sort" not in read, (mode, read)
        assert sum(plan["Shared Hit Blocks"] for plan in plans) < 100, mode


async def test_too_few_dead_row_versions_leave_the_table_alone(
    pg_store: SqlStore, postgres_url: str
) -> None:
    await _churned(pg_store, postgres_url)
    await _dead_counted(postgres_url, CHURNED)
    vacuums = (await _table_stats(postgres_url)).vacuums

    assert await pg_store.vacuum_queue(min_dead=100 * QUEUED) is None

    assert (await _table_stats(postgres_url)).vacuums == vacuums


async def test_a_vacuum_under_way_elsewhere_is_not_waited_for(
    pg_store: SqlStore, postgres_url: str
) -> None:
    """Another VACUUM (autovacuum's, another worker's) holds the table's SHARE UPDATE
    EXCLUSIVE lock: this one passes over the table at once and says it did not run."""
    await _churned(pg_store, postgres_url)
    await _dead_counted(postgres_url, CHURNED)
    vacuums = (await _table_stats(postgres_url)).vacuums
    other = await asyncpg.connect(_asyncpg_dsn(postgres_url))
    try:
        transaction = other.transaction()
        await transaction.start()
        await other.execute("LOCK TABLE execution IN SHARE UPDATE EXCLUSIVE MODE")
        done = await asyncio.wait_for(pg_store.vacuum_queue(min_dead=CHURNED), 5)
        await transaction.rollback()
    finally:
        await other.close()
    assert done is not None
    assert (done.vacuumed, done.skipped) == (False, "busy")
    assert (await _table_stats(postgres_url)).vacuums == vacuums
    again = await pg_store.vacuum_queue(min_dead=CHURNED)
    assert again is not None
    assert (again.vacuumed, again.skipped) == (True, None)


async def test_a_role_that_does_not_own_the_table_does_not_try(
    pg_store: SqlStore, postgres_url: str
) -> None:
    """A VACUUM by another role only warns and does nothing: the store says why instead of
    running one every pass."""
    await _churned(pg_store, postgres_url)
    await _dead_counted(postgres_url, CHURNED)
    admin = await asyncpg.connect(_asyncpg_dsn(postgres_url))
    try:
        await admin.execute(
            "DO $$ BEGIN CREATE ROLE ipaas_test_not_owner LOGIN;"
            " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
    finally:
        await admin.close()
    url = sa.make_url(postgres_url).set(username="ipaas_test_not_owner", password=None)
    database = PostgresDatabase(url, PoolSize(size=1, overflow=0))
    try:
        done = await database.vacuum_queue(min_dead=1)
    finally:
        await database.dispose()
    assert done is not None
    assert (done.vacuumed, done.skipped) == (False, "not_owner")
    assert done.dead >= CHURNED


async def test_autovacuum_off_is_told_once(
    pg_store: SqlStore, postgres_url: str, logs: list[MutableMapping[str, Any]]
) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(postgres_url))
    try:
        autovacuum = await conn.fetchval("SHOW autovacuum")
    finally:
        await conn.close()
    for _ in range(2):
        await pg_store.vacuum_queue(min_dead=100 * QUEUED)
    warned = [log for log in logs if log["event"] == "postgres_autovacuum_off"]
    assert len(warned) == (1 if autovacuum == "off" else 0), (autovacuum, warned)
