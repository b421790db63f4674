"""Retention: pruning finished executions, a SQLite file that stops growing, and the queue's
dead row versions (PostgreSQL's VACUUM itself: test_pg_vacuum.py)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ipaas.executions.models import ExecutionStatus
from ipaas.stores import Store
from ipaas.stores.sql import SqlStore, run_migrations
from ipaas.stores.sql import engine as sql_engine
from ipaas.workflows.models import Workflow
from tests.contracts.test_store import (
    T0,
    Account,
    acct,
    at,
    claim,
    make_step,
    new_account,
    new_execution,
    new_workflow,
    wf,
)

__all__ = ["acct", "wf"]  # the shared fixtures, re-used here


async def new_finished(
    store: Store, acct: Account, wf: Workflow, n: int, *, start: int = 0
) -> list[str]:
    """``n`` succeeded executions with a step run each, finished at ``at(start + i)``."""
    ids = []
    for i in range(start, start + n):
        ex = await new_execution(store, acct.id, wf.id, created_at=at(i))
        await claim(store, ex.id, now=at(i))
        assert await store.finish_execution(
            ex.id,
            owner="w1",
            status=ExecutionStatus.succeeded,
            error=None,
            finished_at=at(i) + timedelta(seconds=0.5),
            step=make_step(ex),
        )
        ids.append(ex.id)
    return ids


class TestPrune:
    async def test_beyond_the_newest_keep(self, store: Store, acct: Account, wf: Workflow) -> None:
        other = await new_account(store)
        wf_other = await new_workflow(store, other.id)
        done = await new_finished(store, acct, wf, 5)
        theirs = await new_finished(store, other, wf_other, 3)
        queued = await new_execution(store, acct.id, wf.id, created_at=T0)
        running = await new_execution(store, acct.id, wf.id, created_at=T0)
        await claim(store, running.id)
        horizon = await store.keep_horizon(acct.id, 2)
        assert horizon == at(3.5)  # the second newest's finish
        assert await store.prune_executions(acct.id, finished_before=horizon, limit=10) == 3
        for gone in done[:3]:
            assert await store.get_execution(acct.id, gone) is None
            assert await store.list_step_runs(acct.id, gone) == []
        for kept in (*done[3:], queued.id, running.id):
            assert await store.get_execution(acct.id, kept) is not None
        assert len(await store.list_step_runs(acct.id, done[4])) == 1
        for kept in theirs:  # another tenant's rows are never touched
            assert await store.get_execution(other.id, kept) is not None
        assert await store.keep_horizon(acct.id, 2) is None  # exactly two are left
        assert await store.keep_horizon(acct.id, 1) == at(4.5)
        assert await store.prune_executions(acct.id, finished_before=horizon, limit=10) == 0

    async def test_no_horizon_within_the_limit(
        self, store: Store, acct: Account, wf: Workflow
    ) -> None:
        assert await store.keep_horizon(acct.id, 1) is None  # none finished
        await new_finished(store, acct, wf, 3)
        await new_execution(store, acct.id, wf.id)  # queued: never counted
        assert await store.keep_horizon(acct.id, 3) is None
        assert await store.keep_horizon(acct.id, 100) is None

    async def test_older_than_in_batches(self, store: Store, acct: Account, wf: Workflow) -> None:
        done = await new_finished(store, acct, wf, 5)
        before = at(3)  # finished at 0.5, 1.5 and 2.5 s are older
        assert await store.prune_executions(acct.id, finished_before=before, limit=2) == 2
        assert await store.prune_executions(acct.id, finished_before=before, limit=2) == 1
        assert await store.prune_executions(acct.id, finished_before=before, limit=2) == 0
        assert [await store.get_execution(acct.id, i) is not None for i in done] == [
            False, False, False, True, True,
        ]  # fmt: skip
        assert await store.list_tenant_ids() == [acct.id]
        await store.compact()


async def test_nothing_to_vacuum_below_the_threshold(
    store: Store, acct: Account, wf: Workflow
) -> None:
    """Every store answers; only PostgreSQL keeps dead row versions, and 6 are too few."""
    await new_finished(store, acct, wf, 3)
    assert await store.vacuum_queue(min_dead=1_000_000) is None
    if not (isinstance(store, SqlStore) and str(store._url).startswith("postgresql")):
        assert await store.vacuum_queue(min_dead=1) is None


def _size(path: Path) -> int:
    return sum(os.path.getsize(f) for f in (path, Path(f"{path}-wal")) if os.path.exists(f))


async def test_sqlite_file_stays_bounded_over_fill_and_prune_cycles(tmp_path: Path) -> None:
    path = tmp_path / "ipaas.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(run_migrations, url)
    store = SqlStore(url)
    await store.startup()
    try:
        account = await new_account(store)
        workflow = await new_workflow(store, account.id)
        filled, sizes = [], []
        for cycle in range(6):
            await new_finished(store, account, workflow, 300, start=cycle * 1000)
            filled.append(_size(path))
            horizon = await store.keep_horizon(account.id, 10)
            assert horizon is not None
            while await store.prune_executions(account.id, finished_before=horizon, limit=100):
                pass
            await store.compact()
            sizes.append(_size(path))
        # Pruning gives the space back to the file system (file and WAL) ...
        assert all(after < before / 2 for before, after in zip(filled, sizes, strict=True)), (
            filled,
            sizes,
        )
        # ... so the file does not grow from cycle to cycle.
        assert max(sizes[1:]) <= sizes[0] * 1.25, sizes
        assert max(filled[1:]) <= filled[0] * 1.25, filled
    finally:
        await store.shutdown()


def test_migrations_switch_an_existing_database_to_incremental_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()  # auto_vacuum=NONE
    run_migrations(f"sqlite+aiosqlite:///{path}")
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    finally:
        connection.close()


def test_sqlite_compaction_frees_pages_in_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each step is a transaction of its own: the writer gets the lock in between, instead
    of waiting for the whole compaction (288 ms for 50,000 pruned executions in one go)."""
    path = tmp_path / "ipaas.db"
    run_migrations(f"sqlite+aiosqlite:///{path}")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE filler (x BLOB)")
        conn.executemany("INSERT INTO filler VALUES (zeroblob(3000))", [()] * 250)
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM filler")
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    assert free >= 250
    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sql_engine, "SQLITE_VACUUM_STEP_PAGES", 100)
    monkeypatch.setattr(sql_engine.sqlite3, "connect", traced)
    sql_engine._compact_sqlite(str(path))
    steps = [s for s in statements if s.startswith("PRAGMA incremental_vacuum")]
    assert steps[:2] == ["PRAGMA incremental_vacuum(100);"] * 2, statements
    assert len(steps) == -(-free // 100), statements
    with connect(path) as conn:
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
