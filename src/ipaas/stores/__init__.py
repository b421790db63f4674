"""The Store port, its adapters, and ``create_store`` to pick one from the settings."""

from __future__ import annotations

from ipaas.config import Settings
from ipaas.stores.base import (
    DuplicateError,
    ExecutionPage,
    FinishedExecution,
    QueueStats,
    Reaped,
    Store,
)
from ipaas.stores.memory import MemoryStore


def create_store(settings: Settings) -> Store:
    """The Store for ``settings.database_url``, chosen by its scheme."""
    scheme = settings.database_url.partition(":")[0]
    match scheme:
        case "memory":
            return MemoryStore()
        case "sqlite+aiosqlite" | "postgresql+asyncpg":
            # Imported here so the memory store never loads SQLAlchemy.
            from ipaas.stores.sql import SqlStore
            from ipaas.stores.sql.engine import PoolSize

            pool = PoolSize(settings.db_pool_size, settings.db_pool_overflow)
            return SqlStore(settings.database_url, pool=pool)
        case _:
            msg = (
                f"unsupported IPAAS_DATABASE_URL scheme {scheme!r}: use memory://, "
                "sqlite+aiosqlite:///path/to.db or postgresql+asyncpg://user@host/db"
            )
            raise ValueError(msg)


__all__ = [
    "DuplicateError",
    "ExecutionPage",
    "FinishedExecution",
    "MemoryStore",
    "QueueStats",
    "Reaped",
    "Store",
    "create_store",
]
