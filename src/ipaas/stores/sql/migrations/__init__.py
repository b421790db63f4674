"""Alembic migrations, configured in code: no ``alembic.ini`` is needed at run time."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
import structlog
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from ipaas.stores.sql.engine import PG_LOCK_NOT_AVAILABLE, PG_LOCK_TIMEOUT_S, sqlstate_of

_HERE = Path(__file__).parent
_log = structlog.get_logger(__name__)

#: How long a migration's statement waits for a table's lock on PostgreSQL before the
#: migration steps aside (rolled back, run again): shorter than the app's statements wait
#: (``PG_LOCK_TIMEOUT_S``), so those queued behind it go on instead of failing.
PG_MIGRATION_LOCK_TIMEOUT_S = min(2.0, PG_LOCK_TIMEOUT_S / 2)
#: Runs of a migration that stepped aside, and the pauses between them (doubling up to the
#: most): about four minutes in all before ``MigrationLockBusy``.
PG_MIGRATION_ATTEMPTS = 20
PG_MIGRATION_PAUSE_S = 1.0
PG_MIGRATION_MAX_PAUSE_S = 15.0


class MigrationLockBusy(RuntimeError):
    """Another session held a table the migration changes, through every attempt."""


#: ``PRAGMA auto_vacuum`` values: 0 none, 1 full, 2 incremental.
INCREMENTAL = 2


def alembic_config(database_url: str) -> Config:
    """An Alembic ``Config`` for this package's migrations against ``database_url``.

    Also what a developer passes to ``alembic.command.revision`` to write a new migration.
    """
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    # Date-slug file names (``2026-11-29_initial.py``); ``%%`` escapes ConfigParser.
    config.set_main_option("file_template", "%%(year)d-%%(month).2d-%%(day).2d_%%(slug)s")
    # Passed as an attribute, not an ini option, so a ``%`` in a password needs no escaping.
    config.attributes["database_url"] = database_url
    return config


def run_migrations(database_url: str) -> None:
    """Upgrade the database at ``database_url`` to the latest schema.

    Synchronous: call it before the event loop starts (``ipaas migrate``/``serve``) or from
    a worker thread (``asyncio.to_thread``), since the async driver runs its own loop.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        # PostgreSQL serializes concurrent runs itself (an advisory lock, in env.py).
        _upgrade_stepping_aside(database_url)
        return
    path = url.database
    if path in (None, "", ":memory:"):
        command.upgrade(alembic_config(database_url), "head")
        return
    assert path is not None
    with _one_at_a_time(Path(f"{path}-migrate.lock")):
        command.upgrade(alembic_config(database_url), "head")
        enable_incremental_vacuum(path)


def _upgrade_stepping_aside(database_url: str) -> None:
    """Upgrade, giving way to sessions that hold a table the migration changes: each try
    waits ``PG_MIGRATION_LOCK_TIMEOUT_S`` for a lock, then rolls back whole and runs again
    after a pause. Found by hand: an idle transaction that had read the table made the
    migration wait, and every statement on that table queued behind it failed after 5 s."""
    config = alembic_config(database_url)
    config.attributes["lock_timeout_s"] = PG_MIGRATION_LOCK_TIMEOUT_S
    pause = PG_MIGRATION_PAUSE_S
    for attempt in range(1, PG_MIGRATION_ATTEMPTS + 1):
        try:
            command.upgrade(config, "head")
        except sa.exc.DBAPIError as exc:
            if sqlstate_of(exc) != PG_LOCK_NOT_AVAILABLE:
                raise
            if attempt == PG_MIGRATION_ATTEMPTS:
                msg = (
                    f"the migration could not lock a table it changes in {attempt} attempts: "
                    "another session holds it (a long transaction, a backup); nothing was "
                    "changed. Find it in pg_stat_activity, then run `ipaas migrate` again"
                )
                raise MigrationLockBusy(msg) from exc
            _log.warning("migration_waits_for_lock", attempt=attempt, retry_in_s=pause)
            time.sleep(pause)
            pause = min(2 * pause, PG_MIGRATION_MAX_PAUSE_S)
        else:
            return


@contextlib.contextmanager
def _one_at_a_time(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock`` (made if missing, never removed: removing it
    would let a waiting process lock a file no newer one sees). SQLite runs DDL outside
    transactions here, so two processes migrating one file at once failed half-way
    ("table tenant already exists"); the next one now waits and finds it at head.
    Where ``fcntl`` does not exist (Windows), it runs unguarded; where the lock file cannot
    be made (no such directory), too, so that SQLite says what is wrong with the path."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on the platforms CI runs
        yield
        return
    try:
        handle = lock.open("a")
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def enable_incremental_vacuum(path: str) -> None:
    """Let the retention job give deleted rows' pages back to the file system.

    ``auto_vacuum`` can be changed only before the first table exists or by a ``VACUUM``
    (which rewrites the file): a database made before this setting existed is rewritten
    once, here, while nothing else runs (``ipaas migrate`` / ``ipaas serve``). Later calls
    find it set and cost one pragma.
    """
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        if connection.execute("PRAGMA auto_vacuum").fetchone()[0] != INCREMENTAL:
            connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
            connection.execute("VACUUM")
    finally:
        connection.close()
