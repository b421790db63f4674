"""The SQL Store: one SQLAlchemy Core implementation for SQLite and PostgreSQL.

Each method builds an op, a small synchronous function that runs prebuilt statements
(``statements.py``) on a connection, and hands it to the ``Database`` (``engine.py``), which
runs it in one transaction on a thread or connection of its choosing. Ops return rows;
domain models are built back here, on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ipaas.circuits.models import Circuit, CircuitState
from ipaas.credentials.models import Credential, CredentialType
from ipaas.executions.models import (
    ALERTING_STATUSES,
    Execution,
    ExecutionStatus,
    StepRun,
    StepStatus,
    TriggerData,
)
from ipaas.stores import fairness
from ipaas.stores.base import (
    FIGURE_MINUTES,
    AlertWindow,
    CancelledPending,
    DuplicateError,
    ExecutionFigures,
    ExecutionPage,
    FinishedExecution,
    MemberChange,
    PendingAlert,
    PendingDigest,
    QueueStats,
    QueueVacuum,
    Reaped,
    RecentRun,
    ScheduledWorkflow,
    SchemaBehind,
)
from ipaas.stores.sql import statements as q
from ipaas.stores.sql import tables as t
from ipaas.stores.sql.engine import (
    Database,
    PoolSize,
    RowInsert,
    create_database,
    mappings,
    rowcount,
    tuples,
)
from ipaas.tenants.models import ApiToken, Role, Tenant, TenantLimits, User
from ipaas.workflows.models import Step, Trigger, Workflow, WorkflowDefinition, WorkflowVersion

_EX = q.EX
_Row = sa.Row[Any]
_SELECT_1 = sa.text("SELECT 1")
_SELECT_REVISION = sa.text("SELECT version_num FROM alembic_version")
#: The time at the statement's run, not its transaction's start (``now()``).
_SELECT_CLOCK = sa.select(sa.func.clock_timestamp())
_log = structlog.get_logger(__name__)
_DEDUP_ATTEMPTS = 3


def _schema_revision(conn: sa.Connection) -> str | None:
    """The database's Alembic revision; ``None`` before the first migration."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    revision = conn.execute(_SELECT_REVISION).scalar()
    return None if revision is None else str(revision)


def _check_schema(found: str | None) -> None:
    """``SchemaBehind`` when the database is older than the code. A newer one is let in
    with a warning: migrations add what a new version needs, so the version before
    runs on it during a rolling upgrade (docs/operations.md)."""
    expected = t.SCHEMA_REVISION
    if found == expected:
        return
    if found is None or (found.isdigit() and int(found) < int(expected)):
        raise SchemaBehind(found, expected)
    _log.warning("schema_newer_than_code", found=found, expected=expected)


# -- ops: the common shapes -------------------------------------------------------------------
def _first(
    stmt: sa.Executable, params: Mapping[str, Any]
) -> Callable[[sa.Connection], _Row | None]:
    return lambda conn: conn.execute(stmt, params).first()


def _all(stmt: sa.Executable, params: Mapping[str, Any]) -> Callable[[sa.Connection], list[_Row]]:
    return lambda conn: list(conn.execute(stmt, params).all())


def _all_of(
    statements: Sequence[tuple[sa.Executable, Mapping[str, Any]]],
) -> Callable[[sa.Connection], list[_Row]]:
    """The rows of several reads in one go (one connection, in order): a read split
    into statements of bounded size."""
    return lambda conn: [row for stmt, params in statements for row in _all(stmt, params)(conn)]


#: Ids bound in one ``IN (...)`` at most (both dialects take thousands; this keeps each
#: statement small).
IDS_PER_STATEMENT = 500
#: Workflows in one ``recent_runs`` statement (one SELECT each in a ``UNION ALL``).
RECENT_RUNS_PER_STATEMENT = 100


def _chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _rowcount(stmt: sa.Executable, params: Mapping[str, Any]) -> Callable[[sa.Connection], int]:
    """The number of rows a write statement matched."""
    return lambda conn: rowcount(conn, stmt, params)


