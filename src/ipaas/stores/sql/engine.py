"""The only module that knows the SQL dialect: engines, transactions and dialect-specific SQL.

Everything else in ``stores.sql`` is portable SQLAlchemy Core. A store method builds an *op*,
a plain function ``op(conn: sa.Connection) -> T`` that runs its prebuilt statements on a
synchronous connection, and hands it to ``Database.run_read`` or ``Database.run_write``; the
``Database`` decides on which thread, connection and transaction it runs. It also supplies
the few SQL fragments that differ per dialect.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast
from weakref import WeakKeyDictionary

import pydantic_core
import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import ConnectionPoolEntry, NullPool
from sqlalchemy.sql.compiler import SQLCompiler

from ipaas.errors import STORE_RETRY_AFTER_S, StoreUnavailable
from ipaas.kit.batching import LoopBatch
from ipaas.kit.text import without_nul
from ipaas.stores.base import QueueVacuum

if TYPE_CHECKING:
    # Imported where PostgreSQL is used: ``sqlalchemy.ext.asyncio`` loads SQLAlchemy's ORM
    # (its sessions), ~5 MiB that the SQLite store never needs (docs/architecture.md).
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")

_log = structlog.get_logger(__name__)

#: How long a connection waits for another's write lock (a writer in another process, such
#: as ``ipaas token create``, or a compaction) before failing with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 5000

#: Pragmas every SQLite connection gets (WAL, which lets readers run beside the writer, is
#: set once on the file: ``_use_wal``). ``synchronous=NORMAL`` is durable across process
#: crashes in WAL mode (only an OS crash can lose the last transactions) and much faster
#: than FULL; ``busy_timeout`` makes a writer in *another* process (``ipaas token create``)
#: wait instead of failing at once; SQLite ignores foreign keys unless asked.
SQLITE_PRAGMAS = (
    "PRAGMA synchronous=NORMAL",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys=ON",
    # After a checkpoint the WAL file is cut back to this size instead of staying as large
    # as its largest burst.
    f"PRAGMA journal_size_limit={64 * 1024 * 1024}",
)

#: Most write ops one SQLite transaction commits together. Bounds how long the batch's
#: first caller waits behind the others, and how long a batch run on the event loop holds
#: it: ~50-100 us per op, so at most some 25 ms.
SQLITE_MAX_WRITE_BATCH = 256
#: Seconds between WAL checkpoints while writes go on. SQLite's automatic checkpoint is off
#: on the writer's connection: it would run inside a commit, on the event loop.
SQLITE_CHECKPOINT_INTERVAL_S = 1.0
#: Frames in the WAL past which a checkpoint also empties it (``TRUNCATE``): 64 MiB of
#: 4 KiB pages, as ``journal_size_limit``. See ``_Checkpointer``.
SQLITE_WAL_RESTART_FRAMES = 16_384
#: How long that checkpoint waits for the writer and the readers before it gives up until
#: the next one; writes wait while it does (on the writer thread).
SQLITE_WAL_RESTART_WAIT_MS = 200
#: Read ops one reader thread runs per hand-off.
SQLITE_MAX_READ_BATCH = 64
#: Reader threads, each with its own connection. Python holds the GIL for most of a read,
#: so more threads than cores only add contention; sqlite3 releases it while SQLite works.
SQLITE_READERS = 2


def _json_dumps(value: Any) -> str:
    # pydantic-core serializes models, datetimes and the like directly, so the store binds
    # ``TriggerData`` and step inputs/outputs without a ``model_dump`` round first.
    return pydantic_core.to_json(value).decode()


_ENGINE_ARGS: Mapping[str, Any] = {
    "json_serializer": _json_dumps,
    "json_deserializer": pydantic_core.from_json,
}


@dataclass(frozen=True, slots=True)
class GuardedUpsert:
    """See ``Database.update_then_upsert``."""

    make: Callable[[Mapping[str, Any], Mapping[str, Any]], Callable[[sa.Connection], bool]]
    #: The op is a single statement: ``run_write`` needs no transaction around it.
    one_statement: bool


@dataclass(frozen=True, slots=True)
class GuardedUpsertThenClaim:
    """See ``Database.update_upsert_then_claim``."""

    #: ``make(update_params, row, order=...)``: the op (``order``: see ``RowFetch``).
    make: Callable[..., RowFetch]

    @staticmethod
    def outcome(row: Mapping[str, Any]) -> tuple[bool, Mapping[str, Any] | None]:
        """Whether ``update`` matched, and the row claimed, from the op's row."""
        matched = bool(row["matched"])
        return matched, (row if matched and row["id"] is not None else None)


class Database(ABC):
    """Runs ops on one database, and supplies the SQL fragments that differ per dialect.

    Cancelling a caller never cuts an op short: its write is either not started at all or
    fully done (committed, or rolled back as a whole), never half done, and the caller does
    not learn which. On SQLite a write whose caller is cancelled while it still waits in
    the queue is dropped; once its batch has begun it completes. On PostgreSQL every write
    that was called completes. ``dispose`` waits for both kinds.
    """

    #: Writes are applied in the order ``run_write`` was called (``Store.writes_in_order``).
    writes_in_order = False

    @abstractmethod
    async def run_read(self, op: Callable[[sa.Connection], T]) -> T:
        """Run a read-only op. Each statement sees the latest committed data (autocommit),
        so a read op should be one statement."""

    @abstractmethod
    async def run_write(
        self, op: Callable[[sa.Connection], T], *, one_statement: bool = False
    ) -> T:
        """Run ``op`` in a transaction of its own: committed when it returns, rolled back
        (and the exception raised here) when it raises.

        Args:
            one_statement: the op runs a single statement, atomic on its own; the backend
                may then skip the transaction around it.
        """

    def writable(self) -> bool:
        """False while writes fail for a reason of the machine's, not of the writes (the
        disk is full; ``_WriteOutage``): the store is then not ready (``/readyz``)."""
        return True

    @abstractmethod
    def lock_claimable(self, query: sa.Select[tuple[str]]) -> sa.Select[tuple[str]]:
        """Make a claim's candidate subselect safe against concurrent claimers: its rows
        locked (rows others hold skipped) and read once."""

    @abstractmethod
    def running_under_claim_lock(
        self, tenant_id: sa.ColumnElement[str]
    ) -> sa.ColumnElement[int] | None:
        """How many executions of the tenant ``tenant_id`` (a column of the row being
        claimed) are running, counted under the tenant's claim lock (held until the
        statement's transaction ends), so one statement can check the cap and claim;
        ``None`` where claims cannot overlap and a plain count serves."""

    @abstractmethod
    def lock_signups(self, conn: sa.Connection) -> None:
        """Hold, until ``conn``'s transaction ends, the lock under which a sign-up that must
        be the first reads whether a tenant exists and writes its own
        (``Store.create_tenant``): the next such sign-up reads after this one committed."""

    @abstractmethod
    def seconds_between(
        self, start: sa.ColumnElement[Any], end: sa.ColumnElement[Any]
    ) -> sa.ColumnElement[float]:
        """``end - start`` in seconds, as a float, computed by the database."""

    @abstractmethod
    def upsert(
        self, table: sa.Table, key: Sequence[str], set_: Mapping[str, Any] | None = None
    ) -> sa.Insert:
        """INSERT a row (values given at execution), or UPDATE the row with the same
        ``key``: with ``set_`` (expressions that may read the existing row), else every
        other column from the new values."""

    @abstractmethod
    def insert_unless_taken(
        self, table: sa.Table, key: Sequence[str], *, where: sa.TextClause | None = None
    ) -> sa.Executable:
        """INSERT a row (values given at execution) unless its unique ``key`` is taken,
        waiting for a concurrent inserter of the same key to finish first; RETURNING the
        primary key when inserted, no row otherwise. ``where``: the predicate of the key's
        partial unique index."""

    def update_then_upsert(
        self, update: sa.Update, table: sa.Table, key: Sequence[str]
    ) -> GuardedUpsert:
        """An op factory: ``make(update_params, row)`` runs ``update`` and, only when it
        matched a row, upserts ``row`` into ``table`` (by ``key``), atomically; the op says
        whether it matched. Run it with ``run_write(op, one_statement=make.one_statement)``.
        """
        upsert = self.upsert(table, key)

        def make(
            update_params: Mapping[str, Any], row: Mapping[str, Any]
        ) -> Callable[[sa.Connection], bool]:
            def op(conn: sa.Connection) -> bool:
                if rowcount(conn, update, update_params) != 1:
                    return False
                rowcount(conn, upsert, row)
                return True

            return op

        return GuardedUpsert(make, one_statement=False)

    def update_upsert_then_claim(
        self,
        update: sa.Update,
        table: sa.Table,
        key: Sequence[str],
        claim: Callable[[sa.ColumnElement[str]], sa.Update],
    ) -> GuardedUpsertThenClaim | None:
        """``update_then_upsert``, then ``claim(tenant_id)`` for the tenant of the row
        ``update`` matched, in one statement (its op gives whether ``update`` matched and
        the claimed row); ``None`` where writes are applied in order and the worker's own
        next claim is no round trip."""
        return None

    @abstractmethod
    async def dispose(self) -> None:
        """Finish the ops already submitted, then close every connection."""

    async def compact(self) -> None:  # noqa: B027 - a no-op unless the dialect needs one
        """Give deleted rows' space back to the file system (PostgreSQL: autovacuum does)."""

    async def vacuum_queue(self, *, min_dead: int) -> QueueVacuum | None:
        """Clear the queue's dead row versions out of the execution table and its indexes
        once ``min_dead`` of them have piled up, where the database keeps them (PostgreSQL);
        ``None`` where it does not, or while too few are dead to be worth it."""
        return None


