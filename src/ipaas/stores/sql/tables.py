"""The schema as SQLAlchemy Core tables; Alembic migrations create it, never ``create_all``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

# Explicit names keep constraints identical on SQLite and PostgreSQL, so migrations can
# drop or alter them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

#: The Alembic revision these tables are (the newest migration's; a test holds them equal).
#: A process on an older schema waits for ``ipaas migrate`` (``SchemaBehind``) instead of
#: failing every statement that names a newer column.
SCHEMA_REVISION = "0016"


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC in and out: SQLite keeps no offset, so a naive value read back is UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _id(name: str = "id") -> sa.Column[str]:
    return sa.Column(name, sa.String(64), primary_key=True)


def _tenant_id() -> sa.Column[str]:
    return sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenant.id"), nullable=False)


def _at(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, UtcDateTime(), nullable=nullable)


def _where_set(column: str) -> dict[str, Any]:
    """A partial index's predicate, ``column IS NOT NULL``, on both dialects."""
    predicate = sa.text(f"{column} IS NOT NULL")
    return {"sqlite_where": predicate, "postgresql_where": predicate}


tenant = sa.Table(
    "tenant",
    metadata,
    _id(),
    sa.Column("name", sa.String(200), nullable=False),
    _at("created_at"),
    # Operator overrides of the intake guard rails (NULL: the setting's default).
    sa.Column("rate_limit", sa.Float(), nullable=True),
    sa.Column("rate_burst", sa.Integer(), nullable=True),
    sa.Column("max_queued", sa.Integer(), nullable=True),
    sa.Column("max_concurrency", sa.Integer(), nullable=True),
)

app_user = sa.Table(
    "app_user",
    metadata,
    _id(),
    _tenant_id(),
    # Stored lower-cased: the unique index then makes emails unique case-insensitively on
    # both dialects without functional indexes.
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("password_hash", sa.String(200), nullable=False),
    _at("created_at"),
    # ``Role``. The default: every user from before migration 0014 signed its tenant up.
    sa.Column("role", sa.String(16), nullable=False, server_default="owner"),
    # An open invitation: its token's hash (looked up when accepted) and its expiry.
    sa.Column("invite_hash", sa.String(64), nullable=True),
    _at("invite_expires_at", nullable=True),
    sa.Index(None, "email", unique=True),
    sa.Index(None, "tenant_id"),
    sa.Index(None, "invite_hash", unique=True, **_where_set("invite_hash")),
)