class SqlStore:
    """The ``Store`` on SQLite (``sqlite+aiosqlite``) or PostgreSQL (``postgresql+asyncpg``)."""

    def __init__(self, database_url: str, *, pool: PoolSize | None = None) -> None:
        self._url = database_url
        self._pool = pool
        self._database: Database | None = None

    @property
    def writes_in_order(self) -> bool:
        return self._db.writes_in_order

    @property
    def _db(self) -> Database:
        if self._database is None:
            msg = "SqlStore.startup() has not been awaited"
            raise RuntimeError(msg)
        return self._database

    async def startup(self) -> None:
        if self._database is not None:
            return
        db = create_database(self._url, pool=self._pool)
        try:
            # Connect now: a wrong URL or an unreachable server fails start-up, not a request.
            _check_schema(await db.run_read(_schema_revision))
        except BaseException:
            await db.dispose()
            raise
        self._database = db
        # The statements with a dialect-specific part, built once per database.
        self._upsert_step = db.upsert(t.step_run, q.STEP_KEY)
        run_s = db.seconds_between(t.execution.c.started_at, t.execution.c.finished_at)
        self._run_durations = sa.select(run_s).where(q.RUN_FINISHED).order_by(run_s)
        self._finish_with_step = db.update_then_upsert(q.FINISH, t.step_run, q.STEP_KEY)
        self._defer_with_step = db.update_then_upsert(q.DEFER, t.step_run, q.STEP_KEY)
        self._finish_then_claim = db.update_upsert_then_claim(
            q.FINISH,
            t.step_run,
            q.STEP_KEY,
            lambda tenant_id: q.next_of_tenant(tenant_id, db.lock_claimable),
        )
        self._upsert_version = db.upsert(t.workflow_version, q.VERSION_KEY)
        self._insert_once = db.insert_unless_taken(t.execution, q.DEDUP_KEY, where=t.DEDUP_KEY_SET)
        self._open_alert_window = db.insert_unless_taken(t.alert_window, ["workflow_id"])
        self._claim_one = q.claim_one(db.running_under_claim_lock(_EX.c.tenant_id))
        locked_count = db.running_under_claim_lock(q.p("p_tenant_id"))
        self._claim_of_tenant = (
            None if locked_count is None else q.claim_of_tenant(locked_count, db.lock_claimable)
        )
        self._claim_due_of_tenant = q.claim_due_of_tenant(db.lock_claimable)
        self._reap = (
            (
                q.reap_timed_out(db.lock_claimable, q.IS_READY),
                q.reap_timed_out(db.lock_claimable, q.IS_WAITING),
                q.reap_timed_out(db.lock_claimable, q.LEASE_EXPIRED),
            ),
            q.reap_cancelled(db.lock_claimable),
            q.reap_requeued(db.lock_claimable),
        )
        self._take_due = (
            sa.update(_EX)
            # ``HAS_COME`` again: a concurrent taker's row no longer matches after its update.
            .where(_EX.c.id.in_(db.lock_claimable(q.DUE_RETRIES)), q.HAS_COME)
            .values(next_attempt_at=None)
            .returning(_EX.c.id)
        )
        self._circuit_failure = db.upsert(
            t.circuit, ("tenant_id", "host"), q.CIRCUIT_FAILURE_SET
        ).returning(*t.circuit.c)

    async def shutdown(self) -> None:
        if self._database is not None:
            database, self._database = self._database, None
            await database.dispose()

    async def ping(self) -> bool:
        if not self._db.writable():  # while the disk is full (``_WriteOutage``)
            return False
        try:
            await self._db.run_read(_first(_SELECT_1, {}))
        except (SQLAlchemyError, OSError):
            return False
        return True

    async def clock_offset_s(self) -> float | None:
        if not self._url.startswith("postgresql"):
            return None  # SQLite: the file has no clock; this process's is the only one
        before = time.time()
        row = await self._db.run_read(_first(_SELECT_CLOCK, {}))
        after = time.time()
        assert row is not None
        server: datetime = row[0]
        return server.timestamp() - (before + after) / 2

    async def _write_one(self, stmt: sa.Executable, params: Mapping[str, Any]) -> int:
        """Run one write statement; the number of rows it matched."""
        return await self._db.run_write(_rowcount(stmt, params), one_statement=True)

    # -- tenants, users, tokens -----------------------------------------------------------
    async def create_tenant(
        self, tenant: Tenant, user: User, token: ApiToken, *, first: bool = False
    ) -> bool:
        tenant_values = _tenant_values(tenant)
        user_values = _user_values(user)
        token_values = dict(token)
        lock_signups = self._db.lock_signups

        def op(conn: sa.Connection) -> bool:
            if first:
                lock_signups(conn)
                if conn.execute(q.ANY_TENANT).first() is not None:
                    return False
            conn.execute(q.INSERT_TENANT, tenant_values)
            conn.execute(q.INSERT_USER, user_values)
            conn.execute(q.INSERT_TOKEN, token_values)
            return True

        try:
            return await self._db.run_write(op)
        except IntegrityError as exc:
            raise DuplicateError("email") from exc

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        row = await self._db.run_read(_first(q.GET_TENANT, {"p_tenant_id": tenant_id}))
        if row is None:
            return None
        return Tenant(
            id=row.id,
            name=row.name,
            created_at=row.created_at,
            # As stored: values outside today's bounds (set by an older version) still read.
            limits=TenantLimits.model_construct(
                rate_limit=row.rate_limit,
                rate_burst=row.rate_burst,
                max_queued=row.max_queued,
                max_concurrency=row.max_concurrency,
            ),
        )

    async def set_tenant_limits(self, tenant_id: str, limits: TenantLimits) -> bool:
        params = {"p_tenant_id": tenant_id} | {f"p_{k}": v for k, v in limits}
        return await self._write_one(q.SET_TENANT_LIMITS, params) == 1

    async def get_user_by_email(self, email: str) -> User | None:
        row = await self._db.run_read(_first(q.GET_USER, {"p_email": email.lower()}))
        return None if row is None else _user(row)

    async def get_user(self, tenant_id: str, user_id: str) -> User | None:
        params = {"p_tenant_id": tenant_id, "p_id": user_id}
        row = await self._db.run_read(_first(q.GET_USER_BY_ID, params))
        return None if row is None else _user(row)

    async def list_users(self, tenant_id: str) -> list[User]:
        rows = await self._db.run_read(_all(q.LIST_USERS, {"p_tenant_id": tenant_id}))
        return [_user(row) for row in rows]

    async def create_user(self, user: User) -> None:
        try:
            await self._write_one(q.INSERT_USER, _user_values(user))
        except IntegrityError as exc:
            raise DuplicateError("email") from exc

    async def accept_invite(
        self, invite_hash: str, password_hash: str, token: ApiToken, *, now: datetime
    ) -> User | None:
        params = {"p_invite_hash": invite_hash, "p_password_hash": password_hash, "p_now": now}

        def op(conn: sa.Connection) -> _Row | None:
            row = conn.execute(q.ACCEPT_INVITE, params).first()
            if row is not None:
                values = dict(token) | {"tenant_id": row.tenant_id, "user_id": row.id}
                conn.execute(q.INSERT_TOKEN, values)
            return row

        row = await self._db.run_write(op)
        return None if row is None else _user(row)

    async def change_member(
        self, tenant_id: str, user_id: str, *, role: Role | None
    ) -> MemberChange:
        tenant = {"p_tenant_id": tenant_id}
        member = tenant | {"p_id": user_id}

        def op(conn: sa.Connection) -> MemberChange:
            if rowcount(conn, q.LOCK_TENANT, tenant) != 1:
                return MemberChange.not_found
            user = conn.execute(q.GET_USER_BY_ID, member).first()
            if user is None:
                return MemberChange.not_found
            if (
                role is not Role.owner
                and user.role == Role.owner
                and user.invite_hash is None
                and not conn.execute(q.OTHER_OWNER, member).scalar()
            ):
                return MemberChange.last_owner
            if role is None:
                conn.execute(q.DELETE_USER_TOKENS, member)
                conn.execute(q.DELETE_USER, member)
            else:
                conn.execute(q.SET_ROLE, member | {"p_role": role.value})
            return MemberChange.done

        return await self._db.run_write(op)

    async def change_password(
        self,
        tenant_id: str,
        user_id: str,
        password_hash: str,
        *,
        keep_token_id: str | None,
        at: datetime,
    ) -> int | None:
        user = {"p_tenant_id": tenant_id, "p_id": user_id, "p_password_hash": password_hash}
        sessions = {
            "p_tenant_id": tenant_id,
            "p_user_id": user_id,
            "p_keep": keep_token_id,
            "p_revoked_at": at,
        }

        def op(conn: sa.Connection) -> int | None:
            if rowcount(conn, q.SET_PASSWORD, user) != 1:
                return None
            return rowcount(conn, q.END_SESSIONS, sessions)

        return await self._db.run_write(op)

    async def get_token_by_hash(self, token_hash: str) -> ApiToken | None:
        row = await self._db.run_read(_first(q.GET_TOKEN, {"p_hash": token_hash}))
        return None if row is None else ApiToken.model_construct(**row._mapping)

    async def create_token(self, token: ApiToken) -> None:
        await self._write_one(q.INSERT_TOKEN, dict(token))

    async def list_tokens(self, tenant_id: str, *, now: datetime) -> list[ApiToken]:
        params = {"p_tenant_id": tenant_id, "p_now": now}
        rows = await self._db.run_read(_all(q.LIST_TOKENS, params))
        return [ApiToken.model_construct(**row._mapping) for row in rows]

    async def revoke_token(self, tenant_id: str, token_id: str, revoked_at: datetime) -> bool:
        params = {"p_tenant_id": tenant_id, "p_id": token_id, "p_revoked_at": revoked_at}
        return await self._write_one(q.REVOKE_TOKEN, params) == 1

    # -- credentials ----------------------------------------------------------------------
    async def create_credential(self, credential: Credential) -> None:
        values = dict(credential) | {"type": credential.type.value}
        await self._write_one(q.INSERT_CREDENTIAL, values)

    async def get_credential(self, tenant_id: str, credential_id: str) -> Credential | None:
        found = await self.get_credentials(tenant_id, [credential_id])
        return found.get(credential_id)

    async def get_credentials(
        self, tenant_id: str, credential_ids: Sequence[str]
    ) -> dict[str, Credential]:
        if not credential_ids:
            return {}
        params = {"p_tenant_id": tenant_id, "p_ids": list(credential_ids)}
        rows = await self._db.run_read(_all(q.GET_CREDENTIALS, params))
        return {row.id: _credential(row) for row in rows}

    async def list_credentials(self, tenant_id: str) -> list[Credential]:
        rows = await self._db.run_read(_all(q.LIST_CREDENTIALS, {"p_tenant_id": tenant_id}))
        return [_credential(row) for row in rows]

    async def delete_credential(self, tenant_id: str, credential_id: str) -> bool:
        params = {"p_tenant_id": tenant_id, "p_id": credential_id}
        return await self._write_one(q.DELETE_CREDENTIAL, params) == 1

    async def update_credential(
        self,
        tenant_id: str,
        credential_id: str,
        *,
        name: str | None = None,
        secret_ciphertext: str | None = None,
    ) -> bool:
        values = {
            column: value
            for column, value in (("name", name), ("secret_ciphertext", secret_ciphertext))
            if value is not None
        }
        if not values:
            return await self.get_credential(tenant_id, credential_id) is not None
        update = q.UPDATE_CREDENTIAL.values(**values)
        params = {"p_tenant_id": tenant_id, "p_id": credential_id}
        return await self._write_one(update, params) == 1

    async def replace_credential_secret(
        self, tenant_id: str, credential_id: str, *, old: str, new: str
    ) -> bool:
        params = {"p_tenant_id": tenant_id, "p_id": credential_id, "p_old": old, "p_new": new}
        return await self._write_one(q.REPLACE_CREDENTIAL_SECRET, params) == 1

    # -- workflows ------------------------------------------------------------------------
    async def create_workflow(self, workflow: Workflow) -> None:
        workflow_values, version_values = dict(workflow), _version_values(workflow)

        def op(conn: sa.Connection) -> None:
            conn.execute(q.INSERT_WORKFLOW, workflow_values)
            conn.execute(q.INSERT_VERSION, version_values)

        await self._db.run_write(op)

    async def get_workflow(self, tenant_id: str, workflow_id: str) -> Workflow | None:
        params = {"p_tenant_id": tenant_id, "p_id": workflow_id}
        row = await self._db.run_read(_first(q.GET_WORKFLOW, params))
        return None if row is None else _workflow(row)

    async def get_workflow_for_intake(self, workflow_id: str) -> Workflow | None:
        row = await self._db.run_read(_first(q.GET_WORKFLOW_FOR_INTAKE, {"p_id": workflow_id}))
        return None if row is None else _workflow(row)

    async def list_workflows(
        self,
        tenant_id: str,
        *,
        before: tuple[datetime, str] | None = None,
        limit: int | None = None,
    ) -> list[Workflow]:
        query = q.LIST_WORKFLOWS
        params: dict[str, Any] = {"p_tenant_id": tenant_id}
        if before is not None:
            # A row-value comparison, so the (tenant_id, created_at) index bounds the scan.
            key = sa.tuple_(q.p_at("p_before_at"), q.p_str("p_before_id"))
            query = query.where(sa.tuple_(t.workflow.c.created_at, t.workflow.c.id) < key)
            params["p_before_at"], params["p_before_id"] = before
        if limit is not None:
            query = query.limit(sa.bindparam("p_limit", type_=sa.Integer()))
            params["p_limit"] = limit
        rows = await self._db.run_read(_all(query, params))
        return [_workflow(row) for row in rows]

    async def workflow_names(self, tenant_id: str) -> dict[str, str]:
        rows = await self._db.run_read(_all(q.WORKFLOW_NAMES, {"p_tenant_id": tenant_id}))
        return {row.id: row.name for row in rows}

    async def list_scheduled_workflows(
        self, ids: Collection[str] | None = None
    ) -> list[ScheduledWorkflow]:
        if ids is None:
            rows = await self._db.run_read(_all(q.LIST_SCHEDULED_WORKFLOWS, {}))
        else:
            chunks = _chunks(sorted(set(ids)), IDS_PER_STATEMENT)
            reads = [(q.SCHEDULED_WORKFLOWS_BY_ID, {"p_ids": chunk}) for chunk in chunks]
            found = await self._db.run_read(_all_of(reads))
            rows = sorted(found, key=lambda row: (row.created_at, row.id))
        return [
            ScheduledWorkflow(
                row.id,
                row.tenant_id,
                row.version,
                Trigger.model_validate(row.trigger),
                row.updated_at,
            )
            for row in rows
        ]

    async def scheduled_workflow_stamps(self) -> list[tuple[str, datetime]]:
        rows = await self._db.run_read(_all(q.SCHEDULED_WORKFLOW_STAMPS, {}))
        return [(row.id, row.updated_at) for row in rows]

    async def update_workflow(
        self, workflow: Workflow, *, new_version: bool, base_updated_at: datetime | None = None
    ) -> bool:
        params = {
            "p_tenant_id": workflow.tenant_id,
            "p_id": workflow.id,
            "p_name": workflow.name,
            "p_active": workflow.active,
            "p_version": workflow.version,
            "p_trigger": workflow.trigger,
            "p_steps": workflow.steps,
            "p_updated_at": workflow.updated_at,
            "p_error_workflow_id": workflow.error_workflow_id,
        }
        update = q.UPDATE_WORKFLOW
        if base_updated_at is not None:
            update = q.UPDATE_WORKFLOW_IF_UNCHANGED
            params["p_base_updated_at"] = base_updated_at
        version_values = _version_values(workflow)
        upsert_version = self._upsert_version

        def op(conn: sa.Connection) -> bool:
            if conn.execute(update, params).rowcount != 1:
                return False
            if new_version:
                # An upsert: saving the same version twice must not fail the update.
                conn.execute(upsert_version, version_values)
            return True

        return await self._db.run_write(op, one_statement=not new_version)

    async def delete_workflow(
        self, tenant_id: str, workflow_id: str, *, base_updated_at: datetime | None = None
    ) -> bool:
        params: dict[str, Any] = {"p_tenant_id": tenant_id, "p_id": workflow_id}
        delete = q.DELETE_WORKFLOW
        if base_updated_at is not None:
            delete = q.DELETE_WORKFLOW_IF_UNCHANGED
            params["p_base_updated_at"] = base_updated_at
        return await self._write_one(delete, params) == 1

    async def get_workflow_version(
        self, tenant_id: str, workflow_id: str, version: int
    ) -> WorkflowDefinition | None:
        params = {"p_tenant_id": tenant_id, "p_id": workflow_id, "p_version": version}
        row = await self._db.run_read(_first(q.GET_VERSION, params))
        if row is None:
            return None
        return WorkflowDefinition.model_construct(
            trigger=Trigger.model_validate(row.trigger),
            steps=[Step.model_validate(step) for step in row.steps],
        )

    async def list_workflow_versions(
        self, tenant_id: str, workflow_id: str, *, before: int | None = None, limit: int
    ) -> list[WorkflowVersion]:
        params: dict[str, Any] = {"p_tenant_id": tenant_id, "p_id": workflow_id, "p_limit": limit}
        query = q.LIST_VERSIONS
        if before is not None:
            query = q.LIST_VERSIONS_BEFORE
            params["p_before"] = before
        rows = await self._db.run_read(_all(query, params))
        return [WorkflowVersion.model_validate(dict(row._mapping)) for row in rows]

    # -- executions -----------------------------------------------------------------------
    async def create_execution(self, execution: Execution) -> None:
        try:
            await self._db.run_write(
                RowInsert(q.INSERT_EXECUTION, _execution_values(execution)), one_statement=True
            )
        except IntegrityError as exc:
            # The only unique key a caller can hit is (workflow_id, dedup_key); without a
            # key, an integrity error is a bug (an unknown tenant) and is raised as it is.
            if execution.dedup_key is None:
                raise
            raise DuplicateError("dedup_key") from exc

    async def create_execution_once(
        self, execution: Execution, *, expired_before: datetime
    ) -> str | None:
        assert execution.dedup_key is not None
        values = _execution_values(execution)
        params = {
            "p_workflow_id": execution.workflow_id,
            "p_dedup_key": execution.dedup_key,
            "p_expired_before": expired_before,
        }
        insert_once = self._insert_once

        def op(conn: sa.Connection) -> str | None:
            conn.execute(q.RELEASE_EXPIRED_KEY, params)
            # The unique (workflow_id, dedup_key) index decides between racing callers; a
            # holder that gives its key up between our insert and our read (its window
            # just ended) sends us round again.
            for _ in range(_DEDUP_ATTEMPTS):
                if conn.execute(insert_once, values).first() is not None:
                    return None
                holder: str | None = conn.execute(q.DEDUP_HOLDER, params).scalar()
                if holder is not None:
                    return holder
            msg = "dedup key neither free nor held"
            raise RuntimeError(msg)

        return await self._db.run_write(op)

    async def get_execution(self, tenant_id: str, execution_id: str) -> Execution | None:
        params = {"p_tenant_id": tenant_id, "p_id": execution_id}
        row = await self._db.run_read(_first(q.GET_EXECUTION, params))
        return None if row is None else _execution(row._mapping)

    async def list_executions(
        self,
        tenant_id: str,
        *,
        workflow_id: str | None = None,
        status: ExecutionStatus | None = None,
        before: tuple[datetime, str] | None = None,
        since: datetime | None = None,
        limit: int = 50,
        trigger_contains: str | None = None,
    ) -> ExecutionPage:
        if limit <= 0:
            return ExecutionPage([], None)
        query = q.list_executions(
            workflow=workflow_id is not None,
            status=status,
            before=before is not None,
            since=since is not None,
            contains=trigger_contains is not None,
        )
        params: dict[str, Any] = {"p_tenant_id": tenant_id, "p_limit": limit + 1}
        if workflow_id is not None:
            params["p_workflow_id"] = workflow_id
        if status is not None:
            params["p_status"] = status.value
        if before is not None:
            params["p_before_at"], params["p_before_id"] = before
        if since is not None:
            params["p_since"] = since
        if trigger_contains is not None:
            params["p_contains"] = q.like_pattern(trigger_contains)
        rows = await self._db.run_read(_all(query, params))
        items = [_execution(row._mapping) for row in rows[:limit]]
        more = len(rows) > limit
        return ExecutionPage(items, (items[-1].created_at, items[-1].id) if more else None)

    async def execution_figures(self, tenant_id: str, *, since: datetime) -> ExecutionFigures:
        params: dict[str, Any] = {"p_tenant_id": tenant_id, "p_since": since}
        params |= {f"p_m{i}": since + timedelta(minutes=i) for i in range(1, FIGURE_MINUTES)}
        durations = self._run_durations

        def op(conn: sa.Connection) -> ExecutionFigures:
            minutes = conn.execute(q.FIGURES_PER_MINUTE, params).all()
            workflows = conn.execute(q.FIGURES_PER_WORKFLOW, params).all()
            seconds = conn.execute(durations, params).scalars().all()
            return ExecutionFigures(
                per_minute=[(int(m), ExecutionStatus(s), int(n)) for m, s, n in minutes],
                per_workflow=[(w, int(f or 0), int(n)) for w, f, n in workflows],
                durations_s=[float(d) for d in seconds],
            )

        # Three statements of one read: several autocommit reads may see a write between
        # them, which only shifts a figure by an execution or two.
        return await self._db.run_read(op)

    async def count_queued(self, tenant_id: str | None = None) -> int:
        if tenant_id is None:
            op = _first(q.COUNT_QUEUED, {})
        else:
            op = _first(q.COUNT_QUEUED_OF_TENANT, {"p_tenant_id": tenant_id})
        row = await self._db.run_read(op)
        assert row is not None  # an aggregate always returns a row
        return int(row[0])

    async def queue_stats(self, *, now: datetime) -> QueueStats:
        row = await self._db.run_read(_first(q.QUEUE_STATS, {"p_now": now}))
        assert row is not None  # aggregates always return a row
        queued, waiting, oldest, expired = tuple(row)
        return QueueStats(int(queued), oldest, int(expired), waiting=int(waiting))

    async def list_finished(
        self, tenant_id: str, *, since: datetime, limit: int
    ) -> list[FinishedExecution]:
        params = {"p_tenant_id": tenant_id, "p_since": since, "p_limit": limit}
        rows = await self._db.run_read(_all(q.LIST_FINISHED, params))
        return [
            FinishedExecution(
                ExecutionStatus(row.status),
                row.finished_at,
                (row.finished_at - row.started_at).total_seconds() if row.started_at else 0.0,
            )
            for row in rows
        ]

    async def recent_runs(
        self, tenant_id: str, workflow_ids: Sequence[str], *, limit: int
    ) -> dict[str, list[RecentRun]]:
        statements = []
        # SQLite takes at most 500 SELECTs in one compound statement.
        for chunk in _chunks(list(dict.fromkeys(workflow_ids)), RECENT_RUNS_PER_STATEMENT):
            params: dict[str, Any] = {"p_tenant_id": tenant_id, "p_limit": limit}
            params.update((f"p_w{i}", workflow_id) for i, workflow_id in enumerate(chunk))
            statements.append((q.recent_runs(len(chunk)), params))

        rows = await self._db.run_read(_all_of(statements)) if statements else []
        runs: dict[str, list[RecentRun]] = {}
        for row in rows:
            runs.setdefault(row.workflow_id, []).append(
                RecentRun(row.id, ExecutionStatus(row.status), row.created_at)
            )
        for found in runs.values():
            found.sort(key=lambda run: (run.created_at, run.id), reverse=True)
        return runs

    async def list_tenant_ids(self) -> list[str]:
        return [row[0] for row in await self._db.run_read(_all(q.LIST_TENANT_IDS, {}))]

    async def keep_horizon(self, tenant_id: str, keep: int) -> datetime | None:
        rows = await self._db.run_read(
            _all(q.KEEP_HORIZON, {"p_tenant_id": tenant_id, "p_keep": keep})
        )
        # Only when one lies beyond the newest ``keep``: with exactly ``keep``, none goes.
        return rows[0][0] if len(rows) == 2 else None

    async def prune_executions(
        self, tenant_id: str, *, finished_before: datetime, limit: int
    ) -> int:
        def op(conn: sa.Connection) -> int:
            scope = {"p_tenant_id": tenant_id, "p_limit": limit, "p_before": finished_before}
            ids = [row[0] for row in conn.execute(q.PRUNE_OLDER, scope)]
            if not ids:
                return 0
            params = {"p_tenant_id": tenant_id, "p_ids": ids}
            conn.execute(q.DELETE_STEP_RUNS, params)
            return int(conn.execute(q.DELETE_EXECUTIONS, params).rowcount)

        return await self._db.run_write(op)

    async def prune_tokens(self, *, ended_before: datetime, limit: int) -> int:
        params = {"p_before": ended_before, "p_limit": limit}
        return await self._write_one(q.PRUNE_TOKENS, params)

    async def compact(self) -> None:
        await self._db.compact()

    async def vacuum_queue(self, *, min_dead: int) -> QueueVacuum | None:
        return await self._db.vacuum_queue(min_dead=min_dead)

    async def claim_execution(
        self,
        execution_id: str,
        *,
        owner: str,
        now: datetime,
        lease_until: datetime,
        timeout_s: float,
        tenant_cap: int | None = None,
    ) -> Execution | None:
        params = _claim_params(owner, now, lease_until, timeout_s) | {
            "p_id": execution_id,
            "p_cap": tenant_cap,
        }
        claim_one = self._claim_one

        def op(conn: sa.Connection) -> list[Mapping[Any, Any]]:
            return _fill_deadlines(conn, mappings(conn, claim_one, params), timeout_s)

        # One statement: on PostgreSQL it takes the tenant's claim lock and counts under
        # it, and the lock ends with the statement's own transaction (migration 0008).
        # ``_fill_deadlines``'s rare second statement only completes this claim's row.
        claimed = await self._db.run_write(op, one_statement=True)
        return _execution(claimed[0]) if claimed else None

    async def claim_next(
        self,
        *,
        owner: str,
        now: datetime,
        lease_until: datetime,
        timeout_s: float,
        limit: int,
        tenant_cap: int | None = None,
    ) -> list[Execution]:
        if limit <= 0:
            return []
        params = _claim_params(owner, now, lease_until, timeout_s)
        if self._claim_of_tenant is not None:
            claimed = await self._claim_per_tenant(
                self._claim_of_tenant, params, timeout_s, limit=limit, tenant_cap=tenant_cap
            )
        else:
            claimed = await self._claim_in_one_transaction(
                params, timeout_s, limit=limit, tenant_cap=tenant_cap
            )
        # RETURNING has no defined order; callers expect the oldest first.
        return sorted(claimed, key=lambda ex: (ex.created_at, ex.id))

    async def _claim_per_tenant(
        self,
        claim_of_tenant: sa.Update,
        params: dict[str, Any],
        timeout_s: float,
        *,
        limit: int,
        tenant_cap: int | None,
    ) -> list[Execution]:
        """``claim_next`` where claims overlap (PostgreSQL): one read of the tenants with
        queued work and their running counts shares the slots out (``fairness.share``),
        then one statement per chosen tenant claims its share under its claim lock, held
        for that statement only. No transaction spans round trips, so another worker's
        claim of the same tenant waits for one statement, not for a whole claim. The counts
        read first can be stale; the cap is checked again under the lock, and a tenant that
        gets fewer than its share leaves those slots to the next claim."""
        rows = await self._db.run_read(
            lambda conn: tuples(conn, q.TENANTS_TO_SHARE, {"p_now": params["p_now"]})
        )
        shares = _shares(rows, limit=limit, tenant_cap=tenant_cap)

        def claim(tenant_id: str, n: int) -> Callable[[sa.Connection], list[Mapping[Any, Any]]]:
            values = params | {"p_tenant_id": tenant_id, "p_limit": n, "p_cap": tenant_cap}
            return lambda conn: _fill_deadlines(
                conn, mappings(conn, claim_of_tenant, values), timeout_s
            )

        outcomes = await asyncio.gather(
            *(
                self._db.run_write(claim(tenant_id, n), one_statement=True)
                for tenant_id, n in shares.items()
            ),
            return_exceptions=True,
        )
        claimed = [_execution(row) for o in outcomes if isinstance(o, list) for row in o]
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        # The tenants whose claim went through are this caller's now: raising would leave
        # their rows running with nobody to run them until the lease expires. The others'
        # work stays queued for the next claim.
        if failed and not claimed:
            raise failed[0]
        return claimed

    async def _claim_in_one_transaction(
        self, params: dict[str, Any], timeout_s: float, *, limit: int, tenant_cap: int | None
    ) -> list[Execution]:
        """``claim_next`` where one writer runs every claim (SQLite): as ``_claim_per_tenant``,
        the read and each tenant's claim in one transaction, where the counts cannot go
        stale: with one tenant queued, two statements."""

        def op(conn: sa.Connection) -> list[Mapping[Any, Any]]:
            tenants = tuples(conn, q.TENANTS_TO_SHARE, {"p_now": params["p_now"]})
            rows = [
                row
                for tenant_id, n in _shares(tenants, limit=limit, tenant_cap=tenant_cap).items()
                for row in mappings(
                    conn,
                    self._claim_due_of_tenant,
                    params | {"p_tenant_id": tenant_id, "p_limit": n},
                )
            ]
            return _fill_deadlines(conn, rows, timeout_s)

        return [_execution(row) for row in await self._db.run_write(op)]

    async def renew_leases(
        self, execution_ids: Sequence[str], *, owner: str, lease_until: datetime
    ) -> set[str]:
        if not execution_ids:
            return set()
        params = {"p_ids": list(execution_ids), "p_owner": owner, "p_lease_until": lease_until}
        rows = await self._db.run_write(_all(q.RENEW, params), one_statement=True)
        return {row.id for row in rows}

    async def cancel_requested(self, execution_ids: Sequence[str]) -> set[str]:
        if not execution_ids:
            return set()
        rows = await self._db.run_read(_all(q.CANCEL_REQUESTED, {"p_ids": list(execution_ids)}))
        return {row.id for row in rows}

    async def queued_among(self, execution_ids: Sequence[str]) -> set[str]:
        if not execution_ids:
            return set()
        rows = await self._db.run_read(_all(q.STATUS_AMONG, {"p_ids": list(execution_ids)}))
        return {row.id for row in rows if row.status == ExecutionStatus.queued.value}

    async def record_step(self, step: StepRun) -> None:
        await self._write_one(self._upsert_step, _step_values(step))

    async def list_step_runs(self, tenant_id: str, execution_id: str) -> list[StepRun]:
        params = {"p_tenant_id": tenant_id, "p_id": execution_id}
        rows = await self._db.run_read(_all(q.LIST_STEPS, params))
        return [_step_run(row) for row in rows]

    async def finish_execution(
        self,
        execution_id: str,
        *,
        owner: str,
        status: ExecutionStatus,
        error: str | None,
        finished_at: datetime,
        step: StepRun | None = None,
    ) -> bool:
        params = _finish_params(execution_id, owner, status, error, finished_at)
        if step is None:
            return await self._write_one(q.FINISH, params) == 1
        # The status change guards the step: when the lease is lost, the step is not written.
        write = self._finish_with_step
        op = write.make(params, _step_values(step))
        return await self._db.run_write(op, one_statement=write.one_statement)

    async def finish_and_claim_next(
        self,
        execution_id: str,
        *,
        owner: str,
        status: ExecutionStatus,
        error: str | None,
        finished_at: datetime,
        step: StepRun,
        lease_until: datetime,
        timeout_s: float,
    ) -> tuple[bool, Execution | None]:
        write = self._finish_then_claim
        if write is None:  # writes in order (SQLite): the worker's next claim is cheap
            finished = await self.finish_execution(
                execution_id, owner=owner, status=status, error=error, finished_at=finished_at,
                step=step,
            )  # fmt: skip
            return finished, None
        params = _claim_params(owner, finished_at, lease_until, timeout_s) | _finish_params(
            execution_id, owner, status, error, finished_at
        )
        # One statement: the finish, its step and the claim commit together or not at all
        # (on PostgreSQL in one transaction with this process's other finishes of the same
        # event-loop iteration: ``RowFetch``).
        finish = write.make(params, _step_values(step), order=execution_id)
        finished, claimed = write.outcome(await self._db.run_write(finish, one_statement=True))
        if claimed is None:
            return finished, None
        if _lacks_deadline(claimed):  # rare: a write of its own after the finish
            (claimed,) = await self._db.run_write(
                lambda conn: _fill_deadlines(conn, [claimed], timeout_s), one_statement=True
            )
        return finished, _execution(claimed)

    async def release_execution(self, execution_id: str, *, owner: str) -> bool:
        return await self._write_one(q.RELEASE, {"p_id": execution_id, "p_owner": owner}) == 1

    async def defer_execution(
        self,
        execution_id: str,
        *,
        owner: str,
        next_attempt_at: datetime,
        step: StepRun,
        now: datetime,
        deadline_at: datetime | None = None,
    ) -> bool:
        params = {
            "p_id": execution_id,
            "p_owner": owner,
            "p_next_attempt_at": next_attempt_at,
            "p_now": now,
            "p_deadline_at": deadline_at,
        }
        write = self._defer_with_step
        op = write.make(params, _step_values(step))
        return await self._db.run_write(op, one_statement=write.one_statement)

    async def take_due_retries(self, *, now: datetime, limit: int) -> list[str]:
        if limit <= 0:
            return []
        params = {"p_now": now, "p_limit": limit}
        rows = await self._db.run_write(_all(self._take_due, params), one_statement=True)
        return [row.id for row in rows]

    async def requeue_execution(
        self, tenant_id: str, execution_id: str, *, statuses: Sequence[ExecutionStatus]
    ) -> Execution | None:
        params = {
            "p_tenant_id": tenant_id,
            "p_id": execution_id,
            "p_statuses": [status.value for status in statuses],
        }
        row = await self._db.run_write(_first(q.REQUEUE, params), one_statement=True)
        return None if row is None else _execution(row._mapping)

    async def request_cancel(
        self, tenant_id: str, execution_id: str, *, now: datetime
    ) -> Execution | None:
        params = {"p_tenant_id": tenant_id, "p_id": execution_id, "p_now": now}
        op = _first(q.REQUEST_CANCEL, params)
        row = await self._db.run_write(op, one_statement=True)
        return None if row is None else _execution(row._mapping)

    async def cancel_pending(
        self, tenant_id: str, *, workflow_id: str | None, now: datetime
    ) -> CancelledPending:
        params = {"p_tenant_id": tenant_id, "p_workflow_id": workflow_id, "p_now": now}
        cancels, flag = q.CANCEL_PENDING[workflow_id is not None]

        def op(conn: sa.Connection) -> CancelledPending:
            cancelled = sum(conn.execute(cancel, params).rowcount for cancel in cancels)
            stopping = list(conn.execute(flag, params).scalars())
            return CancelledPending(cancelled=cancelled, stopping=stopping)

        return await self._db.run_write(op)

    async def reap(self, *, now: datetime) -> Reaped:
        params = {"p_now": now}

        timed_out_, cancelled, requeued_ = self._reap

        def op(conn: sa.Connection) -> Reaped:
            timed_out = [i for stmt in timed_out_ for i in conn.execute(stmt, params).scalars()]
            conn.execute(cancelled, params)
            requeued = list(conn.execute(requeued_, params).scalars())
            return Reaped(requeued=requeued, timed_out=timed_out)

        return await self._db.run_write(op)

    async def pending_alerts(self, *, limit: int) -> list[Execution]:
        rows = await self._db.run_read(_all(q.PENDING_ALERTS, {"p_limit": limit}))
        return [_execution(row._mapping) for row in rows]

    async def settle_alerts(
        self, alerts: Sequence[PendingAlert], *, now: datetime, interval: timedelta
    ) -> list[Execution]:
        settle = [
            ({"p_id": a.failed.id, "p_finished_at": a.failed.finished_at}, a.failed, a.alert)
            for a in alerts
        ]

        def op(conn: sa.Connection) -> list[Execution]:
            created = []
            for params, failed, alert in settle:
                # A row lock on PostgreSQL: a second pass settling the same failure waits,
                # then finds it settled and creates nothing.
                if conn.execute(q.SETTLE_ALERT, params).rowcount != 1 or alert is None:
                    continue
                if not interval or self._alert_now(conn, failed, now, interval):
                    conn.execute(q.INSERT_EXECUTION, _execution_values(alert))
                    created.append(alert)
            return created

        return await self._db.run_write(op)

    def _alert_now(
        self, conn: sa.Connection, failed: Execution, now: datetime, interval: timedelta
    ) -> bool:
        """Reopen (or open) the failed workflow's window (``True``: alert now), or hold the
        failure in it."""
        key = {"p_workflow_id": failed.workflow_id}
        reopen = key | {"p_now": now, "p_last_before": now - interval}
        if conn.execute(q.REOPEN_ALERT_WINDOW, reopen).rowcount == 1:
            return True
        first = {
            "workflow_id": failed.workflow_id,
            "tenant_id": failed.tenant_id,
            "last_alert_at": now,
            "held": 0,
            "held_execution_id": None,
        }
        if conn.execute(self._open_alert_window, first).first() is not None:
            return True
        conn.execute(q.HOLD_ALERT, key | {"p_execution_id": failed.id})
        return False

    async def due_alert_digests(self, *, last_before: datetime, limit: int) -> list[AlertWindow]:
        params = {"p_last_before": last_before, "p_limit": limit}
        rows = await self._db.run_read(_all(q.DUE_ALERT_DIGESTS, params))
        return [AlertWindow(**row._mapping) for row in rows]

    async def settle_alert_digests(
        self, digests: Sequence[PendingDigest], *, now: datetime
    ) -> list[Execution]:
        settle = [
            (
                {
                    "p_workflow_id": d.window.workflow_id,
                    "p_held": d.window.held,
                    "p_last_alert_at": d.window.last_alert_at,
                    "p_now": now,
                },
                d.alert,
            )
            for d in digests
        ]

        def op(conn: sa.Connection) -> list[Execution]:
            created = []
            for params, alert in settle:
                # Held another failure since the read: the next pass sends it with them.
                if conn.execute(q.SETTLE_ALERT_DIGEST, params).rowcount == 1 and alert is not None:
                    conn.execute(q.INSERT_EXECUTION, _execution_values(alert))
                    created.append(alert)
            return created

        return await self._db.run_write(op)

    async def queued_ids(self, *, limit: int) -> list[str]:
        rows = await self._db.run_read(_all(q.OLDEST_QUEUED, {"p_limit": limit}))
        return [row.id for row in rows]

    # -- circuit breakers -----------------------------------------------------------------
    async def list_circuits(self, tenant_id: str) -> list[Circuit]:
        rows = await self._db.run_read(_all(q.LIST_CIRCUITS, {"p_tenant_id": tenant_id}))
        return [_circuit(row) for row in rows]

    async def get_circuit(self, tenant_id: str, host: str) -> Circuit | None:
        params = {"p_tenant_id": tenant_id, "p_host": host}
        row = await self._db.run_read(_first(q.GET_CIRCUIT, params))
        return None if row is None else _circuit(row)

    async def list_unclosed_circuits(self) -> list[Circuit]:
        rows = await self._db.run_read(_all(q.LIST_UNCLOSED_CIRCUITS, {}))
        return [_circuit(row) for row in rows]

    async def record_circuit_failure(
        self, tenant_id: str, host: str, *, now: datetime, threshold: int, retry_at: datetime
    ) -> Circuit:
        opens = threshold <= 1
        values = {
            # The row a first failure inserts; an existing row takes ``CIRCUIT_FAILURE_SET``.
            "tenant_id": tenant_id,
            "host": host,
            "state": (CircuitState.open if opens else CircuitState.closed).value,
            "failures": 1,
            "opened_at": now if opens else None,
            "retry_at": retry_at if opens else None,
            "updated_at": now,
            "p_threshold": threshold,
            "p_now": now,
            "p_retry_at": retry_at,
        }
        row = await self._db.run_write(_first(self._circuit_failure, values), one_statement=True)
        assert row is not None  # an upsert with RETURNING always returns its row
        return _circuit(row)

    async def record_circuit_success(
        self, tenant_id: str, host: str, *, now: datetime
    ) -> Circuit | None:
        params = {"p_tenant_id": tenant_id, "p_host": host, "p_now": now}

        def op(conn: sa.Connection) -> _Row | None:
            conn.execute(q.CIRCUIT_SUCCESS, params)
            return conn.execute(q.GET_CIRCUIT, params).first()

        row = await self._db.run_write(op)
        return None if row is None else _circuit(row)

    async def claim_circuit_probe(
        self, tenant_id: str, host: str, *, now: datetime, probe_until: datetime
    ) -> bool:
        params = {
            "p_tenant_id": tenant_id,
            "p_host": host,
            "p_now": now,
            "p_probe_until": probe_until,
        }
        return await self._write_one(q.CLAIM_PROBE, params) == 1