# -- SQLite -----------------------------------------------------------------------------------
class SqliteDatabase(Database):
    """SQLite: queued writes committed in groups, on the event loop; reader threads.

    SQLite allows one writer at a time, and a commit costs far more than a small statement,
    so writes are *group-committed*: ``run_write`` queues the op, and the writer runs every
    queued op (up to ``SQLITE_MAX_WRITE_BATCH``) in one transaction, each inside a SAVEPOINT
    so a failing op (a taken email, say) rolls back only itself, then commits once and
    resolves the callers. Ops queued while a batch runs form the next one: no timer, so a
    lone write is not delayed.

    A batch runs on the event loop's own thread, synchronously, with the stdlib driver
    (pysqlite): with WAL and ``synchronous=NORMAL`` a commit only appends to the WAL file
    (no fsync), so a batch is tens of microseconds per op. On a writer thread of its own,
    every batch cost a hand-off each way and the thread fought the event loop for the GIL
    at each statement: executions waited on those hand-offs, and ``make bench`` delivered
    ~20 % less (docs/benchmarks.md). Through aiosqlite every statement, BEGIN and COMMIT was
    a hand-off of its own, which capped the store near 200 executions/s. The public URL
    keeps ``sqlite+aiosqlite``.

    What could make a batch wait stays off the loop. Write transactions are
    ``BEGIN IMMEDIATE``, tried on the loop without waiting; when another connection holds
    the write lock (``ipaas`` commands in another process, a compaction), the batch goes to
    the writer thread instead, which waits on ``busy_timeout`` for it. WAL checkpoints (the
    fsyncs) run on a thread of their own (``_Checkpointer``). Readers have their own
    connections and threads and run in autocommit; in WAL mode they never wait for the
    writer.
    """

    #: One writer runs the queued writes in order, one batch at a time.
    writes_in_order = True

    def __init__(self, url: sa.URL) -> None:
        if url.database in (None, "", ":memory:"):
            msg = "an in-memory SQLite database cannot be shared; use memory:// instead"
            raise ValueError(msg)
        self._path = str(url.database)
        _use_wal(self._path)
        sync_url = url.set(drivername="sqlite")  # pysqlite
        # ``isolation_level=None`` turns off pysqlite's own transaction handling, which would
        # otherwise interfere with SAVEPOINTs; ``_run_write_batch`` begins and commits.
        # NullPool: a lane's connection is closed on the lane's thread, not kept in a pool
        # that ``dispose`` would close from the event loop. The writer's connection is used
        # on the event loop and, while another connection holds the write lock, on the
        # writer thread: by one batch at a time, so pysqlite's same-thread check is off.
        args = {"connect_args": {"isolation_level": None}, "poolclass": NullPool, **_ENGINE_ARGS}
        writer_args = args | {"connect_args": {"isolation_level": None, "check_same_thread": False}}
        writer = sa.create_engine(sync_url, **writer_args)
        reader = sa.create_engine(sync_url, **args)
        for engine in (writer, reader):
            sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(writer, "connect", _sqlite_writer_on_connect)
        self._engines = (writer, reader)
        self._outage = _WriteOutage(self._path)
        self._writes = _Batcher(
            [_Lane(writer, "ipaas-sqlite-writer")],
            _run_write_batch,
            max_batch=SQLITE_MAX_WRITE_BATCH,
            run_now=_run_write_batch_now,
            checked=self._outage.checked,
        )
        self._checkpoints = _Checkpointer(self._path)
        self._reads = _Batcher(
            [_Lane(reader, f"ipaas-sqlite-reader-{n}") for n in range(SQLITE_READERS)],
            _run_read_batch,
            max_batch=SQLITE_MAX_READ_BATCH,
        )

    async def run_read(self, op: Callable[[sa.Connection], T]) -> T:
        return await self._reads.submit(op)

    async def run_write(
        self, op: Callable[[sa.Connection], T], *, one_statement: bool = False
    ) -> T:
        # A single statement needs no SAVEPOINT: SQLite undoes a failed statement by itself
        # (its statement journal) and the transaction goes on: two calls into SQLite fewer.
        if one_statement and not isinstance(op, RowInsert):
            op = _SingleStatement(op)
        try:
            return await self._writes.submit(op)
        finally:
            self._checkpoints.wrote()

    async def compact(self) -> None:
        await asyncio.to_thread(_compact_sqlite, self._path)

    def writable(self) -> bool:
        return self._outage.writable()

    def lock_claimable(self, query: sa.Select[tuple[str]]) -> sa.Select[tuple[str]]:
        # One writer (see the class docstring): nothing else can claim meanwhile.
        return query

    def running_under_claim_lock(self, tenant_id: sa.ColumnElement[str]) -> None:
        return None  # one writer: a claim's count of running rows cannot go stale

    def lock_signups(self, conn: sa.Connection) -> None:
        pass  # one writer, each write transaction begun IMMEDIATE: held already

    def seconds_between(
        self, start: sa.ColumnElement[Any], end: sa.ColumnElement[Any]
    ) -> sa.ColumnElement[float]:
        return (sa.func.julianday(end) - sa.func.julianday(start)) * 86_400.0

    def upsert(
        self, table: sa.Table, key: Sequence[str], set_: Mapping[str, Any] | None = None
    ) -> sa.Insert:
        stmt = sqlite.insert(table)
        return stmt.on_conflict_do_update(
            index_elements=list(key), set_=set_ if set_ is not None else _excluded(stmt, key)
        )

    def insert_unless_taken(
        self, table: sa.Table, key: Sequence[str], *, where: sa.TextClause | None = None
    ) -> sa.Executable:
        stmt = sqlite.insert(table).on_conflict_do_nothing(
            index_elements=list(key), index_where=where
        )
        return stmt.returning(*table.primary_key.columns)

    async def dispose(self) -> None:
        await asyncio.gather(self._writes.close(), self._reads.close())
        await self._checkpoints.close()
        for engine in self._engines:
            engine.dispose()


#: Pages one compaction frees at most (4 KiB each).
SQLITE_VACUUM_PAGES = 20_000
#: Pages one step of it frees, in a transaction of its own: the writer's batches wait for
#: the lock while a step runs (~20 ms here) and get it between steps.
SQLITE_VACUUM_STEP_PAGES = 1_000


def _compact_sqlite(path: str) -> None:
    """On a connection of its own (the writer's batches wait for its write lock meanwhile, on
    the writer thread, not on the event loop): free pages go back to the file system
    (``auto_vacuum=INCREMENTAL``, set by ``run_migrations``) a step at a time, with a pause
    as long as the step after each, then the WAL is checkpointed and truncated. Waits on
    ``busy_timeout`` for the writer. In one go, 50,000 pruned executions' pages held the
    lock for 288 ms, and intake waited as long."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    try:
        freed = 0
        while freed < SQLITE_VACUUM_PAGES:
            free = connection.execute("PRAGMA freelist_count").fetchone()[0]
            step = min(free, SQLITE_VACUUM_STEP_PAGES, SQLITE_VACUUM_PAGES - freed)
            if step <= 0:
                break
            started = time.monotonic()
            # executescript steps the pragma to the end; execute() would free a single page.
            connection.executescript(f"PRAGMA incremental_vacuum({step});")
            freed += step
            time.sleep(time.monotonic() - started)
        _truncate_wal(connection)
    finally:
        connection.close()


#: Attempts at truncating the WAL while another connection checkpoints, and the pause
#: between them: ~1 s in all.
SQLITE_TRUNCATE_ATTEMPTS = 50
SQLITE_TRUNCATE_PAUSE_S = 0.02


def _truncate_wal(connection: sqlite3.Connection) -> bool:
    """Checkpoint the WAL and truncate it to zero bytes; ``False`` if it stayed busy.

    A checkpoint that finds another one running (the writer's ``_Checkpointer``, every
    second while writes go on) gives up at once with its busy flag set, without calling the
    busy handler, and leaves the WAL as large as it was: a compaction then gave nothing
    back (seen once in CI: a 24 MB WAL after pruning). So it is tried again, briefly."""
    for attempt in range(SQLITE_TRUNCATE_ATTEMPTS):
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            return True
        if attempt + 1 < SQLITE_TRUNCATE_ATTEMPTS:
            time.sleep(SQLITE_TRUNCATE_PAUSE_S)
    return False


def _use_wal(path: str) -> None:
    """Put the file in WAL mode (it stays so) before any lane connects.

    Switching needs the file to itself. When each lane's first connection asked for it, two
    opening side by side on a file not yet in WAL could fail with "database is locked":
    SQLite refuses a lock upgrade that might deadlock at once, without waiting out
    ``busy_timeout`` (seen as a rare failure of a contract test on a fresh database)."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    try:
        connection.execute("PRAGMA journal_mode=WAL").fetchall()
    finally:
        connection.close()


def _sqlite_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_writer_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    """The writer's connection never waits for a lock unless told to (``_run_write_batch``)
    and never checkpoints inside a commit (``_Checkpointer`` does): its batches run on the
    event loop."""
    dbapi_connection.execute("PRAGMA busy_timeout=0")
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0").fetchall()


