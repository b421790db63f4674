"""Alembic migrations, configured in code: no ``alembic.ini`` is needed at run time."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

_HERE = Path(__file__).parent


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
    command.upgrade(alembic_config(database_url), "head")
