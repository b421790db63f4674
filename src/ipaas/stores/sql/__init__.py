"""The SQL Store (SQLite and PostgreSQL) and its Alembic migrations."""

from ipaas.stores.sql.migrations import run_migrations
from ipaas.stores.sql.store import SqlStore

__all__ = ["SqlStore", "run_migrations"]
