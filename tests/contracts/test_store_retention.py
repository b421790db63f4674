"""Retention: pruning finished executions, a SQLite file that stops growing, and the queue's
dead row versions (PostgreSQL's VACUUM itself: test_pg_vacuum.py)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import timedelta
from pathlib import Path

from ipaas.executions.models import ExecutionStatus
from ipaas.stores import Store
from ipaas.stores.sql import SqlStore, run_migrations
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


async def _finished(
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
        done = await _finished(store, acct, wf, 5)
        theirs = await _finished(store, other, wf_other, 3)
        queued = await new_execution(store, acct.id, wf.id, created_at=T0)
        running = await new_execution(store, acct.id, wf.id, created_at=T0)
        await claim(store, running.id)
        assert await store.prune_executions(acct.id, finished_before=None, keep=2, limit=10) == 3
        for gone in done[:3]:
            assert await store.get_execution(acct.id, gone) is None
            assert await store.list_step_runs(acct.id, gone) == []
        for kept in (*done[3:], queued.id, running.id):
            assert await store.get_execution(acct.id, kept) is not None
        assert len(await store.list_step_runs(acct.id, done[4])) == 1
        for kept in theirs:  # another tenant's rows are never touched
            assert await store.get_execution(other.id, kept) is not None
        assert await store.prune_executions(acct.id, finished_before=None, keep=2, limit=10) == 0

    async def test_older_than_in_batches(self, store: Store, acct: Account, wf: Workflow) -> None:
        done = await _finished(store, acct, wf, 5)
        before = at(3)  # finished at 0.5, 1.5 and 2.5 s are older
        assert (
            await store.prune_executions(acct.id, finished_before=before, keep=None, limit=2) == 2
        )
        assert (
            await store.prune_executions(acct.id, finished_before=before, keep=None, limit=2) == 1
        )
        assert (
            await store.prune_executions(acct.id, finished_before=before, keep=None, limit=2) == 0
        )
        assert [await store.get_execution(acct.id, i) is not None for i in done] == [
            False, False, False, True, True,
        ]  # fmt: skip
        assert await store.list_tenant_ids() == [acct.id]
        await store.compact()


async def test_nothing_to_vacuum_below_the_threshold(
    store: Store, acct: Account, wf: Workflow
) -> None:
    """Every store answers; only PostgreSQL keeps dead row versions, and 6 are too few."""
    await _finished(store, acct, wf, 3)
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
            await _finished(store, account, workflow, 300, start=cycle * 1000)
            filled.append(_size(path))
            while await store.prune_executions(
                account.id, finished_before=None, keep=10, limit=100
            ):
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
