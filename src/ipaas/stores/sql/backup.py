"""``ipaas backup``: a consistent copy of the embedded SQLite database while it serves.

Copying ``ipaas.db`` with ``cp`` while the server writes can give a file that is torn, or
that lacks what the write-ahead log (``ipaas.db-wal``) still holds. SQLite's online backup
(``sqlite3.Connection.backup``, one step) copies every page inside one read transaction:
a snapshot as of its start, taken while the server goes on writing (in WAL mode a reader
blocks no writer). The copy is checked (``PRAGMA quick_check``), written beside the target
and renamed into place, so a target that exists is always whole.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url

#: How long the copy waits for a lock (only a checkpoint's restart or a schema change takes
#: one a reader waits for).
BUSY_TIMEOUT_S = 30.0


class BackupError(Exception):
    """Why no copy was made; the message is for the operator."""


def sqlite_path(database_url: str) -> Path:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        msg = "ipaas backup copies the embedded SQLite database; back PostgreSQL up with pg_dump"
        raise BackupError(msg)
    if url.database in (None, "", ":memory:"):
        msg = "IPAAS_DATABASE_URL names no SQLite file"
        raise BackupError(msg)
    return Path(url.database)


def backup_sqlite(database_url: str, target: Path) -> int:
    """Copy the database of ``database_url`` to ``target`` (which must not exist); its size
    in bytes."""
    source = sqlite_path(database_url)
    if not source.is_file():
        msg = f"no database at {source}"
        raise BackupError(msg)
    if target.exists():
        msg = f"{target} exists; name a new file"
        raise BackupError(msg)
    if not target.parent.is_dir():
        msg = f"the directory {target.parent} does not exist"
        raise BackupError(msg)
    partial = target.with_name(f"{target.name}.partial")
    try:
        partial.unlink(missing_ok=True)
        _copy(source, partial)
        os.replace(partial, target)
    except (sqlite3.Error, OSError) as exc:  # not writable, the disk full...
        msg = f"cannot write {target}: {exc}"
        raise BackupError(msg) from exc
    finally:
        partial.unlink(missing_ok=True)
    return target.stat().st_size


def _copy(source: Path, target: Path) -> None:
    src = sqlite3.connect(source, timeout=BUSY_TIMEOUT_S)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # all pages in one step: one snapshot
            # The copy keeps the source's journal mode (WAL); a file that stands alone is
            # easier to move, and opening it in WAL mode again is the server's business.
            dst.execute("PRAGMA journal_mode = DELETE")
            (check,) = dst.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                msg = f"the copy failed its check: {check}"
                raise BackupError(msg)
        finally:
            dst.close()
    finally:
        src.close()