class _Checkpointer:
    """WAL checkpoints on a thread and connection of their own, at most every
    ``SQLITE_CHECKPOINT_INTERVAL_S`` while writes go on.

    ``PASSIVE``: a checkpoint copies what it can of the WAL into the database file without
    waiting for the writer or the readers, then syncs the file. Run by a commit (SQLite's
    automatic checkpoint) it would hold the event loop for the copy and the fsync.

    SQLite starts the WAL over only when a write begins with all of it copied. Beside a
    writer that never pauses, a passive checkpoint copies every frame but the ones committed
    while it ran, so that never happens: a soak of 500 webhooks/s grew the WAL to 1.9 GB in
    8 minutes (docs/benchmarks.md), and the disk and the ``-shm`` index with it. Past
    ``SQLITE_WAL_RESTART_FRAMES`` the checkpoint goes on with a ``TRUNCATE``: it takes the
    write lock (writes wait on the writer thread), copies the few frames left, waits for the
    readers to leave the WAL and empties it, so that the next write starts it over. On the
    soak, run by hand (as ``RESTART``), it took 9 ms.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ipaas-sqlite-wal")
        self._conn: sqlite3.Connection | None = None
        self._next_at = 0.0
        self._running: Future[None] | None = None
        #: A write was committed since the last checkpoint began.
        self._pending = False
        #: ``_checkpoints`` is submitted and has not yet decided to stop. Decided under
        #: ``_lock`` with ``_pending``: judged by ``_running.done()``, a write that came as
        #: the thread found nothing pending, before its future was done, was left in the WAL
        #: until the next write.
        self._scheduled = False
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def wrote(self) -> None:
        """A write was committed (or failed): the checkpoint thread copies it, now or once
        the interval since its last checkpoint has passed."""
        with self._lock:
            self._pending = True
            if self._closed.is_set() or self._scheduled:
                return
            self._scheduled = True
        self._running = self._thread.submit(self._checkpoints)

    def _checkpoints(self) -> None:
        """On the checkpoint thread: checkpoint while writes were committed since the last
        one began, at most every ``SQLITE_CHECKPOINT_INTERVAL_S``. So the last writes of a
        burst are copied too, not left in the WAL until the next write."""
        while not self._closed.is_set():
            with self._lock:
                if not self._pending:
                    self._scheduled = False
                    return
            wait = self._next_at - time.monotonic()
            if wait > 0 and self._closed.wait(wait):
                return
            self._pending = False
            self._next_at = time.monotonic() + SQLITE_CHECKPOINT_INTERVAL_S
            self._checkpoint()

    def _checkpoint(self) -> None:
        """On the checkpoint thread."""
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(self._path, isolation_level=None)
                self._conn.execute(f"PRAGMA busy_timeout={SQLITE_WAL_RESTART_WAIT_MS}")
            _, frames, _ = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames > SQLITE_WAL_RESTART_FRAMES:
                # Busy (a reader stayed, the writer held on): tried again at the next one.
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:  # the next one tries again; the WAL only grows meanwhile
            _log.warning("sqlite_checkpoint_failed", error=repr(exc))

    def _close(self) -> None:
        """On the checkpoint thread."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    async def close(self) -> None:
        """Wait for a checkpoint under way, then close the connection."""
        if self._closed.is_set():
            return
        self._closed.set()
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown()


@dataclass(frozen=True, slots=True)
class _SingleStatement:
    """A write op that runs one statement (``run_write(..., one_statement=True)``)."""

    op: Callable[[sa.Connection], Any]

    def __call__(self, conn: sa.Connection) -> Any:
        return self.op(conn)


@dataclass(frozen=True, slots=True)
class RowInsert:
    """A write op that inserts one row with a plain ``INSERT`` (no ``ON CONFLICT``, no
    ``RETURNING``); its result is the row count, 1. The SQLite writer runs consecutive ones
    of the same statement in a batch as one executemany (``_run_write_batch``)."""

    stmt: sa.Insert
    values: Mapping[str, Any]

    def __call__(self, conn: sa.Connection) -> int:
        return rowcount(conn, self.stmt, self.values)


@dataclass(frozen=True, slots=True)
class RowFetch:
    """A write op of one statement that returns exactly one row, atomic on its own; its
    result is that row, as a mapping. PostgreSQL runs the ones of one statement submitted in
    one event-loop iteration as one pipelined fetchmany, in one implicit transaction
    (``PostgresDatabase._fetch_rows``): one round trip and one commit for all of them.
    ``order`` sorts them in such a batch: batches that take their row locks in one order
    cannot deadlock with each other or with a statement that locks rows by primary key."""

    stmt: sa.Executable
    params: Mapping[str, Any]
    order: str = ""

    def __call__(self, conn: sa.Connection) -> Mapping[str, Any]:
        (row,) = mappings(conn, self.stmt, self.params)
        return row


def fetch_rows(
    conn: sa.Connection, stmt: sa.Executable, rows: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]] | None:
    """Run a statement that returns exactly one row once per set of parameters, as one
    fetchmany on asyncpg (atomic: one implicit transaction); the rows in order. ``None``
    where it cannot (another driver, a statement SQLAlchemy must run): run them one by one."""
    if conn.dialect.driver != "asyncpg" or any(tuple(row) != tuple(rows[0]) for row in rows):
        return None
    prepared = _driver_statement(conn, stmt, rows[0], with_rows=True)
    if prepared is None:
        return None
    keys = prepared.keys
    assert keys is not None
    fetched = prepared.rows_many(conn, rows)
    if len(fetched) != len(rows):
        msg = f"{len(fetched)} rows for {len(rows)} statements that return one row each"
        raise RuntimeError(msg)
    return [dict(zip(keys, row, strict=True)) for row in fetched]


def rowcount(conn: sa.Connection, stmt: sa.Executable, params: Mapping[str, Any]) -> int:
    """Run a write statement that returns no rows; the number of rows it matched. Straight
    on the driver where it can (``_driver_statement``), else through SQLAlchemy."""
    prepared = _driver_statement(conn, stmt, params, with_rows=False)
    if prepared is not None:
        return prepared.run(conn, params)
    count: int = conn.execute(stmt, params).rowcount
    return count


def tuples(
    conn: sa.Connection, stmt: sa.Executable, params: Mapping[str, Any]
) -> Sequence[tuple[Any, ...]]:
    """Every row of a statement with results (a SELECT, or a write with RETURNING), as tuples
    of its columns' values. Straight on the driver where it can (``_driver_statement``),
    else through SQLAlchemy; the values are the same either way."""
    prepared = _driver_statement(conn, stmt, params, with_rows=True)
    if prepared is not None:
        return prepared.rows(conn, params)
    return [tuple(row) for row in conn.execute(stmt, params)]


def mappings(
    conn: sa.Connection, stmt: sa.Executable, params: Mapping[str, Any]
) -> list[Mapping[Any, Any]]:
    """``tuples``, each row as a mapping of column key to value."""
    prepared = _driver_statement(conn, stmt, params, with_rows=True)
    if prepared is not None:
        keys = prepared.keys
        assert keys is not None
        return [dict(zip(keys, row, strict=True)) for row in prepared.rows(conn, params)]
    return list(conn.execute(stmt, params).mappings())