def _finish_params(
    execution_id: str,
    owner: str,
    status: ExecutionStatus,
    error: str | None,
    finished_at: datetime,
) -> dict[str, Any]:
    return {
        "p_id": execution_id,
        "p_owner": owner,
        "p_status": status.value,
        "p_error": error,
        "p_finished_at": finished_at,
        "p_alert": True if status in ALERTING_STATUSES else None,
    }


# -- claiming -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Slot:
    """A slot of a tenant's share, for ``fairness.share`` (ties go to the older head)."""

    id: str
    tenant_id: str
    created_at: datetime


def _claim_params(
    owner: str, now: datetime, lease_until: datetime, timeout_s: float
) -> dict[str, Any]:
    return {
        "p_owner": owner,
        "p_now": now,
        "p_lease_until": lease_until,
        "p_deadline": now + timedelta(seconds=timeout_s),
    }


def _shares(rows: Sequence[Any], *, limit: int, tenant_cap: int | None) -> dict[str, int]:
    """How many of ``limit`` slots each tenant gets, from ``TENANTS_TO_SHARE``'s rows (tenant,
    cap override, running count, oldest due): ``fairness.share`` over the tenants with room
    under their cap and due work, the fewest running first, ties to the older head."""
    running = {tenant_id: int(count) for tenant_id, _, count, _ in rows}
    heads: dict[str, list[_Slot]] = {}
    for tenant_id, override, count, oldest in rows:
        cap = fairness.cap_of(override, tenant_cap)
        room = fairness.room(int(count), cap, limit)
        if oldest is not None and room > 0:
            heads[tenant_id] = [_Slot(tenant_id, tenant_id, oldest)] * room
    shares: dict[str, int] = {}
    for slot in fairness.share(heads, running, limit):
        shares[slot.tenant_id] = shares.get(slot.tenant_id, 0) + 1
    return shares


