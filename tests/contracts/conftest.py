"""The Store backends every contract test runs on: memory, SQLite and (when set) PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from ipaas.stores import MemoryStore, Store
from ipaas.stores.sql import SqlStore, run_migrations
from ipaas.stores.sql.tables import metadata

POSTGRES_URL = os.environ.get("IPAAS_TEST_POSTGRES_URL")

POSTGRES_ONLY = [
    pytest.mark.postgres,
    pytest.mark.skipif(not POSTGRES_URL, reason="IPAAS_TEST_POSTGRES_URL is not set"),
]

#: Same tests, several backends (stamina's BACKENDS); PostgreSQL only when a URL is given.
BACKENDS = [
    pytest.param("memory"),
    pytest.param("sqlite"),
    pytest.param("postgres", marks=POSTGRES_ONLY),
]
SQL_BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=POSTGRES_ONLY)]

T = TypeVar("T")


def in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh thread: it may start its own event loop (Alembic does)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


async def _execute(url: str, *statements: str, autocommit: bool = False) -> None:
    engine = create_async_engine(
        url, poolclass=NullPool, isolation_level="AUTOCOMMIT" if autocommit else None
    )
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database of its own, dropped afterwards."""
    assert POSTGRES_URL is not None
    admin = sa.make_url(POSTGRES_URL)
    name = f"ipaas_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin_url = admin.render_as_string(hide_password=False)
    in_thread(
        lambda: asyncio.run(_execute(admin_url, f'CREATE DATABASE "{name}"', autocommit=True))
    )
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        in_thread(lambda: asyncio.run(_execute(admin_url, drop, autocommit=True)))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """This run's PostgreSQL database, migrated once; tests empty it before use."""
    with postgres_database() as url:
        in_thread(lambda: run_migrations(url))
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per run; tests get copies (``migrated_sqlite``). Migrating
    a new file took ~160 ms, a third of the SQLite store tests' time; the migrations
    themselves are tested on new files (``empty_sql_url``)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "migrated.db"
    in_thread(lambda: run_migrations(f"sqlite+aiosqlite:///{path}"))
    return path


def migrated_sqlite(template: Path, path: Path) -> str:
    """The URL of ``path``, a copy of the migrated ``template`` (SQLite's backup API: a
    consistent copy of every page, the header's vacuum and journal settings included)."""
    with (
        contextlib.closing(sqlite3.connect(template)) as source,
        contextlib.closing(sqlite3.connect(path)) as target,
    ):
        source.backup(target)
    return f"sqlite+aiosqlite:///{path}"


async def truncate_all(url: str) -> None:
    """Empty every table and its indexes (new files: no dead rows, fresh statistics)."""
    names = ", ".join(table.name for table in metadata.sorted_tables)
    await _execute(url, f"TRUNCATE {names} CASCADE")


_DELETE_ALL = [sa.delete(table) for table in reversed(metadata.sorted_tables)]


async def empty_all(store: SqlStore) -> None:
    """Delete every row, on the store's own connection: ~5 ms where ``truncate_all`` took
    ~50 (a connection of its own, and a new file per table), before each of the ~650
    PostgreSQL contract tests. Their few rows leave few dead ones; the tests that read
    plans or the tables' sizes start from ``truncate_all``."""

    def delete(conn: sa.Connection) -> None:
        for statement in _DELETE_ALL:
            conn.execute(statement)

    await store._db.run_write(delete)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A started, empty Store of each backend."""
    backend: Store
    match request.param:
        case "memory":
            backend = MemoryStore()
        case "sqlite":
            template = request.getfixturevalue("sqlite_template")
            backend = SqlStore(migrated_sqlite(template, tmp_path / "ipaas.db"))
        case "postgres":
            backend = SqlStore(request.getfixturevalue("postgres_url"))
        case other:
            raise AssertionError(f"unknown backend {other}")
    await backend.startup()
    if request.param == "postgres":
        assert isinstance(backend, SqlStore)
        await empty_all(backend)
    try:
        yield backend
    finally:
        await backend.shutdown()


@pytest.fixture(params=SQL_BACKENDS)
def empty_sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a new, unmigrated SQL database of each dialect."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture(params=SQL_BACKENDS)
async def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a migrated, empty SQL database of each dialect."""
    if request.param == "sqlite":
        return migrated_sqlite(request.getfixturevalue("sqlite_template"), tmp_path / "ipaas.db")
    url = request.getfixturevalue("postgres_url")
    await truncate_all(url)
    return str(url)


async def sqlite_room(db: object, pages: int | None) -> None:
    """Let SQLite's writer grow the database by ``pages`` more pages at most (``None``: as
    far as SQLite allows). A write that needs more gets SQLite's own "database or disk is
    full" (``SQLITE_FULL``), as on a full disk, by the same code path: ``max_page_count``
    is a setting of the writer's connection."""
    from ipaas.stores.sql.engine import Database

    assert isinstance(db, Database)

    def limit(conn: sa.Connection) -> None:
        driver = conn.connection.driver_connection
        assert driver is not None
        count = driver.execute("PRAGMA page_count").fetchone()[0]
        most = count + pages if pages is not None else 2**32 - 2  # SQLite clamps it
        driver.execute(f"PRAGMA max_page_count = {most}").fetchall()

    await db.run_write(limit)
