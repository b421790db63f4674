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
    def write_one(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for a write that is a single (hence atomic) statement."""

    @abstractmethod
    def lock_claimable(self, query: sa.Select[tuple[str]]) -> sa.Select[tuple[str]]:
        """Make the ``claim_next`` candidate subselect safe against concurrent claimers."""

    @abstractmethod
    def upsert(self, table: sa.Table, key: Sequence[str]) -> sa.Executable:
        """INSERT a row (values given at execution), or UPDATE the other columns of the row
        with the same ``key``."""

    @abstractmethod
    async def dispose(self) -> None: ...


class SqliteDatabase(Database):
    """SQLite: pragmas on connect; one writer at a time, readers in parallel (WAL).

    SQLite allows a single writer. Instead of letting concurrent transactions collide and
    retry on SQLITE_BUSY, write transactions are serialized in-process: an ``asyncio.Lock``
    (FIFO, and no pool timeout to hit under a burst) in front of a one-connection write
    engine. Its transactions are ``BEGIN IMMEDIATE``, so the write lock is taken up front: a
    transaction never upgrades a read snapshot (which fails with SQLITE_BUSY without
    waiting), and a writer in another process (the CLI) waits on ``busy_timeout``.
    Readers have their own pool and run in autocommit (every read method is one statement),
    so they never wait for the writer.
    """

    def __init__(self, url: sa.URL) -> None:
        if url.database in (None, "", ":memory:"):
            msg = "an in-memory SQLite database cannot be shared; use memory:// instead"
            raise ValueError(msg)
        self._writer = create_async_engine(
            url,
            pool_size=1,
            max_overflow=0,
            # sqlite3 then emits BEGIN IMMEDIATE itself, in the same thread hop as the first
            # INSERT/UPDATE/DELETE of a transaction; an explicit BEGIN statement would cost
            # four more aiosqlite hops per write. Every write method starts with such a
            # statement, so the whole method runs in the transaction.
            connect_args={"isolation_level": "IMMEDIATE"},
            # ``write()`` always ends in COMMIT or ROLLBACK: a reset would be one more hop.
            pool_reset_on_return=None,
            **_ENGINE_ARGS,
        )
        self._reader = create_async_engine(url, pool_size=5, max_overflow=10, **_ENGINE_ARGS)
        for engine in (self._writer, self._reader):
            sa.event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        self._write_lock = asyncio.Lock()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self._reader.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_lock, self._writer.begin() as conn:
            yield conn

    def write_one(self) -> AbstractAsyncContextManager[AsyncConnection]:
        # Already as cheap as it gets: the implicit BEGIN costs no extra hop.
        return self.write()

    def lock_claimable(self, query: sa.Select[tuple[str]]) -> sa.Select[tuple[str]]:
        # Writers are serialized (see the class docstring): nothing else can claim meanwhile.
        return query

    def upsert(self, table: sa.Table, key: Sequence[str]) -> sa.Executable:
        stmt = sqlite.insert(table)
        return stmt.on_conflict_do_update(index_elements=list(key), set_=_excluded(stmt, key))

    async def dispose(self) -> None:
        await self._writer.dispose()
        await self._reader.dispose()


def _sqlite_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _excluded(stmt: sqlite.Insert | postgresql.Insert, key: Sequence[str]) -> dict[str, Any]:
    return {col.name: stmt.excluded[col.name] for col in stmt.table.c if col.name not in key}


class PostgresDatabase(Database):
    """PostgreSQL: one pool; row locks with SKIP LOCKED keep concurrent claimers apart."""

    def __init__(self, url: sa.URL) -> None:
        self._engine: AsyncEngine = create_async_engine(
            url, pool_size=10, max_overflow=20, pool_recycle=1800, **_ENGINE_ARGS
        )
        # Same pool, but no BEGIN/ROLLBACK round trips around a statement that is atomic
        # on its own: a third of the round trips of a transaction.
        self._autocommit = self._engine.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self._autocommit.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write_one(self) -> AsyncIterator[AsyncConnection]:
        async with self._autocommit.connect() as conn:
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

    def upsert(self, table: sa.Table, key: Sequence[str]) -> sa.Executable:
        stmt = postgresql.insert(table)
        return stmt.on_conflict_do_update(index_elements=list(key), set_=_excluded(stmt, key))

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
