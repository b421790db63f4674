"""How the SQL ``Database`` runs ops: grouped SQLite commits, failures, cancellation, shutdown.

Tests that need a write batch to be *held* open (so the next ops queue behind it and form
one batch) hold SQLite's write lock from a connection of their own, as a writer in another
process would: the batch then waits for it on the writer thread (SQLite's batches otherwise
run on the event loop). PostgreSQL runs ops on the event loop and has no batches, so those
tests are SQLite's only.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest
import sqlalchemy as sa
from alembic import command as alembic_command

from ipaas.errors import StoreUnavailable
from ipaas.stores.sql import engine, migrations
from ipaas.stores.sql import tables as t
from ipaas.stores.sql.engine import (
    PG_CONNECT_TIMEOUT_S,
    PG_LOCK_TIMEOUT_S,
    Database,
    PoolSize,
    RowFetch,
    RowInsert,
    SqliteDatabase,
    create_database,
)
from tests.contracts.conftest import (
    POSTGRES_ONLY,
    POSTGRES_URL,
    in_thread,
    postgres_database,
    sqlite_room,
    truncate_all,
)
from tests.process.faultproxy import FaultProxy

T0 = datetime(2026, 3, 1, tzinfo=UTC)
#: Generous: only a broken implementation ever waits this long.
DEADLINE_S = 10.0


def _insert(tenant_id: str, name: str = "x") -> Callable[[sa.Connection], None]:
    def op(conn: sa.Connection) -> None:
        conn.execute(sa.insert(t.tenant), {"id": tenant_id, "name": name, "created_at": T0})

    return op


def _tenant_ids(conn: sa.Connection) -> set[str]:
    return set(conn.execute(sa.select(t.tenant.c.id)).scalars())


async def _stored_ids(url: str) -> set[str]:
    """The tenant ids committed, read through a Database of its own."""
    db = create_database(url)
    try:
        return await db.run_read(_tenant_ids)
    finally:
        await db.dispose()


async def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


@pytest.fixture
async def db(sql_url: str) -> AsyncIterator[Database]:
    database = create_database(sql_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def sqlite_url(sql_url: str) -> str:
    if not sql_url.startswith("sqlite"):
        pytest.skip("SQLite's write batches only")
    return sql_url


@pytest.fixture
async def sqlite_db(sqlite_url: str) -> AsyncIterator[Database]:
    database = create_database(sqlite_url)
    try:
        yield database
    finally:
        await database.dispose()


@asynccontextmanager
async def _writer_held_if_sqlite(db: Database, url: str) -> AsyncIterator[None]:
    """``_writer_held`` on SQLite (so the ops form one batch); nothing on PostgreSQL."""
    if not url.startswith("sqlite"):
        yield
        return
    async with _writer_held(db, url):
        yield


def _writer_waiting(db: Database) -> bool:
    """SQLite's writer is running a batch (here: waiting on its thread for the lock)."""
    return not cast(SqliteDatabase, db)._writes._idle


@asynccontextmanager
async def _lock_held(
    db: Database, url: str, first: Callable[[sa.Connection], Any]
) -> AsyncIterator[asyncio.Future[Any]]:
    """Hold SQLite's write lock from another connection until the block exits. ``first``,
    written meanwhile, cannot start on the event loop: its batch goes to the writer thread
    and waits there for the lock (the block starts once it does, and gets its future). Ops
    written later queue up behind it."""
    path = sa.make_url(url).database
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    try:
        written = asyncio.ensure_future(db.run_write(first))
        await _wait_for(lambda: _writer_waiting(db))
        yield written
    finally:
        other.execute("ROLLBACK")
        other.close()


@asynccontextmanager
async def _writer_held(db: Database, url: str) -> AsyncIterator[None]:
    """Hold SQLite's writer (``_lock_held``) until the block exits; ops submitted meanwhile
    queue up and run as the next batch, together."""
    async with _lock_held(db, url, lambda _conn: None) as holder:
        yield
    await holder


async def test_sqlite_file_is_in_wal_mode_before_any_op(sqlite_url: str) -> None:
    # Set once, up front: lanes that each switched on their first connection could fail
    # with "database is locked" when two opened at once on a file not yet in WAL.
    path = sa.make_url(sqlite_url).database
    assert path is not None
    with sqlite3.connect(path) as check:
        check.execute("PRAGMA journal_mode=DELETE")  # as a file new to WAL
    database = create_database(sqlite_url)
    try:
        with sqlite3.connect(path) as check:
            assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        await database.dispose()


