"""PostgreSQL plans of the engine's hot statements, with the statistics of a deployment that has
run for a while: most rows are history, a backlog is queued.

asyncpg prepares every statement, and PostgreSQL switches a prepared statement to a *generic*
plan (made without the parameters' values) after a few runs when it looks no dearer. SQLAlchemy
sends even the statuses as parameters, so a generic plan cannot tell how rare ``queued`` is. Each
hot statement is captured as the store sends it and run again (rolled back) with
``plan_cache_mode = force_generic_plan``, its plan reported by ``auto_explain``: none may read
the whole ``execution`` table, as a finish did once the table was analyzed (two sequential
scans per finish: ~10 ms at 56,000 rows, and growing with the history).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from ipaas.executions.models import ExecutionStatus
from ipaas.stores.sql import SqlStore
from ipaas.stores.sql import engine as sql_engine
from tests.contracts.conftest import POSTGRES_ONLY, truncate_all
from tests.contracts.test_store import TIMEOUT_S, at, make_step, new_account, new_workflow

pytestmark = POSTGRES_ONLY

HISTORY = 20_000
BACKLOG = 2_000
RUNNING = 4


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[SqlStore]:
    await truncate_all(postgres_url)
    store = SqlStore(postgres_url)
    await store.startup()
    try:
        yield store
    finally:
        await store.shutdown()


async def _seed(
    url: str, tenants: list[tuple[str, str]], *, history: int = HISTORY, backlog: int = BACKLOG
) -> None:
    """History (succeeded) for every tenant, then the first tenant's backlog (queued) and
    a few running executions owned by ``w1``; then ``ANALYZE``, as autovacuum would."""
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        insert = """
            INSERT INTO execution (id, tenant_id, workflow_id, workflow_version, status,
                trigger, attempt, cancel_requested, created_at, started_at, finished_at,
                lease_owner, lease_expires_at, deadline_at)
            SELECT $1 || g, $2, $3, 1, $4, '{}', 1, false,
                $5::timestamptz + g * interval '1 ms', $6::timestamptz, $7::timestamptz,
                $8, $9::timestamptz, $10::timestamptz
            FROM generate_series(1, $11::int) g
        """
        t0 = at(0)
        for n, (tenant_id, workflow_id) in enumerate(tenants):
            await conn.execute(
                insert, f"ex_h{n}_", tenant_id, workflow_id, "succeeded", t0, t0, t0,
                None, None, None, history // len(tenants),
            )  # fmt: skip
        tenant_id, workflow_id = tenants[0]
        await conn.execute(
            insert, "ex_q_", tenant_id, workflow_id, "queued", at(10), None, None, None, None,
            None, backlog,
        )  # fmt: skip
        await conn.execute(
            insert, "ex_r_", tenant_id, workflow_id, "running", at(5), at(5), None, "w1",
            at(60), at(5) + timedelta(seconds=TIMEOUT_S), RUNNING,
        )  # fmt: skip
        await conn.execute("ANALYZE execution")
    finally:
        await conn.close()


def _asyncpg_dsn(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _generic_plans(
    url: str,
    statements: list[tuple[str, Any]],
    mode: str = "force_generic_plan",
    *,
    analyze: bool = False,
) -> list[dict[str, Any]]:
    """Each statement run again in a transaction that is rolled back, with a generic plan
    (or as ``mode`` says); the plans ``auto_explain`` reported (nested ones too: the claim
    lock's SQL function), with the rows each node read when ``analyze``."""
    notices: list[str] = []
    conn = await asyncpg.connect(_asyncpg_dsn(url))
    conn.add_log_listener(lambda _conn, message: notices.append(message.message))
    try:
        for setting in (
            "LOAD 'auto_explain'",
            "SET auto_explain.log_min_duration = 0",
            "SET auto_explain.log_format = 'json'",
            "SET auto_explain.log_level = 'notice'",
            "SET auto_explain.log_nested_statements = on",
            "SET client_min_messages = notice",
            f"SET plan_cache_mode = {mode}",
            f"SET auto_explain.log_analyze = {'on' if analyze else 'off'}",
        ):
            await conn.execute(setting)
        for sql, params in statements:
            transaction = conn.transaction()
            await transaction.start()
            try:
                await conn.fetch(sql, *params)
            finally:
                await transaction.rollback()
        for _ in range(10):  # notices are dispatched by the event loop
            await asyncio.sleep(0)
    finally:
        await conn.close()
    return [json.loads(n.split("plan:", 1)[1]) for n in notices if "plan:" in n]


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _full_scans(report: dict[str, Any]) -> list[str]:
    return [
        f"{node['Node Type']} on execution in: {report['Query Text'][:120]}"
        for node in _nodes(report["Plan"])
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") == "execution"
    ]


async def test_hot_statements_never_read_the_whole_execution_table(
    pg_store: SqlStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await new_account(pg_store)
    b = await new_account(pg_store)
    wf_a = await new_workflow(pg_store, a.id)
    wf_b = await new_workflow(pg_store, b.id)
    await _seed(postgres_url, [(a.id, wf_a.id), (b.id, wf_b.id)])

    with _captured(pg_store, monkeypatch) as captured:
        kwargs: dict[str, Any] = {"owner": "w1", "lease_until": at(60), "timeout_s": TIMEOUT_S}
        claimed = await pg_store.claim_execution("ex_q_1", now=at(20), tenant_cap=None, **kwargs)
        assert claimed is not None
        assert await pg_store.claim_next(now=at(20), limit=3, tenant_cap=None, **kwargs)
        await _finish_two(pg_store, a.id, kwargs)
        assert await pg_store.renew_leases(["ex_r_3"], owner="w1", lease_until=at(90))
        await pg_store.cancel_requested(["ex_r_3"])
        await pg_store.reap(now=at(30))
        await pg_store.queue_stats(now=at(30))
        await pg_store.pending_alerts(limit=200)  # every worker, each second

    hot = [(sql, params) for sql, params in captured if "execution" in sql]
    assert len(hot) >= 8
    reports = await _generic_plans(postgres_url, hot)
    assert len(reports) >= len(hot)  # every statement's plan was seen
    assert [scan for report in reports for scan in _full_scans(report)] == []


#: What a claim, a finish and a lease guard may read of ``execution``: its rows by id and the
#: queue's partial indexes; never the listing index (every execution of the tenant, history
#: first) nor a whole table.
QUEUE_READS = {"pk_execution", "ix_execution_queued", "ix_execution_running"}


@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
async def test_claims_read_only_the_queue_when_the_backlog_outnumbers_history(
    pg_store: SqlStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """With most rows queued (a backlog) the planner once claimed through the listing index
    (tenant_id, created_at, id), reading every finished execution of the tenant before its
    first queued one, and guarded a finish through the whole running range of the
    (status, ...) index instead of the primary key: ~3,000 buffers per finish at 16
    concurrent claimers draining 5,000 executions (docs/benchmarks.md).

    ``claim_next``: see the next test."""
    a = await new_account(pg_store)
    wf = await new_workflow(pg_store, a.id)
    await _seed(postgres_url, [(a.id, wf.id)], history=BACKLOG, backlog=HISTORY)
    with _captured(pg_store, monkeypatch) as captured:
        kwargs: dict[str, Any] = {"owner": "w1", "lease_until": at(60), "timeout_s": TIMEOUT_S}
        assert await pg_store.claim_execution("ex_q_1", now=at(20), tenant_cap=8, **kwargs)
        await _finish_two(pg_store, a.id, kwargs)
        assert await pg_store.release_execution("ex_r_3", owner="w1")

    hot = [(sql, params) for sql, params in captured if "UPDATE execution" in sql]
    assert len(hot) >= 4
    reports = await _generic_plans(postgres_url, hot, mode)
    assert len(reports) >= len(hot)
    assert _beyond_the_queue(reports) == set()


async def test_a_share_claim_reads_only_the_queue_when_the_backlog_outnumbers_history(
    pg_store: SqlStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``claim_next``'s claim of a tenant's share locks up to ``p_limit`` of its oldest due
    rows and claims as many of them as its room under the cap allows. With the room as the
    LIMIT (an expression: the planner guesses a tenth of the rows) it read the whole table
    whenever queued rows were common, at every call. Its plan is a custom one (made with
    the parameters' values: a generic plan cannot know ``p_limit``, looks dearer and is not
    chosen), and must read the queue only."""
    a = await new_account(pg_store)
    wf = await new_workflow(pg_store, a.id)
    await _seed(postgres_url, [(a.id, wf.id)], history=BACKLOG, backlog=HISTORY)
    with _captured(pg_store, monkeypatch) as captured:
        kwargs: dict[str, Any] = {"owner": "w1", "lease_until": at(60), "timeout_s": TIMEOUT_S}
        claimed = await pg_store.claim_next(now=at(20), limit=3, tenant_cap=RUNNING + 2, **kwargs)
        assert [ex.id for ex in claimed] == ["ex_q_1", "ex_q_2"]  # the room, oldest first

    hot = [(sql, params) for sql, params in captured if "execution" in sql]
    assert len(hot) >= 2
    reports = await _generic_plans(postgres_url, hot, "force_custom_plan")
    assert len(reports) >= len(hot)
    assert _beyond_the_queue(reports) == set()


async def test_claims_never_read_past_the_executions_that_wait(
    pg_store: SqlStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tenant's 2,000 oldest queued executions wait (a delay of a day), 3 more are
    ready: each claim read every waiting one before the first ready one while the queue's
    index held them (7.7 ms a claim on SQLite at 20,000). No node of any claim may filter
    rows out of ``execution`` now, and the waiting ones are not claimed."""
    a = await new_account(pg_store)
    wf = await new_workflow(pg_store, a.id)
    await _seed(postgres_url, [(a.id, wf.id)], backlog=BACKLOG + 3)
    conn = await asyncpg.connect(_asyncpg_dsn(postgres_url))
    try:
        await conn.execute(
            "UPDATE execution SET next_attempt_at = $1 WHERE id LIKE 'ex_q_%' "
            "AND substr(id, 6)::int <= $2",
            at(86_400),
            BACKLOG,
        )
        await conn.execute("ANALYZE execution")
    finally:
        await conn.close()
    with _captured(pg_store, monkeypatch) as captured:
        kwargs: dict[str, Any] = {"owner": "w1", "lease_until": at(60), "timeout_s": TIMEOUT_S}
        claimed = await pg_store.claim_next(now=at(20), limit=2, tenant_cap=None, **kwargs)
        assert [ex.id for ex in claimed] == [f"ex_q_{BACKLOG + 1}", f"ex_q_{BACKLOG + 2}"]
        await _finish_two(pg_store, a.id, kwargs)  # the next ready one in ex_r_1's place
        assert await pg_store.count_queued(a.id) == 0

    hot = [(sql, params) for sql, params in captured if "execution" in sql]
    reports = await _generic_plans(postgres_url, hot, "force_custom_plan", analyze=True)
    assert len(reports) >= len(hot)
    # Lookups by id (a guard's status check) may drop their one row; nothing else may.
    filtered = [
        (node.get("Index Name", node["Node Type"]), node["Rows Removed by Filter"])
        for report in reports
        for node in _nodes(report["Plan"])
        if node.get("Relation Name") == "execution"
        and node.get("Rows Removed by Filter")
        and node.get("Index Name") != "pk_execution"
    ]
    assert filtered == []


def _beyond_the_queue(reports: list[dict[str, Any]]) -> set[str]:
    """What the plans read of ``execution`` besides ``QUEUE_READS``: other indexes by name,
    other reads by node type (``Seq Scan``)."""
    read = {
        node.get("Index Name", node["Node Type"])
        for report in reports
        for node in _nodes(report["Plan"])
        if node.get("Relation Name") == "execution"
    }
    return read - QUEUE_READS - {"ModifyTable"}


async def _finish_two(pg_store: SqlStore, tenant_id: str, kwargs: dict[str, Any]) -> None:
    """``ex_r_1`` finished with its step and the tenant's next execution claimed in its
    place; ``ex_r_2`` finished without one."""
    running = await pg_store.get_execution(tenant_id, "ex_r_1")
    assert running is not None
    finished, nxt = await pg_store.finish_and_claim_next(
        "ex_r_1", status=ExecutionStatus.succeeded, error=None, finished_at=at(21),
        step=make_step(running), **kwargs,
    )  # fmt: skip
    assert finished
    assert nxt is not None
    assert await pg_store.finish_execution(
        "ex_r_2", owner="w1", status=ExecutionStatus.failed, error="x", finished_at=at(21)
    )


@contextlib.contextmanager
def _captured(
    pg_store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[tuple[str, Any]]]:
    """The SQL and parameters of every statement the store sends while the block runs."""
    captured: list[tuple[str, Any]] = []

    def capture(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, many: bool
    ) -> None:
        if not many:
            captured.append((statement, tuple(parameters or ())))

    engine = pg_store._db._engine.sync_engine  # type: ignore[attr-defined]
    sa.event.listen(engine, "before_cursor_execute", capture)
    # The statements run on the driver itself bypass SQLAlchemy's events.
    on_asyncpg = sql_engine._on_asyncpg

    def capture_on_driver(conn: sa.Connection, sql: str, method: str, args: Any) -> Any:
        if method != "executemany":
            captured.append((sql, tuple(args)))
        return on_asyncpg(conn, sql, method, args)

    with monkeypatch.context() as patch:
        patch.setattr(sql_engine, "_on_asyncpg", capture_on_driver)
        try:
            yield captured
        finally:
            sa.event.remove(engine, "before_cursor_execute", capture)


@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
async def test_the_failed_list_reads_only_the_failures(
    pg_store: SqlStore, postgres_url: str, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """``GET /api/executions?status=failed`` (the console's failed filter, a bulk retry's
    scan) read the tenant's listing index from the newest execution on, the whole history
    when failures are rare (12 ms a page at 300,000; 3 ms with the partial index)."""
    a = await new_account(pg_store)
    wf = await new_workflow(pg_store, a.id)
    await _seed(postgres_url, [(a.id, wf.id)], backlog=0)
    conn = await asyncpg.connect(_asyncpg_dsn(postgres_url))
    try:
        await conn.execute(
            "UPDATE execution SET status = 'failed' WHERE id IN ('ex_h0_7', 'ex_h0_70')"
        )
        await conn.execute("ANALYZE execution")
    finally:
        await conn.close()
    with _captured(pg_store, monkeypatch) as captured:
        page = await pg_store.list_executions(a.id, status=ExecutionStatus.failed, limit=50)
        assert sorted(ex.id for ex in page.items) == ["ex_h0_7", "ex_h0_70"]

    listed = [(sql, params) for sql, params in captured if "FROM execution" in sql]
    assert len(listed) == 1
    [report] = await _generic_plans(postgres_url, listed, mode)
    read = {
        node.get("Index Name", node["Node Type"])
        for node in _nodes(report["Plan"])
        if node.get("Relation Name") == "execution"
    }
    assert read == {"ix_execution_unsuccessful"}