def execute_many(
    conn: sa.Connection, stmt: sa.Executable, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Run a write statement without results once per row of parameters, as one
    executemany; on the driver where it can (every row with the same keys)."""
    keys = tuple(rows[0])
    prepared = _driver_statement(conn, stmt, rows[0], with_rows=False)
    if prepared is not None and all(tuple(row) == keys for row in rows):
        prepared.run_many(conn, rows)
    else:
        conn.execute(stmt, list(rows))


def _driver_statement(
    conn: sa.Connection, stmt: sa.Executable, params: Mapping[str, Any], *, with_rows: bool
) -> _DriverStatement | None:
    """``stmt`` compiled to run on the driver, if it can and returns rows or not as
    ``with_rows`` says; else ``None``: through SQLAlchemy. On SQLite always; on PostgreSQL
    in autocommit only (a transaction is begun by SQLAlchemy's adapter on its first
    statement, which the driver would bypass)."""
    match conn.dialect.driver:
        case "pysqlite":
            pass
        case "asyncpg" if cast(Any, conn.connection.dbapi_connection).autocommit:
            pass
        case _:
            return None
    prepared = _DriverStatement.of(conn.dialect, stmt, tuple(params))
    if prepared is None or (prepared.keys is not None) != with_rows:
        return None
    return prepared


@dataclass(frozen=True, slots=True)
class _DriverStatement:
    """A statement compiled once for the dialect and run on the driver (pysqlite, asyncpg)
    directly: its SQL, its parameters in order and their bind processors, and for a
    statement with results its column keys and their result processors (SQLAlchemy's own,
    so values are stored and read exactly as through ``Connection.execute``).

    For the statements every execution runs (claims, finishes, step records), SQLAlchemy's
    execution layers cost as much as the database's own work: on SQLite a finish and its
    step record took ~59 us through ``Connection.execute`` and ~28 us on the driver; on
    PostgreSQL a worker's claim took ~250 us of client CPU through SQLAlchemy and ~190 on
    the driver, a finish with its step and the next claim ~390 and ~250 (micro-benchmarks,
    docs/benchmarks.md). Driver errors are wrapped as SQLAlchemy wraps them
    (``sa.exc.IntegrityError``, ...). Statements with IN lists expanded per call or
    literal-execute parameters go through SQLAlchemy (``of`` gives ``None``).
    """

    #: Keeps the statement alive, so no other statement takes its ``id`` (the cache key).
    stmt: sa.Executable
    compiled: SQLCompiler
    sql: str
    names: tuple[str, ...]
    processors: Mapping[str, Callable[[Any], Any]]
    #: The result columns' keys, or None: a write without results (``rowcount``).
    keys: tuple[str, ...] | None
    #: The result columns whose driver value goes through a result processor: (index,
    #: processor); the others' values are final as the driver gives them.
    results: tuple[tuple[int, Callable[[Any], Any]], ...]

    #: Per dialect (its JSON serializer is the engine's): (id(statement), parameter names)
    #: -> the statement, or None: through SQLAlchemy.
    _cache: ClassVar[
        WeakKeyDictionary[sa.Dialect, dict[tuple[int, tuple[str, ...]], _DriverStatement | None]]
    ] = WeakKeyDictionary()

    @classmethod
    def of(
        cls, dialect: sa.Dialect, stmt: sa.Executable, keys: tuple[str, ...]
    ) -> _DriverStatement | None:
        key = (id(stmt), keys)
        cache = cls._cache.get(dialect)
        if cache is None:
            cache = cls._cache[dialect] = {}
        try:
            return cache[key]
        except KeyError:
            found = cache[key] = cls._compile(dialect, stmt, keys)
            return found

    @classmethod
    def _compile(
        cls, dialect: sa.Dialect, stmt: sa.Executable, keys: tuple[str, ...]
    ) -> _DriverStatement | None:
        # ``_returning``, not the compiled statement's ``effective_returning``: reading that
        # left the statement unable to give a RETURNING copy its columns (SQLAlchemy 2.1).
        if isinstance(stmt, (sa.Insert, sa.Update, sa.Delete)):
            with_rows = bool(stmt._returning)
        elif isinstance(stmt, sa.Select):
            with_rows = True
        else:
            return None
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
        assert isinstance(compiled, SQLCompiler)
        names = tuple(compiled.positiontup or ())
        if (
            compiled.post_compile_params
            or compiled.literal_execute_params
            or not compiled.positional
            or not set(names) <= compiled.binds.keys()
        ):
            return None
        # The dialect's own type (SQLite's DATETIME format), as ``Connection.execute`` uses.
        processors = {
            name: processor
            for name, bind in compiled.binds.items()
            if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }
        if not with_rows:
            return cls(stmt, compiled, compiled.string, names, processors, None, ())
        columns = compiled._result_columns
        if not columns or compiled._textual_ordered_columns or compiled._ad_hoc_textual:
            return None
        return cls(
            stmt,
            compiled,
            compiled.string,
            names,
            processors,
            tuple(column.keyname for column in columns),
            tuple(
                (index, processor)
                for index, column in enumerate(columns)
                if (processor := column.type.dialect_impl(dialect).result_processor(dialect, None))
                is not None
            ),
        )

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        values = self.compiled.construct_params(params)
        processors = self.processors
        return [
            processors[name](values[name]) if name in processors else values[name]
            for name in self.names
        ]

    def run(self, conn: sa.Connection, params: Mapping[str, Any]) -> int:
        count: int = self._on_driver(conn, "execute", self.args(params))
        return count

    def run_many(self, conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        self._on_driver(conn, "executemany", [self.args(row) for row in rows])

    def rows(self, conn: sa.Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return self._processed(self._on_driver(conn, "fetch", self.args(params)))

    def rows_many(
        self, conn: sa.Connection, rows: Sequence[Mapping[str, Any]]
    ) -> list[tuple[Any, ...]]:
        """Every row of the statement run once per set of parameters (asyncpg only)."""
        return self._processed(self._on_driver(conn, "fetchmany", [self.args(row) for row in rows]))

    def _processed(self, fetched: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        if not self.results:
            return [tuple(row) for row in fetched]
        processed: list[tuple[Any, ...]] = []
        for row in fetched:
            values = list(row)
            for index, processor in self.results:
                values[index] = processor(values[index])
            processed.append(tuple(values))
        return processed

    def _on_driver(self, conn: sa.Connection, method: str, args: Any) -> Any:
        """``execute`` (the row count), ``executemany`` (nothing), ``fetch`` (every row, as
        sequences of the driver's values) or, on asyncpg, ``fetchmany`` (``fetch`` once per
        set of arguments, atomic) on the driver; its errors as SQLAlchemy raises them."""
        if conn.dialect.driver == "asyncpg":
            return _on_asyncpg(conn, self.sql, method, args)
        driver = conn.connection.driver_connection
        assert driver is not None
        try:
            # A statement with RETURNING may fail while its rows are read: fetched here.
            if method == "fetch":
                return driver.execute(self.sql, args).fetchall()
            cursor: sqlite3.Cursor = getattr(driver, method)(self.sql, args)
        except sqlite3.Error as exc:
            raise sa.exc.DBAPIError.instance(
                self.sql, args, exc, sqlite3.Error, dialect=conn.dialect
            ) from exc
        return cursor.rowcount


def _on_asyncpg(conn: sa.Connection, sql: str, method: str, args: Any) -> Any:
    """``_DriverStatement._on_driver`` on asyncpg, awaited from the op's greenlet (as
    SQLAlchemy's adapter awaits it), on a connection in autocommit.

    Errors take SQLAlchemy's own path: the adapter translates asyncpg's exception to its DBAPI
    class, and ``Connection._handle_dbapi_exception`` wraps it (``sa.exc.IntegrityError``,
    ...) and, on a disconnect, invalidates the connection and the pool, as for any statement
    run through ``Connection.execute``."""
    adapter = cast(Any, conn.connection.dbapi_connection)
    try:
        match method:
            case "fetch":
                return adapter.run_async(lambda raw: raw.fetch(sql, *args))
            case "fetchmany":
                return adapter.run_async(lambda raw: raw.fetchmany(sql, args))
            case "execute":
                status: str = adapter.run_async(lambda raw: raw.execute(sql, *args))
                # "UPDATE 3", "DELETE 0", "INSERT 0 1": the count is the last word.
                return int(status.rsplit(" ", 1)[-1])
            case _:
                return adapter.run_async(lambda raw: raw.executemany(sql, args))
    except Exception as exc:
        try:
            adapter._handle_exception(exc)  # raises the DBAPI's class of it
        except Exception as translated:
            conn._handle_dbapi_exception(translated, sql, args, None, None)
        raise  # not reached: both raise
    except BaseException as exc:  # cancelled mid-statement: the connection is spoiled
        conn._handle_dbapi_exception(exc, sql, args, None, None)
        raise  # not reached


class _TransactionLostError(Exception):
    """SQLite rolled the whole transaction back on an op's error (disk full, I/O error)."""


#: SQLite's errors that say the machine cannot take a write now, not that the write is
#: wrong: the disk is full, an I/O error, the file turned read-only (a file system
#: remounted read-only after errors), another connection held the write lock past
#: ``SQLITE_BUSY_TIMEOUT_MS``. Their callers get ``StoreUnavailable``, as for an
#: unreachable PostgreSQL: intake answers 503 + ``Retry-After`` and the engine waits the
#: outage out (``Executor._outlasting``), where a raw error was a 500 and a crashed
#: execution.
SQLITE_UNAVAILABLE = {
    sqlite3.SQLITE_FULL: "disk_full",
    sqlite3.SQLITE_IOERR: "io_error",
    sqlite3.SQLITE_READONLY: "read_only",
    sqlite3.SQLITE_BUSY: "locked",
}


def _sqlite_error(exc: BaseException) -> sqlite3.Error | None:
    """The driver's error that ``exc`` is, or was caused by."""
    cause: BaseException | None = exc
    for _ in range(8):  # SQLAlchemy's wrapper, ``_TransactionLostError``: a short chain
        if cause is None or isinstance(cause, sqlite3.Error):
            return cause
        orig = cause.orig if isinstance(cause, sa.exc.DBAPIError) else None
        cause = orig if isinstance(orig, BaseException) else cause.__cause__
    return None


def sqlite_outage(exc: BaseException) -> str | None:
    """Which of ``SQLITE_UNAVAILABLE``'s reasons ``exc`` is (or was caused by), if any."""
    error = _sqlite_error(exc)
    code = getattr(error, "sqlite_errorcode", None)
    return SQLITE_UNAVAILABLE.get(code & 0xFF) if isinstance(code, int) else None


class _WriteOutage:
    """Writes failing for a reason of the machine's: SQLite's ``SQLITE_UNAVAILABLE``, a
    PostgreSQL whose disk is full (``PG_DISK_FULL``).

    On SQLite every batch's outcomes pass through ``checked`` on the event loop: the errors
    become ``StoreUnavailable``. The outage is logged once when it starts (an error: an
    operator has to free the disk) and once when a write goes through after
    ``STORE_RETRY_AFTER_S`` without a failure. The store is not ready for
    ``STORE_RETRY_AFTER_S`` after each failure, so that a readiness probe that stopped the
    traffic lets it back to try again.
    """

    def __init__(self, path: str, database: str = "sqlite") -> None:
        self._path = path
        self._database = database
        self.reason: str | None = None
        self._since = 0.0
        self._failed_at = 0.0

    def wrote(self) -> None:
        """A write went through."""
        if self.reason is not None and not self._failing_lately():
            # A small write can fit where a larger one found no room: told once the
            # failures have stopped for a while, not at every write that goes through.
            _log.info(
                f"{self._database}_writes_recovered",
                reason=self.reason,
                after_s=round(time.monotonic() - self._since, 3),
                path=self._path,
            )
            self.reason = None

    def checked(self, outcomes: list[_Outcome]) -> list[_Outcome]:
        if self.reason is None and all(outcome.ok for outcome in outcomes):
            return outcomes  # the usual batch: nothing to look at
        reason, failure, source, wrote = None, None, None, False
        checked = []
        for outcome in outcomes:
            why = None if outcome.ok else sqlite_outage(outcome.value)
            if why is None:
                wrote = wrote or outcome.ok
                checked.append(outcome)
                continue
            if failure is None or source is not outcome.value:  # a batch shares one error
                source = outcome.value
                failure = StoreUnavailable()
                failure.__cause__ = _sqlite_error(source)
            reason = why
            checked.append(_Outcome(ok=False, value=failure))
        if reason is not None:
            self.failed(reason, failure.__cause__ if failure is not None else None)
        elif wrote:
            self.wrote()
        return checked

    def failed(self, reason: str, cause: BaseException | None) -> None:
        """A write failed for ``reason``."""
        now = time.monotonic()
        if self.reason is None:
            _log.error(
                f"{self._database}_writes_failing",
                reason=reason,
                path=self._path,
                error=repr(cause),
            )
            self._since = now
        self.reason = reason
        self._failed_at = now

    def _failing_lately(self) -> bool:
        return time.monotonic() - self._failed_at < STORE_RETRY_AFTER_S

    def writable(self) -> bool:
        return self.reason is None or not self._failing_lately()


def _run_write_batch(conn: sa.Connection, ops: Sequence[_Op]) -> list[_Outcome]:
    """Run ``ops`` in one transaction, each op of several statements in a SAVEPOINT, and
    each run of consecutive ``RowInsert``s of one statement as one executemany; on the
    writer thread, which waits for another connection's write lock (``busy_timeout``)."""
    outcomes = _write_batch(conn, ops, wait=True)
    assert outcomes is not None
    return outcomes


def _run_write_batch_now(conn: sa.Connection, ops: Sequence[_Op]) -> list[_Outcome] | None:
    """``_run_write_batch`` on the calling thread (the event loop's), without waiting for the
    write lock: ``None``, and nothing run, when another connection holds it."""
    return _write_batch(conn, ops, wait=False)


def _write_batch(conn: sa.Connection, ops: Sequence[_Op], *, wait: bool) -> list[_Outcome] | None:
    # Transaction statements go to the driver directly: ``Connection.begin_nested()`` costs
    # ~130 us of SQLAlchemy bookkeeping per op, a bare SAVEPOINT ~5 us; and a ``begin``
    # event listener would make SQLAlchemy dispatch events around every statement.
    # SQLAlchemy's own transaction stays logical (pysqlite sends nothing to begin it).
    driver = conn.connection.driver_connection
    assert driver is not None
    outcomes: list[_Outcome] = []
    try:
        if not _begin_immediate(driver, wait=wait):
            return None
        index = 0
        while index < len(ops):
            run = _insert_run(ops, index)
            if len(run) > 1 and _insert_many(conn, driver, run):
                outcomes.extend([_Outcome(ok=True, value=1)] * len(run))
                index += len(run)
                continue
            # A failed group's rows each run alone, not regrouped: a bad row near its end
            # would otherwise fail one executemany after another.
            alone: Sequence[_Op] = run or ops[index : index + 1]
            outcomes.extend(_run_op(conn, driver, op) for op in alone)
            index += len(alone)
        driver.commit()
    except Exception as exc:  # BEGIN or COMMIT failed, or the transaction was lost
        # Nothing of this batch was committed: every caller gets the error.
        with contextlib.suppress(Exception):
            driver.rollback()
        failed = _Outcome(ok=False, value=exc)
        outcomes = [failed] * len(ops)
    _reset(conn)
    return outcomes


def _begin_immediate(driver: Any, *, wait: bool) -> bool:
    """``BEGIN IMMEDIATE``: the write lock, taken up front. ``False`` when another connection
    holds it and ``wait`` is off; with ``wait``, up to ``SQLITE_BUSY_TIMEOUT_MS`` for it (the
    writer's connection otherwise never waits: ``_sqlite_writer_on_connect``)."""
    if not wait:
        try:
            driver.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
                return False
            raise
        return True
    driver.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    try:
        driver.execute("BEGIN IMMEDIATE")
    finally:
        driver.execute("PRAGMA busy_timeout=0")
    return True


def _run_op(conn: sa.Connection, driver: Any, op: _Op) -> _Outcome:
    # A single statement needs no SAVEPOINT (``SqliteDatabase.run_write``).
    guarded = not isinstance(op, (_SingleStatement, RowInsert))
    if guarded:
        driver.execute("SAVEPOINT op")
    try:
        result = op(conn)
    except Exception as exc:
        # A failed statement undoes only itself, and the SAVEPOINT the rest of the op; but
        # some errors end SQLite's whole transaction, and the next ops would then
        # autocommit one by one.
        if not driver.in_transaction:
            raise _TransactionLostError from exc
        if guarded:
            driver.execute("ROLLBACK TO op")
            driver.execute("RELEASE op")
        return _Outcome(ok=False, value=exc)
    if guarded:
        driver.execute("RELEASE op")
    return _Outcome(ok=True, value=result)


def _insert_run(ops: Sequence[_Op], start: int) -> Sequence[RowInsert]:
    """The ``RowInsert``s of one statement from ``ops[start]`` on (empty: not one)."""
    first = ops[start]
    if not isinstance(first, RowInsert):
        return ()
    end = start + 1
    while end < len(ops):
        op = ops[end]
        if not isinstance(op, RowInsert) or op.stmt is not first.stmt:
            break
        end += 1
    return cast(Sequence[RowInsert], ops[start:end])


def _insert_many(conn: sa.Connection, driver: Any, run: Sequence[RowInsert]) -> bool:
    """Insert ``run``'s rows with one executemany; ``False`` (nothing inserted) when one row
    failed, so that each is inserted again alone and only that one fails."""
    # One statement for N rows: SQLAlchemy's per-execution work (~60 us) once, not N times.
    driver.execute("SAVEPOINT many")
    try:
        execute_many(conn, run[0].stmt, [op.values for op in run])
    except Exception as exc:
        if not driver.in_transaction:
            raise _TransactionLostError from exc
        driver.execute("ROLLBACK TO many")
        driver.execute("RELEASE many")
        return False
    driver.execute("RELEASE many")
    return True


def _run_read_batch(conn: sa.Connection, ops: Sequence[_Op]) -> list[_Outcome]:
    """Run read ops one after the other; on a reader thread."""
    outcomes: list[_Outcome] = []
    for op in ops:
        try:
            outcomes.append(_Outcome(ok=True, value=op(conn)))
        except Exception as exc:
            outcomes.append(_Outcome(ok=False, value=exc))
    # Ends SQLAlchemy's implicit transaction (nothing at the driver, which autocommits) and
    # lets the connection recover after an invalidating error.
    _reset(conn)
    return outcomes


def _reset(conn: sa.Connection) -> None:
    """Leave ``conn`` ready for the next batch whatever state an error left it in."""
    # A broken connection fails the next batch, with its own error.
    with contextlib.suppress(Exception):
        conn.rollback()


# -- group commit machinery -------------------------------------------------------------------
_Op = Callable[[sa.Connection], Any]


@dataclass(frozen=True, slots=True)
class _Outcome:
    ok: bool
    value: Any


@dataclass(frozen=True, slots=True)
class _Job:
    op: _Op
    future: asyncio.Future[Any]


class _Lane:
    """One thread and the connection only it uses."""

    def __init__(self, engine: sa.Engine, name: str) -> None:
        self._engine = engine
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sa.Connection | None = None

    def connection(self) -> sa.Connection:
        """The lane's connection, opened on first use; call on the lane's thread only."""
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def close(self) -> None:
        """Close the connection; call on the lane's thread only."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()


class _Batcher:
    """Queues ops from the event loop and runs them in batches, on the loop or on a thread.

    A batch starts as soon as a lane is free, one event loop iteration after the current one
    (so the ops that callers woken together submit travel together, and so do the ops of the
    tasks those callers wake in turn: a worker's next claim joins the finish that freed its
    slot), and takes every queued op up to ``max_batch``. With ``run_now``, the batch runs
    at once on the loop's thread, unless ``run_now`` declines it (returns ``None``); else,
    or then, the lane's thread runs it and posts the outcomes back in one
    ``call_soon_threadsafe``. Either way the callers hear back in a later loop iteration,
    and the next batch starts from there (through ``checked``, when given, on the loop).
    An op whose caller was cancelled while it was still queued is dropped; once in a batch
    it runs to the end and its outcome is discarded.
    """

    def __init__(
        self,
        lanes: list[_Lane],
        run_batch: Callable[[sa.Connection, Sequence[_Op]], list[_Outcome]],
        *,
        max_batch: int,
        run_now: Callable[[sa.Connection, Sequence[_Op]], list[_Outcome] | None] | None = None,
        checked: Callable[[list[_Outcome]], list[_Outcome]] | None = None,
    ) -> None:
        self._lanes = lanes
        self._checked = checked
        self._idle = list(lanes)
        self._run_batch = run_batch
        self._run_now = run_now
        self._max_batch = max_batch
        self._pending: deque[_Job] = deque()
        self._flush_scheduled = False
        self._closed = False
        self._drained: asyncio.Event | None = None

    def submit(self, op: Callable[[sa.Connection], T]) -> asyncio.Future[T]:
        if self._closed:
            msg = "the database is closed"
            raise RuntimeError(msg)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append(_Job(op, future))
        if self._idle and not self._flush_scheduled:
            self._flush_scheduled = True
            # Two hops: see the class docstring.
            loop.call_soon(loop.call_soon, self._flush, loop)
        return future

    async def close(self) -> None:
        """Refuse new ops, wait for the queued and running ones, close the connections."""
        if self._closed:
            return
        self._closed = True
        self._drained = asyncio.Event()
        self._check_drained()
        await self._drained.wait()
        loop = asyncio.get_running_loop()
        for lane in self._lanes:
            await loop.run_in_executor(lane.thread, lane.close)
            lane.thread.shutdown()

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flush_scheduled = False
        while self._idle and self._pending:
            batch: list[_Job] = []
            while self._pending and len(batch) < self._max_batch:
                job = self._pending.popleft()
                if not job.future.cancelled():
                    batch.append(job)
            if batch:
                lane = self._idle.pop()
                if not self._ran_now(loop, lane, batch):
                    lane.thread.submit(self._run, loop, lane, batch)
        self._check_drained()

    def _ran_now(self, loop: asyncio.AbstractEventLoop, lane: _Lane, batch: list[_Job]) -> bool:
        """Run ``batch`` with ``run_now`` on the loop's thread; ``False`` if it declined."""
        if self._run_now is None:
            return False
        try:
            outcomes = self._run_now(lane.connection(), [job.op for job in batch])
        except Exception as exc:  # e.g. the connection cannot be opened
            outcomes = [_Outcome(ok=False, value=exc)] * len(batch)
        if outcomes is None:
            return False
        loop.call_soon(self._done, loop, lane, batch, outcomes)
        return True

    def _run(self, loop: asyncio.AbstractEventLoop, lane: _Lane, batch: list[_Job]) -> None:
        """On the lane's thread."""
        try:
            outcomes = self._run_batch(lane.connection(), [job.op for job in batch])
        except BaseException as exc:  # e.g. the connection cannot be opened
            outcomes = [_Outcome(ok=False, value=exc)] * len(batch)
        # RuntimeError: the loop is closed, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._done, loop, lane, batch, outcomes)

    def _done(
        self,
        loop: asyncio.AbstractEventLoop,
        lane: _Lane,
        batch: list[_Job],
        outcomes: list[_Outcome],
    ) -> None:
        self._idle.append(lane)
        if self._checked is not None:
            outcomes = self._checked(outcomes)
        for job, outcome in zip(batch, outcomes, strict=True):
            if job.future.cancelled():
                continue
            if outcome.ok:
                job.future.set_result(outcome.value)
            else:
                job.future.set_exception(outcome.value)
        self._flush(loop)

    def _check_drained(self) -> None:
        if self._drained is not None and not self._pending and len(self._idle) == len(self._lanes):
            self._drained.set()


# -- PostgreSQL -------------------------------------------------------------------------------
#: Most rows one ``PostgresDatabase`` executemany inserts (one transaction).
PG_MAX_INSERT_BATCH = 256


@dataclass(frozen=True, slots=True)
class PoolSize:
    """Connections one process keeps open (``size``) and may open beyond them at peaks
    (``overflow``): at most ``size + overflow`` per process (IPAAS_DB_POOL_SIZE/_OVERFLOW).
    No overflow by default: an overflow connection is closed when returned, so bursts beyond
    the pool would spend their time opening connections (see docs/operations.md, Sizing)."""

    size: int = 20
    overflow: int = 0


@dataclass(slots=True, eq=False)
class _Held:
    conn: AsyncConnection
    autocommit: bool


class _HeldConnections:
    """Every op's connection, kept checked out of SQLAlchemy's pool between ops and lent to
    one op at a time. Checking a connection out of the pool and back in cost ~120-190 us of
    client CPU per op here, as much as a statement's own work (docs/benchmarks.md).

    Idle ones are kept per mode (autocommit for single statements, READ COMMITTED
    transactions for the rest). An op takes an idle one of its mode, else opens one while
    fewer than ``size`` (the pool's size) are open, else switches an idle one of the other
    mode (switching on every op cost ~160 us per switch in a micro-benchmark), else waits
    up to ``timeout_s`` (the pool's timeout: then ``StoreUnavailable``). So a process keeps
    up to its pool's size open: its peak of concurrent single statements plus that of
    transactions.

    A connection is lent again only after its op succeeded or the server refused a statement
    (a constraint, bad data). After anything else (a lost connection, a cancelled op that may
    have left a command in flight) it is invalidated and given back to the pool, which
    opens a new one when needed; a lost connection also gives back every idle one, as the
    pool invalidates all of its own on a disconnect.
    """

    def __init__(self, engine: AsyncEngine, size: int, timeout_s: float, *, overflow: bool) -> None:
        #: Its connections start in autocommit.
        self._engine = engine
        self._size = size
        #: When all are lent: borrow one of the pool's overflow connections (closed when
        #: returned) rather than wait.
        self._overflow = overflow
        self._timeout_s = timeout_s
        self._idle: dict[bool, list[_Held]] = {True: [], False: []}
        #: Lent, idle or being opened.
        self._open = 0
        self._freed = asyncio.Event()
        self._giving_back: set[asyncio.Task[None]] = set()
        self._closed = False

    async def run(self, op: Callable[[sa.Connection], T], *, transaction: bool) -> T:
        # After ``close``, or beyond the held ones with overflow allowed: from the pool.
        if self._closed or (self._overflow and self._open >= self._size and not self._idle_any):
            return await self._run_pooled(op, transaction=transaction)
        held = await self._acquire(autocommit=not transaction)
        try:
            if transaction:
                async with held.conn.begin():
                    result = await held.conn.run_sync(op)
            else:
                result = await held.conn.run_sync(op)
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                self._give_back(held, invalidate=False)  # SQLAlchemy invalidated it
                self._give_back_idle()
            elif _refused_by_server(exc):
                self._keep(held)
            else:
                self._give_back(held, invalidate=True)
            raise
        except BaseException:
            self._give_back(held, invalidate=True)
            raise
        self._keep(held)
        return result

    @property
    def _idle_any(self) -> bool:
        return bool(self._idle[True] or self._idle[False])

    async def _run_pooled(self, op: Callable[[sa.Connection], T], *, transaction: bool) -> T:
        async with self._engine.connect() as pooled:
            if not transaction:
                return await pooled.run_sync(op)
            await pooled.execution_options(isolation_level=_TRANSACTIONS)
            async with pooled.begin():
                return await pooled.run_sync(op)

    async def _acquire(self, *, autocommit: bool) -> _Held:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        while True:
            if self._idle[autocommit]:
                return self._idle[autocommit].pop()
            if self._open < self._size:
                self._open += 1  # counted before the await: concurrent callers see it
                try:
                    held = _Held(await self._engine.connect(), autocommit=True)
                    await self._switch(held, autocommit=autocommit)
                except BaseException:
                    self._open -= 1
                    self._freed.set()
                    raise
                return held
            if self._idle[not autocommit]:
                held = self._idle[not autocommit].pop()
                try:
                    await self._switch(held, autocommit=autocommit)
                except BaseException:
                    self._give_back(held, invalidate=True)
                    raise
                return held
            remaining = deadline - loop.time()
            if remaining <= 0:
                msg = f"no PostgreSQL connection free within {self._timeout_s:g} s"
                raise sa.exc.TimeoutError(msg)
            self._freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._freed.wait(), remaining)

    @staticmethod
    async def _switch(held: _Held, *, autocommit: bool) -> None:
        if held.autocommit != autocommit:
            level = "AUTOCOMMIT" if autocommit else _TRANSACTIONS
            if held.conn.in_transaction():
                # SQLAlchemy begins its own transaction object even in autocommit, where
                # ending it sends nothing; the level can change only between them.
                await held.conn.commit()
            await held.conn.execution_options(isolation_level=level)
            held.autocommit = autocommit

    def _keep(self, held: _Held) -> None:
        if self._closed:  # an op that outlasted ``close``: nothing may stay held
            self._give_back(held, invalidate=False)
            return
        self._idle[held.autocommit].append(held)
        self._freed.set()

    def _give_back(self, held: _Held, *, invalidate: bool) -> None:
        async def give_back() -> None:
            with contextlib.suppress(Exception):
                if invalidate:
                    await held.conn.invalidate()
                await held.conn.close()

        self._open -= 1
        self._freed.set()
        # A task of its own: the op's caller may be being cancelled.
        task = asyncio.create_task(give_back())
        self._giving_back.add(task)
        task.add_done_callback(self._giving_back.discard)

    def _give_back_idle(self) -> None:
        for idle in (*self._idle[True], *self._idle[False]):
            self._give_back(idle, invalidate=False)
        self._idle[True].clear()
        self._idle[False].clear()

    async def close(self) -> None:
        self._closed = True
        self._give_back_idle()
        if self._giving_back:
            await asyncio.gather(*self._giving_back, return_exceptions=True)