def _lacks_deadline(values: Mapping[Any, Any]) -> bool:
    """A claimed row that started before (a resumed execution) but has no deadline yet."""
    return values["deadline_at"] is None and values["started_at"] is not None


def _fill_deadlines(
    conn: sa.Connection, rows: Sequence[Mapping[Any, Any]], timeout_s: float
) -> list[Mapping[Any, Any]]:
    """Claimed rows; a row with a ``started_at`` but no deadline gets one (in the op)."""
    claimed: list[Mapping[Any, Any]] = []
    for values in rows:
        if _lacks_deadline(values):
            deadline = values["started_at"] + timedelta(seconds=timeout_s)
            rowcount(conn, q.FILL_DEADLINE, {"p_id": values["id"], "p_deadline": deadline})
            values = {**values, "deadline_at": deadline}
        claimed.append(values)
    return claimed


# -- rows <-> domain models -----------------------------------------------------------------
# ``dict(model)`` is a shallow field dict: nested models stay models, and the engine's JSON
# serializer (pydantic-core) writes them without a ``model_dump`` pass first.
def _tenant_values(tenant: Tenant) -> dict[str, Any]:
    return {"id": tenant.id, "name": tenant.name, "created_at": tenant.created_at} | dict(
        tenant.limits
    )


def _user_values(user: User) -> dict[str, Any]:
    return dict(user) | {"email": user.email.lower(), "role": user.role.value}


