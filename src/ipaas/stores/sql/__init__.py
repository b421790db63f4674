"""The SQL Store (SQLite and PostgreSQL) and its Alembic migrations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ipaas.stores.sql.store import SqlStore

if TYPE_CHECKING:
    from ipaas.stores.sql.migrations import run_migrations

__all__ = ["SqlStore", "run_migrations"]


def __getattr__(name: str) -> Any:
    # Alembic is imported only by what migrates: a serving process that does not keeps
    # ~7 MiB less (docs/architecture.md).
    if name == "run_migrations":
        from ipaas.stores.sql.migrations import run_migrations

        return run_migrations
    raise AttributeError(name)