#: The isolation level of every transaction: each statement sees the latest commits (what
#: the claim's tenant locks rely on).
_TRANSACTIONS = "READ COMMITTED"


def _without_nul_on(dialect: sa.Dialect) -> None:
    """Every string parameter ``dialect`` sends has U+0000 replaced by U+FFFD.

    PostgreSQL's text types cannot hold U+0000 (``invalid byte sequence for encoding
    "UTF8": 0x00``), where SQLite and the memory store can. Text with one reached the store
    from a name sent to the API, an id in a URL (``/api/webhooks/wf%00``, no sign-in needed)
    and a remote API's error text, and each was a 500, and the last a finish that could
    never be written. Replaced here, once for every statement: a write stores the text with
    U+FFFD in its place, and a lookup by such a value finds nothing, as no id or email holds
    one. The API refuses it in names up front (``kit/text.py``). Typed parameters only
    (every column's and ``bindparam``'s); JSON columns hold it escaped, as ``\\u0000``.
    """
    from sqlalchemy.dialects.postgresql.asyncpg import AsyncpgString

    class _PgString(AsyncpgString):
        def bind_processor(self, dialect: sa.Dialect) -> Callable[[Any], Any]:
            return without_nul

    # The dialect's own mapping, read when a type is first adapted to it; set before that.
    dialect.colspecs = {**dialect.colspecs, sa.String: _PgString}