api_token = sa.Table(
    "api_token",
    metadata,
    _id(),
    _tenant_id(),
    sa.Column("user_id", sa.String(64), sa.ForeignKey("app_user.id"), nullable=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("token_hash", sa.String(128), nullable=False),
    _at("created_at"),
    _at("expires_at", nullable=True),
    _at("revoked_at", nullable=True),
    # Made with the password (sign-up, log-in): a new password ends it (migration 0011).
    sa.Column("session", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Index(None, "token_hash", unique=True),
    sa.Index(None, "tenant_id", "created_at"),
)

credential = sa.Table(
    "credential",
    metadata,
    _id(),
    _tenant_id(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("secret_ciphertext", sa.Text(), nullable=False),
    _at("created_at"),
    sa.Index(None, "tenant_id", "created_at"),
)

workflow = sa.Table(
    "workflow",
    metadata,
    _id(),
    _tenant_id(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("trigger", sa.JSON(), nullable=False),
    sa.Column("steps", sa.JSON(), nullable=False),
    _at("created_at"),
    _at("updated_at"),
    # The workflow run for each of this one's failures (not versioned, like the name).
    sa.Column("error_workflow_id", sa.String(64), nullable=True),
    sa.Index(None, "tenant_id", "created_at"),
)

# No foreign key to ``workflow``: versions outlive a deleted workflow.
workflow_version = sa.Table(
    "workflow_version",
    metadata,
    sa.Column("workflow_id", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer(), primary_key=True),
    _tenant_id(),
    sa.Column("trigger", sa.JSON(), nullable=False),
    sa.Column("steps", sa.JSON(), nullable=False),
    _at("created_at"),
)


#: The executions that did not succeed, as the partial index on them names them (and every
#: query meant to read it, word for word: SQLite's condition for using it).
UNSUCCESSFUL_STATUSES = ("cancelled", "failed", "timed_out")
UNSUCCESSFUL = f"status IN ({', '.join(repr(s) for s in UNSUCCESSFUL_STATUSES)})"


def _where_status(status: str) -> dict[str, Any]:
    """A partial index's predicate, ``status = '<status>'``, on both dialects."""
    return _where(f"status = '{status}'")


def _where(predicate: str) -> dict[str, Any]:
    """A partial index's predicate, on both dialects."""
    return {"sqlite_where": sa.text(predicate), "postgresql_where": sa.text(predicate)}


#: Queued executions ready to run (not waiting for a ``next_attempt_at``), as the queue's
#: partial index names them; every query meant to read it says both, word for word.
READY = "status = 'queued' AND next_attempt_at IS NULL"

#: ``dedup_key``'s unique index covers only rows with a key: ``ON CONFLICT`` names it so.
DEDUP_KEY_SET = sa.text("dedup_key IS NOT NULL")


# No foreign key to ``workflow`` either: executions stay readable after deletion.
execution = sa.Table(
    "execution",
    metadata,
    _id(),
    _tenant_id(),
    sa.Column("workflow_id", sa.String(64), nullable=False),
    sa.Column("workflow_version", sa.Integer(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("trigger", sa.JSON(), nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("lease_owner", sa.String(200), nullable=True),
    _at("lease_expires_at", nullable=True),
    sa.Column("cancel_requested", sa.Boolean(), nullable=False),
    _at("created_at"),
    _at("started_at", nullable=True),
    _at("finished_at", nullable=True),
    _at("deadline_at", nullable=True),
    # Unique per workflow when set (schedule ticks; later Idempotency-Key). NULLs never
    # collide in a unique index on SQLite or PostgreSQL.
    sa.Column("dedup_key", sa.String(255), nullable=True),
    # Set while a retry (or a circuit's cooldown) waits; cleared when it is due or claimed.
    _at("next_attempt_at", nullable=True),
    sa.Column("replay_of", sa.String(64), nullable=True),
    # W3C traceparent (55 characters today; room for a later version).
    sa.Column("trace_context", sa.String(128), nullable=True),
    # TRUE from a failure (failed, timed_out) until the alert pass has dealt with it (run
    # the workflow's error workflow, or nothing); NULL otherwise. Set by the statement that
    # records the failure, so no failure escapes the pass whatever crashes after it.
    sa.Column("alert_pending", sa.Boolean(), nullable=True),
    # The listing keyset, with and without a workflow filter.
    sa.Index(None, "tenant_id", "created_at", "id"),
    sa.Index(None, "tenant_id", "workflow_id", "created_at", "id"),
    # The queue: only queued (or running) rows, so a claim never reads history, whatever
    # the planner's statistics, and no index is led by ``status`` (a guard ``id = ? AND
    # status = ...`` has only the primary key). Each query names the status as a constant,
    # which both databases need to use a partial index (migration 0009).
    # Fair claims: the tenants with work ready (a loose index scan), each tenant's oldest
    # ready rows, its queue depth; also the queue's figures and the reaper. Only rows ready
    # to run: a waiting one (a retry's backoff, a delay) is in the ``next_attempt_at`` index
    # until the due pass clears it, so claims never read past waits (migration 0016).
    sa.Index("ix_execution_queued", "tenant_id", "created_at", "id", **_where(READY)),
    # Each tenant's running count against its cap; the reaper's scan of running rows.
    sa.Index("ix_execution_running", "tenant_id", **_where_status("running")),
    # A tenant's failed, timed out or cancelled executions, newest first: the list filtered
    # by one of those (of every workflow), a bulk retry's scan. The listing index read the
    # tenant's whole history for them; succeeded rows never enter this one (migration 0012).
    sa.Index("ix_execution_unsuccessful", "tenant_id", "created_at", "id", **_where(UNSUCCESSFUL)),
    # Partial (this and the next two): most rows have no key, no pending retry and, while
    # they are new, no finish; an index that leaves those rows out costs the insert nothing.
    # Every query that uses one compares the column, which implies IS NOT NULL.
    sa.Index(None, "workflow_id", "dedup_key", unique=True, **_where_set("dedup_key")),
    # The due-retry pass: almost every row is NULL here, so the range it scans is short.
    sa.Index(None, "next_attempt_at", **_where_set("next_attempt_at")),
    # GET /api/stats: a tenant's executions finished within a window.
    sa.Index(None, "tenant_id", "finished_at", **_where_set("finished_at")),
    # The alert pass: only failures not yet dealt with (a handful at any time).
    sa.Index(None, "finished_at", **_where_set("alert_pending")),
)

step_run = sa.Table(
    "step_run",
    metadata,
    sa.Column("execution_id", sa.String(64), sa.ForeignKey("execution.id"), primary_key=True),
    sa.Column("step_id", sa.String(64), primary_key=True),
    sa.Column("attempt", sa.Integer(), primary_key=True),
    _tenant_id(),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("input", sa.JSON(), nullable=True),
    sa.Column("output", sa.JSON(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("error_code", sa.String(32), nullable=True),
    sa.Column("status_code", sa.Integer(), nullable=True),
    _at("next_attempt_at", nullable=True),
    _at("started_at"),
    _at("finished_at"),
)

# One row per (tenant, destination host) that ever failed; written on failures and state
# changes only, never for a success on a healthy circuit.
circuit = sa.Table(
    "circuit",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenant.id"), primary_key=True),
    # The breaker's key: a host name (at most 253 characters) and a port.
    sa.Column("host", sa.String(300), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("failures", sa.Integer(), nullable=False),
    _at("opened_at", nullable=True),
    _at("retry_at", nullable=True),
    _at("updated_at"),
    # Every process reads the circuits that are not closed once a second.
    sa.Index(None, "state"),
)

#: An alert window's rows with failures held for its digest, as its partial index names them.
ALERTS_HELD = "held > 0"

# Failure alerts' pacing (``engine/alerts.py``, ``IPAAS_ALERT_INTERVAL_S``): one row per
# workflow whose failures ever alerted. A failure alerts at once only when the last alert
# is older than the interval and nothing is held; otherwise it is counted here, and the
# count goes out as one alert (a digest) when the interval is up. Not a foreign key: like
# the workflow's versions, it outlives a deleted workflow (its digest then alerts nobody).
alert_window = sa.Table(
    "alert_window",
    metadata,
    sa.Column("workflow_id", sa.String(64), primary_key=True),
    _tenant_id(),
    _at("last_alert_at"),
    # Failures since ``last_alert_at`` that did not alert, and the latest of them.
    sa.Column("held", sa.Integer(), nullable=False),
    sa.Column("held_execution_id", sa.String(64), nullable=True),
    # Every worker's pass reads the windows with a digest due, each second.
    sa.Index(None, "last_alert_at", **_where(ALERTS_HELD)),
)
