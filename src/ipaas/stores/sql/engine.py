"""The only module that knows the SQL dialect: engines, transactions and dialect-specific SQL.

Everything else in ``stores.sql`` is portable SQLAlchemy Core and asks a ``Database`` for a
connection (``read``/``write``) or for one of the few fragments that differ per dialect.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pydantic_core
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

#: Pragmas every SQLite connection gets. WAL lets readers run beside the writer;
#: ``synchronous=NORMAL`` is durable across process crashes in WAL mode (only an OS crash
#: can lose the last transactions) and much faster than FULL; ``busy_timeout`` makes a
#: writer in *another* process (``ipaas token create``) wait instead of failing at once;
#: SQLite ignores foreign keys unless asked.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=5000",
    "PRAGMA foreign_keys=ON",
)


def _json_dumps(value: Any) -> str:
    # pydantic-core serializes models, datetimes and the like directly, so the store binds
    # ``TriggerData`` and step inputs/outputs without a ``model_dump`` round first.
    return pydantic_core.to_json(value).decode()


_ENGINE_ARGS: Mapping[str, Any] = {
    "json_serializer": _json_dumps,
    "json_deserializer": pydantic_core.from_json,
}


class Database(ABC):
    """Connections to one database, and the SQL fragments that differ per dialect."""

    @abstractmethod
    def read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for a single-statement read."""

    @abstractmethod
    def write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection inside a write transaction, committed on a clean exit."""

    @abstractmethod
    def lock_claimable(self, query: sa.Select[tuple[str]]) -> sa.Select[tuple[str]]:
        """Make the ``claim_next`` candidate subselect safe against concurrent claimers."""

    @abstractmethod
    def upsert(
        self, table: sa.Table, values: Mapping[str, Any], key: Sequence[str]
    ) -> sa.Executable:
        """INSERT ``values``, or UPDATE the non-key columns when ``key`` already exists."""

    @abstractmethod
    async def dispose(self) -> None: ...


class SqliteDatabase(Database):
    """SQLite: pragmas on connect; one writer at a time, readers in parallel (WAL).

    SQLite allows a single writer. Instead of letting concurrent transactions collide and
    retry on SQLITE_BUSY, write transactions are serialized in-process: an ``asyncio.Lock``
    (FIFO, no pool timeout to hit under a burst) in front of a one-connection write engine.
    Writes start with ``BEGIN IMMEDIATE`` so the write lock is taken up front: a transaction
    never has to upgrade a read snapshot (which fails with SQLITE_BUSY without waiting), and
    a writer in another process waits on ``busy_timeout``. Reads use their own pool and run in
    autocommit mode (every read method is a single statement), so they never block writes.
    """

    def __init__(self, url: sa.URL) -> None:
        if url.database in (None, "", ":memory:"):
            msg = "an in-memory SQLite database cannot be shared; use memory:// instead"
            raise ValueError(msg)
        self._writer = create_async_engine(url, pool_size=1, max_overflow=0, **_ENGINE_ARGS)
        self._reader = create_async_engine(url, pool_size=5, max_overflow=10, **_ENGINE_ARGS)
        for engine in (self._writer, self._reader):
            sa.event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        sa.event.listen(self._writer.sync_engine, "begin", _sqlite_begin_immediate)
        self._write_lock = asyncio.Lock()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self._reader.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_lock, self._writer.begin() as conn:
            yield conn

    def lock_claimable(self, query: sa.Select[tuple[str]]) -> sa.Select[tuple[str]]:
        # Writers are serialized (see the class docstring): nothing else can claim meanwhile.
        return query

    def upsert(
        self, table: sa.Table, values: Mapping[str, Any], key: Sequence[str]
    ) -> sa.Executable:
        stmt = sqlite.insert(table).values(dict(values))
        return stmt.on_conflict_do_update(
            index_elements=list(key),
            set_={name: stmt.excluded[name] for name in values if name not in key},
        )

    async def dispose(self) -> None:
        await self._writer.dispose()
        await self._reader.dispose()


def _sqlite_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # The driver's own implicit BEGIN (only before DML) is switched off; SQLAlchemy's
    # ``begin`` event emits it instead, so a transaction covers every statement in it.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_begin_immediate(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


class PostgresDatabase(Database):
    """PostgreSQL: one pool; row locks with SKIP LOCKED keep concurrent claimers apart."""

    def __init__(self, url: sa.URL) -> None:
        self._engine: AsyncEngine = create_async_engine(
            url, pool_size=10, max_overflow=20, pool_recycle=1800, **_ENGINE_ARGS
        )

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine.begin() as conn:
            yield conn

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

    def upsert(
        self, table: sa.Table, values: Mapping[str, Any], key: Sequence[str]
    ) -> sa.Executable:
        stmt = postgresql.insert(table).values(dict(values))
        return stmt.on_conflict_do_update(
            index_elements=list(key),
            set_={name: stmt.excluded[name] for name in values if name not in key},
        )

    async def dispose(self) -> None:
        await self._engine.dispose()


def create_database(database_url: str) -> Database:
    """The ``Database`` for a ``sqlite+aiosqlite://`` or ``postgresql+asyncpg://`` URL."""
    url = sa.make_url(database_url)
    match url.drivername:
        case "sqlite+aiosqlite":
            return SqliteDatabase(url)
        case "postgresql+asyncpg":
            return PostgresDatabase(url)
        case other:
            msg = f"unsupported SQL driver {other!r}: use sqlite+aiosqlite or postgresql+asyncpg"
            raise ValueError(msg)