class PostgresDatabase(Database):
    """PostgreSQL: one pool; row locks with SKIP LOCKED keep concurrent claimers apart.

    Ops run through ``AsyncConnection.run_sync`` on the asyncpg pool: concurrent writers
    proceed in parallel on their own connections, and the server commits them.
    """

    def __init__(self, url: sa.URL, pool: PoolSize) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        self._engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool.size,
            max_overflow=pool.overflow,
            pool_recycle=1800,
            # An unreachable server fails a request within seconds (asyncpg's connect timeout
            # is 60 s; the pool's checkout wait 30 s): the caller answers 503 instead.
            pool_timeout=PG_POOL_TIMEOUT_S,
            connect_args={
                "timeout": PG_CONNECT_TIMEOUT_S,
                # A statement waits this long for a lock, as SQLite's busy_timeout: then
                # the API answers 503 + Retry-After and the engine waits, not hangs.
                "server_settings": {"lock_timeout": str(int(PG_LOCK_TIMEOUT_S * 1000))},
            },
            **_ENGINE_ARGS,
        )
        _without_nul_on(self._engine.sync_engine.dialect)
        # Connections start in autocommit: no BEGIN/COMMIT round trips around a statement
        # that is atomic on its own (a third of the round trips of a transaction).
        self._held = _HeldConnections(
            self._engine.execution_options(isolation_level="AUTOCOMMIT"),
            pool.size,
            PG_POOL_TIMEOUT_S,
            overflow=pool.overflow > 0,
        )
        # Writes in flight, shielded from their callers' cancellation; ``dispose`` waits.
        self._writes: set[asyncio.Task[Any]] = set()
        # RowInserts, inserted a loop iteration's worth at a time (``_insert_rows``).
        self._inserts: LoopBatch[RowInsert, int] = LoopBatch(self._insert_rows)
        # RowFetches (finishes), the same way (``_fetch_rows``).
        self._fetches: LoopBatch[RowFetch, Mapping[str, Any]] = LoopBatch(self._fetch_rows)
        self._warned_autovacuum = False
        self._outage = _WriteOutage(url.render_as_string(hide_password=True), "postgres")

    def writable(self) -> bool:
        return self._outage.writable()

    async def run_read(self, op: Callable[[sa.Connection], T]) -> T:
        try:
            return await self._read(op)
        except sa.exc.DBAPIError as exc:
            # A pooled connection that died with the server (restart, failover): SQLAlchemy
            # has invalidated the pool; a read is safe to run once more on a fresh one.
            if not exc.connection_invalidated:
                raise _translated(exc) from exc
        except Exception as exc:
            raise _translated(exc) from exc
        try:
            return await self._read(op)
        except Exception as exc:
            raise _translated(exc) from exc

    async def _read(self, op: Callable[[sa.Connection], T]) -> T:
        return await self._held.run(op, transaction=False)

    async def run_write(
        self, op: Callable[[sa.Connection], T], *, one_statement: bool = False
    ) -> T:
        if isinstance(op, RowInsert):
            return cast(T, await self._inserts.submit(op))
        if isinstance(op, RowFetch):
            return cast(T, await self._fetches.submit(op))
        # A task of its own, so a cancelled caller does not roll back (or, worse, abandon
        # mid-COMMIT) a write that has started: it completes, and its outcome is dropped.
        task = asyncio.create_task(self._write(op, one_statement=one_statement))
        self._writes.add(task)
        task.add_done_callback(self._write_done)
        return await asyncio.shield(task)

    async def _insert_rows(self, ops: list[RowInsert]) -> list[BaseException | int]:
        """Group commit for plain inserts (``self._inserts``): the RowInserts of one event-loop
        iteration (concurrent webhooks) go as one executemany per statement (atomic: one
        implicit transaction), so one connection, one round trip and one commit (one WAL
        flush) serve them all."""
        groups: dict[int, list[int]] = {}
        for index, op in enumerate(ops):
            groups.setdefault(id(op.stmt), []).append(index)
        chunks = [
            indexes[start : start + PG_MAX_INSERT_BATCH]
            for indexes in groups.values()
            for start in range(0, len(indexes), PG_MAX_INSERT_BATCH)
        ]
        results = await asyncio.gather(
            *(self._insert_group([ops[i] for i in chunk]) for chunk in chunks)
        )
        outcomes: list[BaseException | int] = [0] * len(ops)
        for chunk, chunk_outcomes in zip(chunks, results, strict=True):
            for index, outcome in zip(chunk, chunk_outcomes, strict=True):
                outcomes[index] = outcome
        return outcomes

    async def _insert_group(self, ops: list[RowInsert]) -> list[BaseException | int]:
        if len(ops) == 1:
            try:
                return [await self._write(ops[0], one_statement=True)]
            except Exception as exc:
                return [exc]
        stmt, rows = ops[0].stmt, [op.values for op in ops]
        try:
            # One round trip: asyncpg's executemany is atomic on its own (one implicit
            # transaction, since asyncpg 0.22), so no BEGIN and COMMIT around it.
            await self._write(lambda conn: execute_many(conn, stmt, rows), one_statement=True)
        except (sa.exc.IntegrityError, sa.exc.DataError):
            # A row the server refused: the transaction was rolled back whole, so nothing is
            # inserted yet; each row goes again on its own, and only the bad one fails.
            return await asyncio.gather(
                *(self._write(op, one_statement=True) for op in ops), return_exceptions=True
            )
        except Exception as exc:  # e.g. the connection lost: not retried (see ``_write``)
            return [exc] * len(ops)
        return [1] * len(ops)

    async def _fetch_rows(self, ops: list[RowFetch]) -> list[BaseException | Mapping[str, Any]]:
        """Group commit for RowFetches (``self._fetches``): those of one event-loop iteration
        (concurrent finishes) with the same statement go as one fetchmany, ordered by
        ``RowFetch.order``: one connection, one round trip and one commit for them all."""
        groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
        for index, op in enumerate(ops):
            groups.setdefault((id(op.stmt), tuple(op.params)), []).append(index)
        chunks = [
            sorted(indexes[start : start + PG_MAX_INSERT_BATCH], key=lambda i: ops[i].order)
            for indexes in groups.values()
            for start in range(0, len(indexes), PG_MAX_INSERT_BATCH)
        ]
        results = await asyncio.gather(
            *(self._fetch_group([ops[i] for i in chunk]) for chunk in chunks)
        )
        outcomes: list[BaseException | Mapping[str, Any]] = [{}] * len(ops)
        for chunk, chunk_outcomes in zip(chunks, results, strict=True):
            for index, outcome in zip(chunk, chunk_outcomes, strict=True):
                outcomes[index] = outcome
        return outcomes

    async def _fetch_group(self, ops: list[RowFetch]) -> list[BaseException | Mapping[str, Any]]:
        async def each() -> list[BaseException | Mapping[str, Any]]:
            return await asyncio.gather(
                *(self._write(op, one_statement=True) for op in ops), return_exceptions=True
            )

        if len(ops) == 1:
            return await each()
        stmt, rows = ops[0].stmt, [op.params for op in ops]
        try:
            fetched = await self._write(
                lambda conn: fetch_rows(conn, stmt, rows), one_statement=True
            )
        except sa.exc.DBAPIError as exc:
            if not _refused_by_server(exc):
                return [exc] * len(ops)
            # The server refused the batch (a constraint, bad data, a deadlock): it was rolled
            # back whole, so nothing of it is written; each op goes again on its own, and only
            # a bad one fails.
            return await each()
        except Exception as exc:  # a lost connection (committed or not is unknown), or an
            return [exc] * len(ops)  # error after the commit: not run again here
        if fetched is None:
            return await each()
        return list(fetched)

    def _write_done(self, task: asyncio.Task[Any]) -> None:
        self._writes.discard(task)
        if not task.cancelled():
            # Marks the error as seen: a cancelled caller no longer awaits it.
            task.exception()

    async def _write(self, op: Callable[[sa.Connection], T], *, one_statement: bool) -> T:
        # Never retried here: whether a write that lost its connection committed is unknown.
        try:
            result = await self._held.run(op, transaction=not one_statement)
        except Exception as exc:
            if sqlstate_of(exc) == PG_DISK_FULL:  # a 503 like any class 53; and not ready
                self._outage.failed("disk_full", exc)
            raise _translated(exc) from exc
        self._outage.wrote()
        return result

    def lock_claimable(self, query: sa.Select[tuple[str]]) -> sa.Select[tuple[str]]:
        # Rows another transaction is claiming are skipped rather than waited for, and the
        # outer UPDATE re-checks ``status``: two callers never get the same execution.
        # MATERIALIZED runs the locking SELECT exactly once: as a plain ``IN (subquery)`` the
        # planner may rescan it per outer row, and each rescan skips the rows this UPDATE
        # already changed and locks the next ones, so LIMIT would not bound the claim.
        claimable = (
            query.with_for_update(skip_locked=True).cte("claimable").prefix_with("MATERIALIZED")
        )
        return sa.select(claimable.c.id)

    # A tenant's claims are serialized by a transaction-level advisory lock, and the count of
    # its running rows that a claim checks against the cap is taken after the lock is granted,
    # in a snapshot that sees every earlier claim of that tenant. Without it two claimers
    # could each see N-1 running and both start one. Each claim is one statement, so the
    # lock is held while that statement runs and no claimer waits for another's round trips.
    def running_under_claim_lock(self, tenant_id: sa.ColumnElement[str]) -> sa.ColumnElement[int]:
        # Migration 0008: takes pg_advisory_xact_lock(_CLAIM_LOCK_SPACE, hashtext(tenant)),
        # then counts in a snapshot of its own, taken after the lock was granted.
        return sa.func.ipaas_running_after_claim_lock(tenant_id, type_=sa.BigInteger())

    def lock_signups(self, conn: sa.Connection) -> None:
        # Under READ COMMITTED each statement sees what committed before it began: the read
        # after the lock sees the tenant of the sign-up that held it before.
        conn.execute(_LOCK_SIGNUPS)

    async def vacuum_queue(self, *, min_dead: int) -> QueueVacuum | None:
        # Every claim and finish turns a queued or running row version dead, and with it an
        # entry in a queue index (``ix_execution_queued`` / ``ix_execution_running``). A
        # tenant's claim reads its queued entries oldest first, so it steps over every one
        # of them claimed since the last VACUUM: the claim's cost grows with the churn
        # until then (docs/architecture.md, "Vacuuming the queue").
        def look(conn: sa.Connection) -> tuple[int, bool, bool, bool]:
            row = conn.exec_driver_sql(PG_QUEUE_DEAD, (PG_ANALYZE_EVERY_S,)).one()
            return int(row[0] or 0), bool(row[1]), bool(row[2]), bool(row[3])

        dead, owned, autovacuum, analyzed = await self.run_read(look)
        if not autovacuum and not self._warned_autovacuum:
            self._warned_autovacuum = True
            _log.warning("postgres_autovacuum_off", note="workers vacuum the execution table only")
        if dead < min_dead:
            return None
        if not owned:
            # VACUUM by another role only warns and does nothing.
            return QueueVacuum(dead, vacuumed=False, skipped="not_owner")

        def vacuum(conn: sa.Connection) -> bool:
            """Whether it ran: PostgreSQL passes over a table another VACUUM holds with a
            warning of its own (SQLSTATE 55P03), which reaches asyncpg's log listeners
            before the statement's result reaches us."""
            # SKIP_LOCKED: while another VACUUM holds the table (autovacuum, another
            # process's), this one is not needed. INDEX_CLEANUP ON: on a large table
            # PostgreSQL would otherwise skip the indexes while under 2 % of its pages hold
            # dead rows, and the dead entries are what the claims read. ANALYZE, unless the
            # table was analyzed lately: a VACUUM replaces the sizes the planner works from,
            # and without the table's statistics beside them (autovacuum off: none) a
            # claim was planned as a read of the tenant's whole backlog and a sort
            # (tests/contracts/test_pg_vacuum.py). It took most of a VACUUM's time.
            driver = cast(Any, conn.connection.driver_connection)
            notices: list[str] = []

            def heard(_driver: Any, message: Any) -> None:
                notices.append(message.sqlstate)

            driver.add_log_listener(heard)
            try:
                sql = PG_VACUUM_QUEUE if analyzed else PG_VACUUM_ANALYZE_QUEUE
                conn.exec_driver_sql(sql).close()
            finally:
                driver.remove_log_listener(heard)
            return PG_LOCK_NOT_AVAILABLE not in notices

        ran = await self._write(vacuum, one_statement=True)  # VACUUM runs outside a transaction
        return QueueVacuum(dead, vacuumed=ran, skipped=None if ran else "busy")

    def seconds_between(
        self, start: sa.ColumnElement[Any], end: sa.ColumnElement[Any]
    ) -> sa.ColumnElement[float]:
        return sa.cast(sa.extract("epoch", end - start), sa.Float)

    def upsert(
        self, table: sa.Table, key: Sequence[str], set_: Mapping[str, Any] | None = None
    ) -> sa.Insert:
        stmt = postgresql.insert(table)
        return stmt.on_conflict_do_update(
            index_elements=list(key), set_=set_ if set_ is not None else _excluded(stmt, key)
        )

    def update_then_upsert(
        self, update: sa.Update, table: sa.Table, key: Sequence[str]
    ) -> GuardedUpsert:
        # One statement, so one round trip instead of BEGIN, two statements and COMMIT:
        #   WITH guard AS (UPDATE ... RETURNING 1)
        #   INSERT INTO t SELECT <the row as parameters> WHERE EXISTS (SELECT FROM guard)
        #   ON CONFLICT (key) DO UPDATE ... RETURNING 1
        # The data-modifying CTE runs exactly once; the row is written only if it matched.
        guard = update.returning(sa.literal_column("1").label("matched")).cte("guard")
        stmt: sa.Executable = _upsert_row_if(guard, table, key).returning(sa.literal_column("1"))

        def make(
            update_params: Mapping[str, Any], values: Mapping[str, Any]
        ) -> Callable[[sa.Connection], bool]:
            params = _row_params(update_params, values)

            def op(conn: sa.Connection) -> bool:
                return bool(tuples(conn, stmt, params))

            return op

        return GuardedUpsert(make, one_statement=True)

    def update_upsert_then_claim(
        self,
        update: sa.Update,
        table: sa.Table,
        key: Sequence[str],
        claim: Callable[[sa.ColumnElement[str]], sa.Update],
    ) -> GuardedUpsertThenClaim:
        # One statement, each data-modifying CTE run exactly once:
        #   WITH guard AS (UPDATE ... RETURNING tenant_id),
        #        step AS (INSERT INTO t SELECT <row> WHERE EXISTS guard ON CONFLICT ...),
        #        claimed AS (UPDATE ... <claim(guard's tenant)> RETURNING *)
        #   SELECT (matched), (stepped), claimed.* FROM (SELECT 1) LEFT JOIN claimed
        guard = update.returning(update.table.c.tenant_id).cte("guard")
        step = (
            _upsert_row_if(guard, table, key)
            .returning(sa.literal_column("1").label("stepped"))
            .cte("step")
        )
        claimed = claim(sa.select(guard.c.tenant_id).scalar_subquery()).cte("claimed")
        one = sa.select(sa.literal(1).label("one")).subquery("one")
        stmt = sa.select(
            sa.select(sa.func.count()).select_from(guard).scalar_subquery().label("matched"),
            sa.select(sa.func.count()).select_from(step).scalar_subquery().label("stepped"),
            *claimed.c,
        ).select_from(one.outerjoin(claimed, sa.true()))

        def make(
            update_params: Mapping[str, Any], values: Mapping[str, Any], *, order: str = ""
        ) -> RowFetch:
            return RowFetch(stmt, _row_params(update_params, values), order)

        return GuardedUpsertThenClaim(make)

    def insert_unless_taken(
        self, table: sa.Table, key: Sequence[str], *, where: sa.TextClause | None = None
    ) -> sa.Executable:
        # ON CONFLICT waits for a concurrent transaction holding the same key to commit or
        # roll back, then skips or inserts: no unique-violation error aborts ours.
        stmt = postgresql.insert(table).on_conflict_do_nothing(
            index_elements=list(key), index_where=where
        )
        return stmt.returning(*table.primary_key.columns)

    async def dispose(self) -> None:
        await self._inserts.drain()
        await self._fetches.drain()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await self._held.close()
        await self._engine.dispose()