class TestWriteBatch:
    async def test_a_failing_op_rolls_back_only_itself(self, db: Database, sql_url: str) -> None:
        def insert_then_fail(conn: sa.Connection) -> None:
            _insert("tn_b")(conn)
            raise ValueError("op b fails after its first statement")

        ops = [_insert("tn_a"), insert_then_fail, _insert("tn_c"), _insert("tn_a")]
        results = await asyncio.gather(*(db.run_write(op) for op in ops), return_exceptions=True)
        assert isinstance(results[1], ValueError)
        assert results[2] is None
        # tn_a twice: one insert wins (on PostgreSQL not necessarily the first one).
        assert sorted(type(r).__name__ for r in (results[0], results[3])) == [
            "IntegrityError",
            "NoneType",
        ]
        assert await _stored_ids(sql_url) == {"tn_a", "tn_c"}

    async def test_failures_inside_one_batch(self, sqlite_db: Database, sqlite_url: str) -> None:
        def insert_then_fail(conn: sa.Connection) -> None:
            _insert("tn_fail")(conn)
            raise ValueError("boom")

        ops = [_insert(f"tn_{n}") for n in range(50)]
        ops[10] = insert_then_fail
        ops[20] = _insert("tn_1")  # a duplicate key
        async with _writer_held(sqlite_db, sqlite_url):
            futures = [asyncio.ensure_future(sqlite_db.run_write(op)) for op in ops]
            await asyncio.sleep(0)  # every op is queued behind the held batch
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert isinstance(results[10], ValueError)
        assert isinstance(results[20], sa.exc.IntegrityError)
        assert [n for n, r in enumerate(results) if r is not None] == [10, 20]
        expected = {f"tn_{n}" for n in range(50) if n not in (10, 20)}
        assert await _stored_ids(sqlite_url) == expected

    async def test_single_statements_fail_alone_without_a_savepoint(
        self, sqlite_db: Database, sqlite_url: str
    ) -> None:
        # ``one_statement`` ops skip the SAVEPOINT: SQLite's statement journal must undo a
        # statement that fails partway (here after inserting its first row) by itself.
        def two_rows_second_taken(conn: sa.Connection) -> None:
            # One INSERT ... VALUES (...), (...) statement (not an executemany).
            conn.execute(
                sa.insert(t.tenant).values(
                    [
                        {"id": "tn_partial", "name": "x", "created_at": T0},
                        {"id": "tn_1", "name": "x", "created_at": T0},
                    ]
                )
            )

        ops = [_insert(f"tn_{n}") for n in range(10)]
        ops[5] = two_rows_second_taken
        async with _writer_held(sqlite_db, sqlite_url):
            futures = [
                asyncio.ensure_future(sqlite_db.run_write(op, one_statement=True)) for op in ops
            ]
            await asyncio.sleep(0)
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert isinstance(results[5], sa.exc.IntegrityError)
        assert [n for n, r in enumerate(results) if r is not None] == [5]
        assert await _stored_ids(sqlite_url) == {f"tn_{n}" for n in range(10) if n != 5}

    async def test_row_inserts_run_together_and_fail_alone(
        self, db: Database, sql_url: str
    ) -> None:
        # Consecutive RowInserts of one statement are one executemany on SQLite; a row that
        # fails (a taken key) must fail alone, and the rows around it must be committed.
        stmt = sa.insert(t.tenant)
        rows = [{"id": f"tn_{n}", "name": "x", "created_at": T0} for n in range(30)]
        rows[12] = {"id": "tn_3", "name": "x", "created_at": T0}  # tn_3 again
        ops: list[Callable[[sa.Connection], object]] = [RowInsert(stmt, row) for row in rows]
        ops[20] = _insert("tn_between")  # another kind of op splits the run
        async with _writer_held_if_sqlite(db, sql_url):
            futures = [asyncio.ensure_future(db.run_write(op, one_statement=True)) for op in ops]
            await asyncio.sleep(0)
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [n for n, r in enumerate(results) if isinstance(r, Exception)]
        if sql_url.startswith("sqlite"):
            assert failed == [12]  # the first tn_3 was queued first
            assert isinstance(results[12], sa.exc.IntegrityError)
        else:  # concurrent connections: either tn_3 may win
            assert len(failed) == 1
            assert failed[0] in (3, 12)
        assert all(results[n] == 1 for n in range(30) if n not in (*failed, 20))
        expected = {f"tn_{n}" for n in range(30) if n not in (12, 20)} | {"tn_between"}
        assert await _stored_ids(sql_url) == expected

    async def test_row_fetches_give_each_its_row_and_fail_alone(
        self, db: Database, sql_url: str
    ) -> None:
        # RowFetches of one statement submitted together (PostgreSQL: one fetchmany); a row
        # that fails (a taken key) must fail alone and the others get their own row back.
        stmt = sa.insert(t.tenant).returning(t.tenant.c.id, t.tenant.c.name)
        rows = [{"id": f"tn_{n}", "name": f"n{n}", "created_at": T0} for n in range(20)]
        rows[12] = {"id": "tn_3", "name": "again", "created_at": T0}
        ops = [RowFetch(stmt, row, order=f"{n:02}") for n, row in enumerate(rows)]
        async with _writer_held_if_sqlite(db, sql_url):
            futures = [asyncio.ensure_future(db.run_write(op, one_statement=True)) for op in ops]
            await asyncio.sleep(0)
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [n for n, r in enumerate(results) if isinstance(r, Exception)]
        assert len(failed) == 1
        assert failed[0] in (3, 12)
        assert isinstance(results[failed[0]], sa.exc.IntegrityError)
        for n, result in enumerate(results):
            if n not in failed:
                assert result == {"id": rows[n]["id"], "name": rows[n]["name"]}
        expected = {f"tn_{n}" for n in range(20) if n != 12}
        assert await _stored_ids(sql_url) == expected

    async def test_a_lost_transaction_fails_the_whole_batch(
        self, sqlite_db: Database, sqlite_url: str
    ) -> None:
        # Some SQLite errors (disk full, I/O) end the transaction: what the batch wrote so
        # far is gone, so no op of it may report success.
        def lose_the_transaction(conn: sa.Connection) -> None:
            conn.exec_driver_sql("ROLLBACK")
            raise sa.exc.OperationalError("stmt", {}, Exception("database or disk is full"))

        ops = [_insert("tn_a"), lose_the_transaction, _insert("tn_c")]
        async with _writer_held(sqlite_db, sqlite_url):
            futures = [asyncio.ensure_future(sqlite_db.run_write(op)) for op in ops]
            await asyncio.sleep(0)
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert all(isinstance(r, Exception) for r in results), results
        assert await _stored_ids(sqlite_url) == set()
        await sqlite_db.run_write(_insert("tn_after"))  # the writer carries on
        assert await _stored_ids(sqlite_url) == {"tn_after"}

    async def test_results_reach_their_callers(self, db: Database) -> None:
        results = await asyncio.gather(
            *(db.run_write(lambda _conn, n=n: n * 2) for n in range(20)),
            *(db.run_read(lambda _conn, n=n: -n) for n in range(20)),
        )
        assert results == [n * 2 for n in range(20)] + [-n for n in range(20)]