def _user(row: _Row) -> User:
    return User.model_construct(**{**row._mapping, "role": Role(row.role)})


def _credential(row: _Row) -> Credential:
    return Credential.model_construct(**{**row._mapping, "type": CredentialType(row.type)})


def _version_values(workflow: Workflow) -> dict[str, Any]:
    return {
        "workflow_id": workflow.id,
        "version": workflow.version,
        "tenant_id": workflow.tenant_id,
        "trigger": workflow.trigger,
        "steps": workflow.steps,
        "created_at": workflow.updated_at,
    }


def _workflow(row: _Row) -> Workflow:
    # One validation in pydantic-core: 5.6 us here, against 9.9 for model_construct (pure
    # Python) over a trigger and steps validated one by one. GET /api/workflows builds one
    # per workflow of the tenant.
    return Workflow.model_validate(
        {
            "id": row.id,
            "tenant_id": row.tenant_id,
            "name": row.name,
            "active": bool(row.active),
            "version": row.version,
            "trigger": row.trigger,
            "steps": row.steps,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "error_workflow_id": row.error_workflow_id,
        }
    )


def _execution_values(execution: Execution) -> dict[str, Any]:
    # A model's __dict__ holds exactly its fields: copying it costs ~0.5 us where dict(model),
    # which iterates the model, cost ~8 (once per webhook and per step run).
    return {**execution.__dict__, "status": execution.status.value}


def _execution(row: Mapping[Any, Any]) -> Execution:
    return Execution.model_construct(
        id=row["id"],
        tenant_id=row["tenant_id"],
        workflow_id=row["workflow_id"],
        workflow_version=row["workflow_version"],
        status=ExecutionStatus(row["status"]),
        # Written by this store from a TriggerData: rebuilt without validating it again.
        trigger=TriggerData.model_construct(**row["trigger"]),
        error=row["error"],
        attempt=row["attempt"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        cancel_requested=bool(row["cancel_requested"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        deadline_at=row["deadline_at"],
        dedup_key=row["dedup_key"],
        next_attempt_at=row["next_attempt_at"],
        replay_of=row["replay_of"],
        trace_context=row["trace_context"],
    )


def _step_values(step: StepRun) -> dict[str, Any]:
    return {**step.__dict__, "status": step.status.value}


def _step_run(row: _Row) -> StepRun:
    return StepRun.model_construct(**{**row._mapping, "status": StepStatus(row.status)})


def _circuit(row: _Row) -> Circuit:
    return Circuit.model_construct(**{**row._mapping, "state": CircuitState(row.state)})