#: The first key of the claim locks (``pg_advisory_xact_lock(int, int)``), so they cannot
#: collide with another application's advisory locks on the same database; the second key
#: is the tenant id's hash (two tenants sharing a hash only share a lock).
_CLAIM_LOCK_SPACE = 0x1FA1
#: ``Database.lock_signups`` on PostgreSQL: an advisory lock of a space of its own.
_SIGNUP_LOCK_SPACE = 0x1FA2
_LOCK_SIGNUPS = sa.select(sa.func.pg_advisory_xact_lock(_SIGNUP_LOCK_SPACE, 0))
#: The execution table's dead row versions, whether this role may VACUUM it (its owner, or
#: a member of the owning role), whether autovacuum is on, and whether the table was analyzed
#: (by anyone) in the last $1 seconds.
PG_QUEUE_DEAD = (
    "SELECT s.n_dead_tup, pg_has_role(c.relowner, 'MEMBER'), current_setting('autovacuum') = 'on',"
    " coalesce(greatest(s.last_analyze, s.last_autoanalyze) > now() - make_interval(secs => $1),"
    " false)"
    " FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
    " WHERE s.relid = 'execution'::regclass"
)
PG_VACUUM_QUEUE = "VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON) execution"
PG_VACUUM_ANALYZE_QUEUE = "VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON, ANALYZE) execution"
#: The warning of a VACUUM (SKIP_LOCKED) that passed over a table another one holds.
PG_LOCK_NOT_AVAILABLE = "55P03"
#: A queue VACUUM also analyzes the table when nothing has for this long.
PG_ANALYZE_EVERY_S = 300.0
#: Seconds to open a connection to PostgreSQL, and to wait for a free one in the pool.
PG_CONNECT_TIMEOUT_S = 5.0
PG_POOL_TIMEOUT_S = 10.0
#: How long a statement waits for a lock (PostgreSQL's ``lock_timeout``), as long as SQLite's
#: ``busy_timeout``. Found by hand: while another session held the execution table (an
#: operator's ``LOCK TABLE``, ``VACUUM FULL``, a migration building an index), webhooks
#: waited as long as it did, 24 s here, past the 10 s after which GitHub gives up on a
#: delivery (and sends it again: a duplicate, unless the workflow dedups), and API requests
#: with them. Now each answers 503 + ``Retry-After`` after this, having written nothing.
PG_LOCK_TIMEOUT_S = SQLITE_BUSY_TIMEOUT_MS / 1000
#: SQLSTATE classes that mean "the server is not there for you now": connection exception,
#: operator intervention (shutdown, restart), insufficient resources (too many connections).
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "57", "53"})
#: And one code: a lock held past ``PG_LOCK_TIMEOUT_S`` (lock_not_available).
_UNAVAILABLE_SQLSTATES = frozenset({PG_LOCK_NOT_AVAILABLE})