class TestSqliteWriter:
    """Where SQLite's write batches run: on the event loop, except when another connection
    holds the write lock; WAL checkpoints on a thread of their own."""

    async def test_batches_run_on_the_loop_unless_the_lock_is_taken(
        self, sqlite_db: Database, sqlite_url: str
    ) -> None:
        def thread_of(conn: sa.Connection) -> int:
            _insert(f"tn_{threading.get_ident()}_{len(_tenant_ids(conn))}")(conn)
            return threading.get_ident()

        loop_thread = threading.get_ident()
        assert await sqlite_db.run_write(thread_of) == loop_thread
        loop = asyncio.get_running_loop()
        async with _lock_held(sqlite_db, sqlite_url, thread_of) as written:
            # The batch waits for the lock on the writer thread; the loop goes on meanwhile.
            before = loop.time()
            await asyncio.sleep(0.05)
            assert loop.time() - before < 1.0
            assert not written.done()
        assert await written != loop_thread
        # The lock is free again: the next batch runs on the loop.
        assert await sqlite_db.run_write(thread_of) == loop_thread
        assert len(await _stored_ids(sqlite_url)) == 3

    async def test_a_lock_held_past_the_busy_timeout_fails_the_batch(
        self, sqlite_db: Database, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_MS", 50)
        async with _lock_held(sqlite_db, sqlite_url, _insert("tn_late")) as written:
            # Nothing was written and a later try may succeed: the API's 503, not a 500.
            with pytest.raises(StoreUnavailable) as raised:
                await written
        assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
        assert "locked" in str(raised.value.__cause__)
        assert engine.sqlite_outage(raised.value) == "locked"
        await sqlite_db.run_write(_insert("tn_after"))  # the writer carries on, on the loop
        assert await _stored_ids(sqlite_url) == {"tn_after"}

    async def test_a_full_disk_is_store_unavailable_until_there_is_room(
        self,
        sqlite_db: Database,
        sqlite_url: str,
        logs: list[MutableMapping[str, Any]],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(engine, "STORE_RETRY_AFTER_S", 0.3)
        await sqlite_db.run_write(_insert("tn_before"))
        await sqlite_room(sqlite_db, 0)
        for n in range(3):  # a row of overflow pages needs room the file does not have
            with pytest.raises(StoreUnavailable) as raised:
                await sqlite_db.run_write(_insert(f"tn_full_{n}", name="x" * 20_000))
            assert engine.sqlite_outage(raised.value) == "disk_full"
            assert "full" in str(raised.value.__cause__)
        assert not sqlite_db.writable()  # the store is not ready (GET /readyz)
        told = [(e["event"], e["reason"]) for e in logs if e["event"].startswith("sqlite_writes")]
        assert told == [("sqlite_writes_failing", "disk_full")]  # once, not at every write

        await sqlite_room(sqlite_db, None)  # the operator frees the disk
        await sqlite_db.run_write(_insert("tn_after", name="x" * 20_000))
        assert await _stored_ids(sqlite_url) == {"tn_before", "tn_after"}
        assert not sqlite_db.writable()  # a failure that recent may come back
        await asyncio.sleep(0.3)
        assert sqlite_db.writable()
        await sqlite_db.run_write(_insert("tn_later"))
        told = [(e["event"], e["reason"]) for e in logs if e["event"].startswith("sqlite_writes")]
        assert told == [
            ("sqlite_writes_failing", "disk_full"),
            ("sqlite_writes_recovered", "disk_full"),
        ]

    async def test_a_full_disk_fails_the_whole_batch(
        self, sqlite_db: Database, sqlite_url: str
    ) -> None:
        # SQLite ends the transaction on SQLITE_FULL: the small rows written before the
        # large one are gone too, so every op of the batch is told, none reports success.
        await sqlite_room(sqlite_db, 0)
        ops = [_insert("tn_a"), _insert("tn_b", name="x" * 20_000), _insert("tn_c")]
        async with _writer_held(sqlite_db, sqlite_url):
            futures = [asyncio.ensure_future(sqlite_db.run_write(op)) for op in ops]
            await asyncio.sleep(0)
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert await _stored_ids(sqlite_url) == set()

    async def test_other_sqlite_errors_are_not_translated(self, sqlite_db: Database) -> None:
        await sqlite_db.run_write(_insert("tn_once"))
        with pytest.raises(sa.exc.IntegrityError):
            await sqlite_db.run_write(_insert("tn_once"))
        assert sqlite_db.writable()

    async def test_checkpoints_run_beside_the_writer_not_in_its_commits(
        self, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(engine, "SQLITE_CHECKPOINT_INTERVAL_S", 0.0)
        path = sa.make_url(sqlite_url).database
        assert path is not None
        db = create_database(sqlite_url)
        try:
            autocheckpoint = await db.run_write(
                lambda conn: conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
            )
            assert autocheckpoint == 0  # a commit never checkpoints (on the event loop)
            size_before = Path(path).stat().st_size
            big = "x" * 4000
            for n in range(200):  # ~1 MB of pages, in the WAL until checkpointed
                await db.run_write(
                    lambda conn, n=n: conn.execute(
                        sa.insert(t.tenant), {"id": f"tn_{n}", "name": big, "created_at": T0}
                    )
                )
            # The checkpoints copied the WAL's pages into the database file.
            await _wait_for(lambda: Path(path).stat().st_size > size_before + 500_000)
        finally:
            await db.dispose()

    def test_writes_during_a_checkpoint_are_copied_after_it(
        self, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A checkpoint ran only when a write came after the interval: the last writes of a
        burst, committed while one ran, stayed in the WAL until the next write, whenever that
        came (``test_checkpoints_run_beside_the_writer_not_in_its_commits`` failed once in a
        full run for it: its last checkpoint began while most of its writes went on)."""
        monkeypatch.setattr(engine, "SQLITE_CHECKPOINT_INTERVAL_S", 0.0)
        path = sa.make_url(sqlite_url).database
        assert path is not None
        engine._use_wal(path)
        checkpoints = engine._Checkpointer(path)
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("PRAGMA wal_autocheckpoint=0")  # as the product's writer
        copied, go_on = threading.Event(), threading.Event()
        checkpoint = checkpoints._checkpoint

        def first_one_held() -> None:
            checkpoint()
            if not copied.is_set():
                copied.set()
                go_on.wait(DEADLINE_S)

        monkeypatch.setattr(checkpoints, "_checkpoint", first_one_held)

        def write(n: int) -> None:
            writer.execute(
                "INSERT INTO tenant (id, name, created_at) VALUES (?, ?, '2026-03-01')",
                (f"tn_{n}", "x" * 4000),
            )

        try:
            write(0)
            checkpoints.wrote()
            assert copied.wait(DEADLINE_S)
            size_before = Path(path).stat().st_size
            for n in range(1, 300):  # ~1.2 MB, committed while the checkpoint is under way
                write(n)
                checkpoints.wrote()
            go_on.set()
            assert checkpoints._running is not None
            checkpoints._running.result(timeout=DEADLINE_S)
            assert Path(path).stat().st_size > size_before + 1_000_000
        finally:
            writer.close()
            asyncio.run(checkpoints.close())

    def test_a_long_wal_is_emptied_by_the_next_checkpoint(
        self, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A passive checkpoint copies every frame but the ones committed while it ran, and
        SQLite starts the WAL over only when a write begins with all of it copied: beside a
        writer that never pauses, never. A soak of 500 webhooks/s grew it to 1.9 GB in 8
        minutes (docs/benchmarks.md). Past ``SQLITE_WAL_RESTART_FRAMES`` the checkpoint
        empties it."""
        monkeypatch.setattr(engine, "SQLITE_CHECKPOINT_INTERVAL_S", 0.0)
        monkeypatch.setattr(engine, "SQLITE_WAL_RESTART_FRAMES", 100)
        path = sa.make_url(sqlite_url).database
        assert path is not None
        wal = Path(f"{path}-wal")
        engine._use_wal(path)
        checkpoints = engine._Checkpointer(path)
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("PRAGMA wal_autocheckpoint=0")  # as the product's writer

        def write(n: int) -> None:
            writer.execute(
                "INSERT INTO tenant (id, name, created_at) VALUES (?, ?, '2026-03-01')",
                (f"tn_{n}", "x" * 200),
            )

        try:
            for n in range(300):
                write(n)
            assert _wal_frames(path) > 100
            checkpoints.wrote()
            assert checkpoints._running is not None
            checkpoints._running.result(timeout=DEADLINE_S)
            # A passive checkpoint leaves the WAL as long as it was, for the next write to
            # start over, or not; this one emptied it.
            assert wal.stat().st_size == 0
            write(300)
            assert _wal_frames(path) < 10
        finally:
            writer.close()
            asyncio.run(checkpoints.close())


def _wal_frames(path: str) -> int:
    """Frames in the WAL, read from its header chain: the size of its valid part."""
    wal = Path(f"{path}-wal")
    if not wal.exists():
        return 0
    data = wal.read_bytes()
    if len(data) < 32:
        return 0
    page_size = int.from_bytes(data[8:12], "big")
    salt = data[16:24]
    frames, offset = 0, 32
    while offset + 24 + page_size <= len(data) and data[offset + 8 : offset + 16] == salt:
        frames += 1
        offset += 24 + page_size
    return frames


async def _stored_without_key(url: str, table: str, key: str, ids: set[str]) -> dict[str, Any]:
    """Each row of ``table`` whose ``key`` is in ``ids``, as the database stores it (SQLite:
    the driver's values; PostgreSQL: the row's text), with its key left out."""
    listed = ", ".join(f"'{i}'" for i in sorted(ids))
    if url.startswith("sqlite"):
        path = sa.make_url(url).database
        assert path is not None
        with sqlite3.connect(path) as check:
            found = check.execute(f"SELECT {key}, * FROM {table} WHERE {key} IN ({listed})")  # noqa: S608
            return {row[0]: [v for v in row[1:] if v != row[0]] for row in found}
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql", 1))
    try:
        found = await conn.fetch(f"SELECT {key}, t::text FROM {table} t WHERE {key} IN ({listed})")  # noqa: S608
    finally:
        await conn.close()
    return {row[0]: row[1].replace(row[0], "<key>") for row in found}


class TestDriverStatements:
    """The statements every execution runs go to the driver itself (``engine.rowcount``,
    ``tuples``, ``mappings``; on PostgreSQL in autocommit): what they store and read must be
    exactly what SQLAlchemy stores and reads, or reads and comparisons (a datetime written in
    another format, JSON) would go wrong. The ops run as single statements
    (``one_statement``), which is what puts PostgreSQL's connection in autocommit."""

    async def test_rows_are_stored_as_through_sqlalchemy(self, db: Database, sql_url: str) -> None:
        from datetime import timedelta, timezone

        from ipaas.stores.sql import statements as q

        berlin = timezone(timedelta(hours=2))
        whole = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)  # no microseconds
        odd = datetime(2026, 3, 1, 14, 0, 1, 250, tzinfo=berlin)  # not UTC
        upsert = db.upsert(t.step_run, ("execution_id", "step_id", "attempt"))

        def execution(ex_id: str) -> dict[str, Any]:
            return {
                "id": ex_id, "tenant_id": "tn_a", "workflow_id": "wf", "workflow_version": 1,
                "status": "running", "trigger": {"body": {"n": 1, "t": [1.5, None]}},
                "attempt": 1, "lease_owner": "w1", "lease_expires_at": odd,
                "cancel_requested": False, "created_at": whole, "started_at": odd,
                "deadline_at": None, "dedup_key": None, "next_attempt_at": None,
            }  # fmt: skip

        def step(ex_id: str) -> dict[str, Any]:
            return {
                "execution_id": ex_id, "step_id": "notify", "attempt": 1, "tenant_id": "tn_a",
                "position": 0, "type": "slack_message", "status": "succeeded",
                "input": {"text": "héllo", "n": [1, 2]}, "output": {"ok": True}, "error": None,
                "error_code": None, "status_code": 200, "next_attempt_at": None,
                "started_at": whole, "finished_at": odd,
            }  # fmt: skip

        def finish(ex_id: str) -> dict[str, Any]:
            return {
                "p_id": ex_id, "p_owner": "w1", "p_status": "failed", "p_error": "boom",
                "p_finished_at": odd, "p_alert": True,
            }  # fmt: skip

        writes = [
            (sa.insert(t.execution), execution),
            (upsert, step),
            (q.FINISH, finish),
        ]

        def op(conn: sa.Connection) -> None:
            _insert("tn_a")(conn)
            for stmt, values in writes:
                conn.execute(stmt, values("ex_sa"))
                params = values("ex_driver")
                assert engine._driver_statement(conn, stmt, params, with_rows=False) is not None
                assert engine.rowcount(conn, stmt, params) == 1

        await db.run_write(op, one_statement=True)
        for table, key in (("execution", "id"), ("step_run", "execution_id")):
            rows = await _stored_without_key(sql_url, table, key, {"ex_sa", "ex_driver"})
            assert set(rows) == {"ex_sa", "ex_driver"}
            assert rows["ex_driver"] == rows["ex_sa"]

    async def test_executemany_stores_as_through_sqlalchemy(
        self, db: Database, sql_url: str
    ) -> None:
        def execution(ex_id: str) -> dict[str, Any]:
            return {
                "id": ex_id, "tenant_id": "tn_a", "workflow_id": "wf", "workflow_version": 1,
                "status": "queued", "trigger": {"body": {"s": "é", "n": [1.5, None]}},
                "attempt": 0, "cancel_requested": False,
                "created_at": datetime(2026, 3, 1, 12, 0, 0, 7, tzinfo=UTC),
            }  # fmt: skip

        insert = sa.insert(t.execution)

        def op(conn: sa.Connection) -> None:
            _insert("tn_a")(conn)
            conn.execute(insert, [execution("ex_sa_1"), execution("ex_sa_2")])
            rows = [execution("ex_driver_1"), execution("ex_driver_2")]
            assert engine._driver_statement(conn, insert, rows[0], with_rows=False) is not None
            engine.execute_many(conn, insert, rows)

        await db.run_write(op, one_statement=True)
        ids = {"ex_sa_1", "ex_sa_2", "ex_driver_1", "ex_driver_2"}
        rows = await _stored_without_key(sql_url, "execution", "id", ids)
        assert set(rows) == ids
        assert rows["ex_driver_1"] == rows["ex_driver_2"] == rows["ex_sa_1"]

    async def test_rows_read_as_through_sqlalchemy(self, db: Database) -> None:
        """``engine.tuples`` and ``engine.mappings`` on the driver give the values SQLAlchemy
        gives: datetimes (with and without microseconds) back in UTC, JSON decoded, counts,
        constants, an UPDATE ... RETURNING and a SELECT of aggregates."""
        from ipaas.stores.sql import statements as q

        def execution(ex_id: str, created_at: datetime) -> dict[str, Any]:
            return {
                "id": ex_id, "tenant_id": "tn_a", "workflow_id": "wf", "workflow_version": 1,
                "status": "queued", "trigger": {"body": {"n": 1, "t": [1.5, None], "s": "é"}},
                "attempt": 0, "cancel_requested": False, "created_at": created_at,
            }  # fmt: skip

        claim = q.claim_due_of_tenant(db.lock_claimable)
        now = datetime(2026, 3, 1, 12, 0, 0, 250, tzinfo=UTC)
        params = {
            "p_owner": "w1", "p_now": now, "p_lease_until": now, "p_deadline": now,
            "p_tenant_id": "tn_a", "p_limit": 1,
        }  # fmt: skip
        one = sa.select(t.execution).where(t.execution.c.id == sa.bindparam("p_id"))

        def op(conn: sa.Connection) -> dict[str, Any]:
            _insert("tn_a")(conn)
            conn.execute(
                sa.insert(t.execution),
                [execution("ex_1", T0), execution("ex_2", T0.replace(microsecond=7))],
            )
            for stmt, values in ((q.TENANTS_TO_SHARE, {"p_now": now}), (claim, params)):
                assert engine._driver_statement(conn, stmt, values, with_rows=True) is not None
            return {
                "shares": (
                    engine.tuples(conn, q.TENANTS_TO_SHARE, {"p_now": now}),
                    [tuple(r) for r in conn.execute(q.TENANTS_TO_SHARE, {"p_now": now})],
                ),
                # The two claims take ex_1, then ex_2: compared without their ids.
                "claims": (
                    engine.mappings(conn, claim, params),
                    list(conn.execute(claim, params).mappings()),
                ),
                "reads": (
                    engine.mappings(conn, one, {"p_id": "ex_1"}),
                    list(conn.execute(one, {"p_id": "ex_1"}).mappings()),
                ),
            }

        read = await db.run_write(op, one_statement=True)
        on_driver, through_sa = read["shares"]
        assert on_driver == through_sa
        assert on_driver == [("tn_a", None, 0, T0)]
        assert isinstance(on_driver[0][3], datetime)
        assert on_driver[0][3].tzinfo is not None

        (driver_claim,), (sa_claim,) = read["claims"]
        assert dict(driver_claim)["id"] == "ex_1"
        assert dict(sa_claim)["id"] == "ex_2"
        assert list(driver_claim) == list(sa_claim)
        differ = {k for k in driver_claim if driver_claim[k] != sa_claim[k]}
        assert differ == {"id", "created_at"}, differ
        assert driver_claim["status"] == "running"
        assert driver_claim["lease_expires_at"] == now
        assert driver_claim["trigger"] == {"body": {"n": 1, "t": [1.5, None], "s": "é"}}

        (driver_row,), (sa_row,) = read["reads"]
        assert dict(driver_row) == dict(sa_row)
        assert [type(v) for v in driver_row.values()] == [type(v) for v in sa_row.values()]

    async def test_driver_errors_are_sqlalchemys(self, db: Database) -> None:
        insert = sa.insert(t.tenant)
        values = {"id": "tn_a", "name": "x", "created_at": T0}

        def op(conn: sa.Connection) -> None:
            assert engine._driver_statement(conn, insert, values, with_rows=False) is not None
            engine.rowcount(conn, insert, values)

        await db.run_write(op, one_statement=True)
        with pytest.raises(sa.exc.IntegrityError):
            await db.run_write(op, one_statement=True)
        # The connection that saw the error is as good as before.
        assert await db.run_read(_tenant_ids) == {"tn_a"}


class TestSqliteCompaction:
    def test_the_wal_is_truncated_after_a_concurrent_checkpoint_ends(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A checkpoint that meets another connection's (the writer's checkpoint thread)
        returns busy at once and truncates nothing: compaction tries again. The busy answers
        are SQLite's own result rows, played back before the real checkpoint's."""
        path = tmp_path / "c.db"
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE t (x)")
        connection.execute("INSERT INTO t VALUES (randomblob(100000))")
        wal = Path(f"{path}-wal")
        assert wal.stat().st_size > 100_000
        busy_answers = [(1, -1, -1), (1, -1, -1)]

        class Contended:
            """``connection``, whose first checkpoints find another one running."""

            def execute(self, sql: str) -> Any:
                if busy_answers and "wal_checkpoint" in sql:
                    answer = busy_answers.pop(0)
                    return type("Cursor", (), {"fetchone": lambda _self: answer})()
                return connection.execute(sql)

        monkeypatch.setattr(engine, "SQLITE_TRUNCATE_PAUSE_S", 0.0)
        try:
            assert engine._truncate_wal(cast(sqlite3.Connection, Contended()))
            assert busy_answers == []
            assert wal.stat().st_size == 0
            # Busy for longer than the attempts last: reported, not raised.
            monkeypatch.setattr(engine, "SQLITE_TRUNCATE_ATTEMPTS", 2)
            busy_answers.extend([(1, -1, -1)] * 2)
            assert not engine._truncate_wal(cast(sqlite3.Connection, Contended()))
        finally:
            connection.close()


class TestReads:
    async def test_a_failing_read_fails_alone(self, db: Database) -> None:
        def bad(conn: sa.Connection) -> None:
            conn.execute(sa.text("SELECT * FROM no_such_table"))

        results = await asyncio.gather(
            db.run_read(_tenant_ids), db.run_read(bad), db.run_read(_tenant_ids),
            return_exceptions=True,
        )  # fmt: skip
        assert results[0] == results[2] == set()
        assert isinstance(results[1], sa.exc.DBAPIError)
        assert await db.run_read(_tenant_ids) == set()

    async def test_reads_see_committed_writes(self, db: Database) -> None:
        await db.run_write(_insert("tn_a"))
        assert await db.run_read(_tenant_ids) == {"tn_a"}


class TestCancellation:
    async def test_a_started_write_completes(self, db: Database, sql_url: str) -> None:
        started, release = threading.Event(), threading.Event()
        sqlite = sql_url.startswith("sqlite")

        def slow_insert(conn: sa.Connection) -> None:
            started.set()
            if sqlite:  # on the writer thread (see below): wait for the test
                release.wait(DEADLINE_S)
            else:  # on the event loop: must not block it
                conn.execute(sa.text("SELECT pg_sleep(0.05)"))
            _insert("tn_a")(conn)

        if sqlite:
            # Started on the writer thread (the lock was taken), so the test can cancel the
            # caller while the op runs; a batch on the event loop runs to its end at once.
            async with _lock_held(db, sql_url, slow_insert) as caller:
                pass
        else:
            caller = asyncio.ensure_future(db.run_write(slow_insert))
        await _wait_for(started.is_set)
        caller.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await db.dispose()  # waits for the write
        assert await _stored_ids(sql_url) == {"tn_a"}

    async def test_a_queued_write_is_dropped(self, sqlite_db: Database, sqlite_url: str) -> None:
        async with _writer_held(sqlite_db, sqlite_url):
            cancelled = asyncio.ensure_future(sqlite_db.run_write(_insert("tn_cancelled")))
            kept = asyncio.ensure_future(sqlite_db.run_write(_insert("tn_kept")))
            await asyncio.sleep(0)
            cancelled.cancel()
        await kept
        assert cancelled.cancelled()
        assert await _stored_ids(sqlite_url) == {"tn_kept"}


class TestDispose:
    async def test_queued_writes_are_committed_first(
        self, sqlite_db: Database, sqlite_url: str
    ) -> None:
        async with _writer_held(sqlite_db, sqlite_url):
            writes = [
                asyncio.ensure_future(sqlite_db.run_write(_insert(f"tn_{n}"))) for n in range(20)
            ]
            await asyncio.sleep(0)
            disposing = asyncio.ensure_future(sqlite_db.dispose())
            await asyncio.sleep(0)
            assert not disposing.done()
        await disposing
        assert all(w.done() and w.exception() is None for w in writes)
        assert await _stored_ids(sqlite_url) == {f"tn_{n}" for n in range(20)}
        with pytest.raises(RuntimeError, match="closed"):
            await sqlite_db.run_write(_insert("tn_late"))

    async def test_in_flight_writes_finish(self, db: Database, sql_url: str) -> None:
        writes = [asyncio.ensure_future(db.run_write(_insert(f"tn_{n}"))) for n in range(20)]
        await asyncio.sleep(0)
        await db.dispose()
        assert await asyncio.gather(*writes) == [None] * 20
        assert await _stored_ids(sql_url) == {f"tn_{n}" for n in range(20)}


class TestPostgresOutage:
    """PostgreSQL going away is ``StoreUnavailable`` (the API's 503), fast, and the pool
    recovers by itself. The outage is a TCP proxy that resets and refuses connections."""

    pytestmark = POSTGRES_ONLY

    @pytest.fixture
    def proxy(self) -> Iterator[FaultProxy]:
        assert POSTGRES_URL is not None
        url = sa.make_url(POSTGRES_URL)
        with FaultProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
            yield proxy

    @pytest.fixture
    async def proxied_db(self, postgres_url: str, proxy: FaultProxy) -> AsyncIterator[Database]:
        url = sa.make_url(postgres_url).set(host="127.0.0.1", port=proxy.port)
        database = create_database(url.render_as_string(hide_password=False))
        try:
            yield database
        finally:
            await database.dispose()

    async def test_an_unreachable_server_is_store_unavailable_within_seconds(
        self, proxied_db: Database, proxy: FaultProxy
    ) -> None:
        await proxied_db.run_read(_tenant_ids)  # a pooled connection, then the outage
        proxy.cut()
        started = asyncio.get_running_loop().time()
        with pytest.raises(StoreUnavailable):
            await proxied_db.run_read(_tenant_ids)
        with pytest.raises(StoreUnavailable):
            await proxied_db.run_write(_insert("tn_during"))
        assert asyncio.get_running_loop().time() - started < PG_CONNECT_TIMEOUT_S

    async def test_the_pool_recovers_when_the_server_returns(
        self, proxied_db: Database, proxy: FaultProxy, postgres_url: str
    ) -> None:
        await truncate_all(postgres_url)
        await proxied_db.run_read(_tenant_ids)
        proxy.cut()
        proxy.restore()
        # The pooled connection died with the "server": a read runs again on a new one.
        assert await proxied_db.run_read(_tenant_ids) == set()
        await proxied_db.run_write(_insert("tn_after"))
        assert await _stored_ids(postgres_url) == {"tn_after"}

    async def test_other_errors_are_not_translated(self, proxied_db: Database) -> None:
        await proxied_db.run_write(_insert("tn_twice"))
        with pytest.raises(sa.exc.IntegrityError):
            await proxied_db.run_write(_insert("tn_twice"))


class TestPostgresLockTimeout:
    """A table another session holds (``LOCK TABLE``, ``VACUUM FULL``, a migration building
    an index): found by hand, webhooks waited as long as the lock was held (24 s), past the
    10 s after which GitHub gives up on a delivery. Now a statement waits
    ``PG_LOCK_TIMEOUT_S`` (SQLite's busy timeout) and is ``StoreUnavailable`` (503 +
    ``Retry-After``), having written nothing."""

    pytestmark = POSTGRES_ONLY

    async def test_a_held_table_is_store_unavailable_after_the_lock_timeout(
        self, postgres_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(engine, "PG_LOCK_TIMEOUT_S", 0.5)
        await truncate_all(postgres_url)
        db = create_database(postgres_url)
        holder = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql", 1))
        try:
            await holder.execute("BEGIN; LOCK TABLE tenant IN ACCESS EXCLUSIVE MODE")
            attempts = (
                lambda: db.run_write(_insert("tn_locked")),
                lambda: db.run_read(_tenant_ids),
            )
            for attempt in attempts:
                started = asyncio.get_running_loop().time()
                with pytest.raises(StoreUnavailable) as caught:
                    await attempt()
                waited = asyncio.get_running_loop().time() - started
                assert 0.4 < waited < 3, waited
                assert caught.value.reason == "LockNotAvailableError (SQLSTATE 55P03)"
            await holder.execute("COMMIT")
            await db.run_write(_insert("tn_after"))
        finally:
            await holder.close()
            await db.dispose()
        assert await _stored_ids(postgres_url) == {"tn_after"}


class TestPostgresMigrationStepsAside:
    """A migration waits for its table's lock behind a long transaction (a backup, a report,
    a session idle in one): found by hand, every statement on that table queued behind the
    migration and failed after the app's 5 s lock timeout (503s for as long as the
    transaction lasted). Now the migration waits a short time, rolls back and runs again,
    and the statements queued behind it go on meanwhile."""

    pytestmark = POSTGRES_ONLY

    @pytest.fixture
    def at_0014(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
        monkeypatch.setattr(migrations, "PG_MIGRATION_LOCK_TIMEOUT_S", 0.5)
        monkeypatch.setattr(migrations, "PG_MIGRATION_PAUSE_S", 0.2)
        with postgres_database() as url:
            in_thread(lambda: alembic_command.upgrade(migrations.alembic_config(url), "0014"))
            yield url

    @staticmethod
    async def _revision(pg_url: str) -> str:
        conn = await asyncpg.connect(pg_url)
        try:
            return str(await conn.fetchval("SELECT version_num FROM alembic_version"))
        finally:
            await conn.close()

    async def test_statements_behind_a_waiting_migration_go_on(self, at_0014: str) -> None:
        pg_url = at_0014.replace("postgresql+asyncpg", "postgresql", 1)
        holder = await asyncpg.connect(pg_url)
        app = await asyncpg.connect(
            pg_url, server_settings={"lock_timeout": str(int(PG_LOCK_TIMEOUT_S * 1000))}
        )
        try:
            await holder.execute("BEGIN; SELECT count(*) FROM circuit")  # held, idle
            migrating = asyncio.create_task(asyncio.to_thread(migrations.run_migrations, at_0014))
            await asyncio.sleep(0.3)  # the migration (0015 alters circuit) waits for it
            for _ in range(3):
                started = time.monotonic()
                await app.fetchval("SELECT count(*) FROM circuit")
                assert time.monotonic() - started < 2.0
            assert not migrating.done()
            assert await self._revision(pg_url) == "0014"
            await holder.execute("COMMIT")
            await asyncio.wait_for(migrating, 30)
        finally:
            await holder.close()
            await app.close()
        assert await self._revision(pg_url) == t.SCHEMA_REVISION  # the newest

    async def test_a_table_held_throughout_fails_it_with_nothing_changed(
        self, at_0014: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(migrations, "PG_MIGRATION_ATTEMPTS", 2)
        pg_url = at_0014.replace("postgresql+asyncpg", "postgresql", 1)
        holder = await asyncpg.connect(pg_url)
        try:
            await holder.execute("BEGIN; SELECT count(*) FROM circuit")
            with pytest.raises(migrations.MigrationLockBusy, match="run `ipaas migrate` again"):
                await asyncio.to_thread(migrations.run_migrations, at_0014)
        finally:
            await holder.close()
        assert await self._revision(pg_url) == "0014"


class TestPostgresDiskFull:
    """PostgreSQL's disk is full: writes are ``StoreUnavailable`` (its class, 53, already
    was), and the store is not ready, as on SQLite: ``SELECT 1`` still answers, so
    ``/readyz`` said ready while every webhook got a 503. The error is asyncpg's own for
    SQLSTATE 53100, raised inside the write as the server's answer would be."""

    pytestmark = POSTGRES_ONLY

    async def test_not_ready_while_writes_fail_for_room(
        self,
        postgres_url: str,
        logs: list[MutableMapping[str, Any]],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(engine, "STORE_RETRY_AFTER_S", 0.3)

        def full(_conn: sa.Connection) -> None:
            msg = 'could not extend file "base/16384/16390": No space left on device'
            raise asyncpg.exceptions.DiskFullError(msg)

        db = create_database(postgres_url)
        try:
            for _ in range(2):
                with pytest.raises(StoreUnavailable):
                    await db.run_write(full)
            assert not db.writable()
            await db.run_write(_insert(f"tn_{secrets.token_hex(6)}"))  # room again
            assert not db.writable()  # a failure that recent may come back
            await asyncio.sleep(0.3)
            assert db.writable()
            await db.run_write(_insert(f"tn_{secrets.token_hex(6)}"))
        finally:
            await db.dispose()
        told = [(e["event"], e["reason"]) for e in logs if e["event"].startswith("postgres_writes")]
        assert told == [
            ("postgres_writes_failing", "disk_full"),
            ("postgres_writes_recovered", "disk_full"),
        ]

    async def test_other_refusals_leave_it_ready(self, postgres_url: str) -> None:
        db = create_database(postgres_url)
        try:
            tenant_id = f"tn_{secrets.token_hex(6)}"
            await db.run_write(_insert(tenant_id))
            with pytest.raises(sa.exc.IntegrityError):
                await db.run_write(_insert(tenant_id))
            assert db.writable()
        finally:
            await db.dispose()


def _backend_pid(conn: sa.Connection) -> int:
    return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


class TestPostgresRowFetch:
    pytestmark = POSTGRES_ONLY

    async def test_row_fetches_of_one_iteration_share_one_transaction_in_order(
        self, postgres_url: str
    ) -> None:
        # One round trip and one commit for all of them, their statements run in ``order``
        # (so batches take their row locks in one order and cannot deadlock).
        stmt = sa.insert(t.tenant).returning(
            t.tenant.c.id,
            sa.func.txid_current().label("txid"),
            sa.func.clock_timestamp().label("at"),
        )
        await truncate_all(postgres_url)
        db = create_database(postgres_url)
        try:
            ops = [
                RowFetch(stmt, {"id": f"tn_{n}", "name": "x", "created_at": T0}, order=f"{9 - n}")
                for n in range(10)
            ]
            results = await asyncio.gather(*(db.run_write(op) for op in ops))
        finally:
            await db.dispose()
        assert [r["id"] for r in results] == [f"tn_{n}" for n in range(10)]
        assert len({r["txid"] for r in results}) == 1
        # Statement order: by ``order``, so tn_9 ran first.
        assert [r["id"] for r in sorted(results, key=lambda r: r["at"])] == [
            f"tn_{n}" for n in reversed(range(10))
        ]

    async def test_a_batch_that_may_have_committed_is_not_run_again(
        self, postgres_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Only a batch the server refused runs again op by op. An error after the commit
        # (here: raised once the rows are back) fails every op of it: run again, a finish
        # would find its own row finished and report its lease lost.
        await truncate_all(postgres_url)
        real = engine.fetch_rows

        def committed_then_failed(*args: Any) -> None:
            real(*args)
            msg = "after the commit"
            raise RuntimeError(msg)

        monkeypatch.setattr(engine, "fetch_rows", committed_then_failed)
        stmt = sa.insert(t.tenant).returning(t.tenant.c.id)
        db = create_database(postgres_url)
        try:
            ops = [
                RowFetch(stmt, {"id": f"tn_{n}", "name": "x", "created_at": T0}) for n in range(4)
            ]
            results = await asyncio.gather(
                *(db.run_write(op) for op in ops), return_exceptions=True
            )
        finally:
            await db.dispose()
        assert all(isinstance(r, RuntimeError) for r in results), results
        assert await _stored_ids(postgres_url) == {f"tn_{n}" for n in range(4)}


class TestPostgresHeldConnections:
    """Single-statement ops run on autocommit connections kept out of the pool between ops
    (``_HeldConnections``): reused while healthy, given back when an op may have left one
    in a bad state, never so many that a transaction cannot get a connection."""

    pytestmark = POSTGRES_ONLY

    @staticmethod
    def _database(postgres_url: str, size: int) -> Database:
        return create_database(postgres_url, pool=PoolSize(size=size))

    async def test_a_cancelled_statement_does_not_spoil_the_next_ops(
        self, postgres_url: str
    ) -> None:
        db = self._database(postgres_url, size=2)  # one held connection
        try:
            first = await db.run_read(_backend_pid)
            sleeping = asyncio.ensure_future(
                db.run_read(lambda conn: conn.execute(sa.text("SELECT pg_sleep(5)")).all())
            )
            await asyncio.sleep(0.2)
            sleeping.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sleeping
            started = asyncio.get_running_loop().time()
            # Not the connection with a statement maybe still running on it: a new one.
            assert await db.run_read(_backend_pid) != first
            await db.run_write(_insert("tn_after_cancel"), one_statement=True)
            assert "tn_after_cancel" in await db.run_read(_tenant_ids)
            assert asyncio.get_running_loop().time() - started < 2.0
        finally:
            await db.dispose()

    async def test_a_refused_statement_keeps_its_connection(self, postgres_url: str) -> None:
        await truncate_all(postgres_url)
        db = self._database(postgres_url, size=2)
        try:
            pid = await db.run_read(_backend_pid)
            await db.run_write(_insert("tn_once"), one_statement=True)
            with pytest.raises(sa.exc.IntegrityError):
                await db.run_write(_insert("tn_once"), one_statement=True)
            assert await db.run_read(_backend_pid) == pid
        finally:
            await db.dispose()

    async def test_transactions_still_get_connections(self, postgres_url: str) -> None:
        # A pool of 4: at most 2 held. Many concurrent single statements, and transactions
        # beside them, all complete without waiting for the pool's timeout.
        db = self._database(postgres_url, size=4)
        try:

            def slow(conn: sa.Connection) -> None:
                conn.execute(sa.text("SELECT pg_sleep(0.2)"))

            started = asyncio.get_running_loop().time()
            await asyncio.gather(
                *(db.run_read(slow) for _ in range(6)),
                *(db.run_write(slow) for _ in range(2)),
            )
            assert asyncio.get_running_loop().time() - started < DEADLINE_S / 2
        finally:
            await db.dispose()

    @pytest.mark.parametrize(("size", "connections"), [(4, 2), (1, 1)])
    async def test_connections_are_reused_per_kind(
        self, postgres_url: str, size: int, connections: int
    ) -> None:
        # Sequential ops reuse one connection per kind (autocommit, transaction); a pool of
        # one serves both kinds on its one connection.
        db = self._database(postgres_url, size=size)
        try:
            pids = set()
            for _ in range(5):
                pids.add(await db.run_read(_backend_pid))
                pids.add(await db.run_write(_backend_pid))  # a transaction
                pids.add(await db.run_write(_backend_pid, one_statement=True))
            assert len(pids) == connections
        finally:
            await db.dispose()

    async def test_a_full_pool_is_store_unavailable_after_its_timeout(
        self, postgres_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(engine, "PG_POOL_TIMEOUT_S", 0.5)
        db = self._database(postgres_url, size=1)
        try:
            busy = asyncio.ensure_future(
                db.run_write(lambda conn: conn.execute(sa.text("SELECT pg_sleep(2)")).all())
            )
            await asyncio.sleep(0.1)
            started = asyncio.get_running_loop().time()
            with pytest.raises(StoreUnavailable):
                await db.run_read(_tenant_ids)
            assert 0.4 < asyncio.get_running_loop().time() - started < 1.5
            await busy
            await db.run_read(_tenant_ids)  # free again
        finally:
            await db.dispose()