#: PostgreSQL's "could not extend file": its disk is full. Its class (53) is already
#: ``StoreUnavailable``; it also makes the store not ready (``_WriteOutage``), as on SQLite,
#: since ``SELECT 1`` still answers on a full disk.
PG_DISK_FULL = "53100"


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of ``exc`` or of what caused it, if it has one."""
    cause: BaseException | None = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    while cause is not None:
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str):
            return sqlstate
        cause = cause.__cause__
    return None


def _translated(exc: Exception) -> Exception:
    """``StoreUnavailable`` for an error that means PostgreSQL cannot be reached (the API
    answers 503 + ``Retry-After``; the engine waits); any other error unchanged."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return StoreUnavailable()
    cause: BaseException | None = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    while cause is not None:
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and _unavailable(sqlstate):
            driver_error = cause
            while driver_error.__cause__ is not None:  # the adapter's, then asyncpg's own
                driver_error = driver_error.__cause__
            return _unavailable_because(f"{type(driver_error).__name__} (SQLSTATE {sqlstate})")
        if isinstance(cause, OSError | TimeoutError | sa.exc.TimeoutError):
            return _unavailable_because(type(cause).__name__)
        cause = cause.__cause__
    return exc


def _unavailable_because(reason: str) -> StoreUnavailable:
    """``StoreUnavailable`` naming the driver's error class (never its message: it may
    quote the statement's values)."""
    unavailable = StoreUnavailable()
    unavailable.reason = reason
    return unavailable


def _refused_by_server(exc: sa.exc.DBAPIError) -> bool:
    """The server answered the statement with an error of its own (a constraint, bad data):
    the connection is as good as before."""
    sqlstate = sqlstate_of(exc)
    return sqlstate is not None and not _unavailable(sqlstate)


def _unavailable(sqlstate: str) -> bool:
    return sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES or sqlstate in _UNAVAILABLE_SQLSTATES


def _upsert_row_if(guard: sa.CTE, table: sa.Table, key: Sequence[str]) -> postgresql.Insert:
    """INSERT the row given as ``row_<column>`` parameters into ``table`` only when ``guard``
    (a data-modifying CTE) returned a row; on a conflict on ``key``, UPDATE it instead."""
    columns = list(table.c)
    row = sa.select(
        *(sa.bindparam(f"row_{c.name}", type_=c.type).label(c.name) for c in columns)
    ).where(sa.exists(sa.select(*guard.c)))
    insert = postgresql.insert(table).from_select([c.name for c in columns], row)
    return insert.on_conflict_do_update(index_elements=list(key), set_=_excluded(insert, key))


def _row_params(update_params: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of ``_upsert_row_if``'s statement: ``update``'s, then the row's."""
    return {**update_params, **{f"row_{k}": v for k, v in values.items()}}


def _excluded(stmt: sqlite.Insert | postgresql.Insert, key: Sequence[str]) -> dict[str, Any]:
    return {col.name: stmt.excluded[col.name] for col in stmt.table.c if col.name not in key}


def create_database(database_url: str, *, pool: PoolSize | None = None) -> Database:
    """The ``Database`` for a ``sqlite+aiosqlite://`` or ``postgresql+asyncpg://`` URL
    (``pool`` sizes PostgreSQL's connection pool; SQLite has its fixed threads)."""
    url = sa.make_url(database_url)
    match url.drivername:
        case "sqlite+aiosqlite":
            return SqliteDatabase(url)
        case "postgresql+asyncpg":
            return PostgresDatabase(url, pool or PoolSize())
        case other:
            msg = f"unsupported SQL driver {other!r}: use sqlite+aiosqlite or postgresql+asyncpg"
            raise ValueError(msg)
