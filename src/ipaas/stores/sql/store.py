"""The SQL Store: one SQLAlchemy Core implementation for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from ipaas.credentials.models import Credential, CredentialType
from ipaas.executions.models import Execution, ExecutionStatus, StepRun, StepStatus, TriggerData
from ipaas.stores.base import DuplicateError, ExecutionPage, Reaped
from ipaas.stores.sql import tables as t
from ipaas.stores.sql.engine import Database, create_database
from ipaas.tenants.models import ApiToken, Tenant, User
from ipaas.workflows.models import Step, Trigger, Workflow, WorkflowDefinition

_EX = t.execution
_QUEUED = ExecutionStatus.queued.value
_RUNNING = ExecutionStatus.running.value
_CANCELLED = ExecutionStatus.cancelled.value
_CANCELLED_BY_USER = "cancelled by user"
_TIMED_OUT = "execution timed out"
_STEP_KEY = ("execution_id", "step_id", "attempt")

# Statements are built once, at import, with named parameters bound at execution: building
# and cache-keying a Core statement costs more than running it on SQLite, and these run for
# every execution. Parameter names start with ``p_`` because SQLAlchemy reserves column
# names for the SET clause.


def _p(name: str) -> sa.BindParameter[Any]:
    return sa.bindparam(name)


def _p_at(name: str) -> sa.BindParameter[datetime]:
    # Typed, so CASE/COALESCE branches get the UTC conversion too.
    return sa.bindparam(name, type_=t.UtcDateTime())


def _scoped(table: sa.Table) -> sa.ColumnElement[bool]:
    """The tenant filter, built here only; every scoped statement binds ``p_tenant_id``."""
    return table.c.tenant_id == _p("p_tenant_id")


_LEASE_EXPIRED = sa.and_(
    _EX.c.status == _RUNNING,
    sa.or_(_EX.c.lease_expires_at.is_(None), _EX.c.lease_expires_at <= _p_at("p_now")),
)
_CLAIM = {
    "status": _RUNNING,
    "lease_owner": _p("p_owner"),
    "lease_expires_at": _p_at("p_lease_until"),
    "attempt": _EX.c.attempt + 1,
    "started_at": sa.func.coalesce(_EX.c.started_at, _p_at("p_now")),
    # A first claim fixes the deadline (``p_deadline`` = now + timeout); later claims keep
    # it. The odd row with a preset ``started_at`` but no deadline is completed by
    # ``_fill_deadlines``, which keeps date arithmetic (it differs per dialect) out of SQL.
    "deadline_at": sa.case(
        (sa.and_(_EX.c.deadline_at.is_(None), _EX.c.started_at.is_(None)), _p_at("p_deadline")),
        else_=_EX.c.deadline_at,
    ),
}
_ENDED = {"finished_at": _p_at("p_now"), "lease_owner": None, "lease_expires_at": None}
_HELD = sa.and_(
    _EX.c.id == _p("p_id"), _EX.c.status == _RUNNING, _EX.c.lease_owner == _p("p_owner")
)

_GET_USER = sa.select(t.app_user).where(t.app_user.c.email == _p("p_email"))
_GET_TOKEN = sa.select(t.api_token).where(t.api_token.c.token_hash == _p("p_hash"))
_LIST_TOKENS = (
    sa.select(t.api_token)
    .where(_scoped(t.api_token), t.api_token.c.revoked_at.is_(None))
    .order_by(t.api_token.c.created_at.desc(), t.api_token.c.id.desc())
)
_REVOKE_TOKEN = (
    sa.update(t.api_token)
    .where(_scoped(t.api_token), t.api_token.c.id == _p("p_id"), t.api_token.c.revoked_at.is_(None))
    .values(revoked_at=_p_at("p_revoked_at"))
)
_GET_CREDENTIALS = sa.select(t.credential).where(
    _scoped(t.credential), t.credential.c.id.in_(sa.bindparam("p_ids", expanding=True))
)
_LIST_CREDENTIALS = (
    sa.select(t.credential)
    .where(_scoped(t.credential))
    .order_by(t.credential.c.created_at.desc(), t.credential.c.id.desc())
)
_DELETE_CREDENTIAL = sa.delete(t.credential).where(
    _scoped(t.credential), t.credential.c.id == _p("p_id")
)
_GET_WORKFLOW = sa.select(t.workflow).where(_scoped(t.workflow), t.workflow.c.id == _p("p_id"))
_GET_WORKFLOW_FOR_INTAKE = sa.select(t.workflow).where(t.workflow.c.id == _p("p_id"))
_LIST_WORKFLOWS = (
    sa.select(t.workflow)
    .where(_scoped(t.workflow))
    .order_by(t.workflow.c.created_at.desc(), t.workflow.c.id.desc())
)
_UPDATE_WORKFLOW = (
    sa.update(t.workflow)
    .where(_scoped(t.workflow), t.workflow.c.id == _p("p_id"))
    .values(
        name=_p("p_name"),
        active=_p("p_active"),
        version=_p("p_version"),
        trigger=sa.bindparam("p_trigger", type_=sa.JSON()),
        steps=sa.bindparam("p_steps", type_=sa.JSON()),
        updated_at=_p_at("p_updated_at"),
    )
)
_DELETE_WORKFLOW = sa.delete(t.workflow).where(_scoped(t.workflow), t.workflow.c.id == _p("p_id"))
_GET_VERSION = sa.select(t.workflow_version.c.trigger, t.workflow_version.c.steps).where(
    _scoped(t.workflow_version),
    t.workflow_version.c.workflow_id == _p("p_id"),
    t.workflow_version.c.version == _p("p_version"),
)
_GET_EXECUTION = sa.select(_EX).where(_scoped(_EX), _EX.c.id == _p("p_id"))
_COUNT_QUEUED = sa.select(sa.func.count()).select_from(_EX).where(_EX.c.status == _QUEUED)
_COUNT_QUEUED_OF_TENANT = _COUNT_QUEUED.where(_scoped(_EX))
_CLAIM_ONE = (
    sa.update(_EX)
    .where(_EX.c.id == _p("p_id"), _EX.c.status == _QUEUED)
    .values(_CLAIM)
    .returning(*_EX.c)
)
_OLDEST_QUEUED = (
    sa.select(_EX.c.id)
    .where(_EX.c.status == _QUEUED)
    .order_by(_EX.c.created_at, _EX.c.id)
    .limit(sa.bindparam("p_limit", type_=sa.Integer()))
)
_RENEW = (
    sa.update(_EX)
    .where(
        _EX.c.id.in_(sa.bindparam("p_ids", expanding=True)),
        _EX.c.status == _RUNNING,
        _EX.c.lease_owner == _p("p_owner"),
    )
    .values(lease_expires_at=_p_at("p_lease_until"))
    .returning(_EX.c.id)
)
_CANCEL_REQUESTED = sa.select(_EX.c.id).where(
    _EX.c.id.in_(sa.bindparam("p_ids", expanding=True)),
    _EX.c.status == _RUNNING,
    _EX.c.cancel_requested.is_(True),
)
_LIST_STEPS = (
    sa.select(t.step_run)
    .where(_scoped(t.step_run), t.step_run.c.execution_id == _p("p_id"))
    .order_by(t.step_run.c.position, t.step_run.c.attempt)
)
_FINISH = (
    sa.update(_EX)
    .where(_HELD)
    .values(
        status=_p("p_status"),
        error=_p("p_error"),
        finished_at=_p_at("p_finished_at"),
        lease_owner=None,
        lease_expires_at=None,
    )
)
_RELEASE = (
    sa.update(_EX).where(_HELD).values(status=_QUEUED, lease_owner=None, lease_expires_at=None)
)
_IS_QUEUED = _EX.c.status == _QUEUED
# One statement for all three cases; SET expressions see the row as it was before.
_REQUEST_CANCEL = (
    sa.update(_EX)
    .where(_scoped(_EX), _EX.c.id == _p("p_id"))
    .values(
        status=sa.case((_IS_QUEUED, _CANCELLED), else_=_EX.c.status),
        finished_at=sa.case((_IS_QUEUED, _p_at("p_now")), else_=_EX.c.finished_at),
        error=sa.case((_IS_QUEUED, _CANCELLED_BY_USER), else_=_EX.c.error),
        cancel_requested=sa.case(
            (_EX.c.status == _RUNNING, sa.true()), else_=_EX.c.cancel_requested
        ),
    )
    .returning(*_EX.c)
)
# The reaper's three passes, in the order of the rules' precedence: the deadline first,
# then a requested cancel, and only then a plain re-queue.
_REAP_TIMED_OUT = (
    sa.update(_EX)
    .where(_EX.c.deadline_at <= _p_at("p_now"), sa.or_(_IS_QUEUED, _LEASE_EXPIRED))
    .values(status=ExecutionStatus.timed_out.value, error=_TIMED_OUT, **_ENDED)
    .returning(_EX.c.id)
)
_REAP_CANCELLED = (
    sa.update(_EX)
    .where(_LEASE_EXPIRED, _EX.c.cancel_requested.is_(True))
    .values(status=_CANCELLED, error=_CANCELLED_BY_USER, **_ENDED)
)
_REAP_REQUEUED = (
    sa.update(_EX)
    .where(_LEASE_EXPIRED)
    .values(status=_QUEUED, lease_owner=None, lease_expires_at=None)
    .returning(_EX.c.id)
)


class SqlStore:
    """The ``Store`` on SQLite (``sqlite+aiosqlite``) or PostgreSQL (``postgresql+asyncpg``)."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._database: Database | None = None

    @property
    def _db(self) -> Database:
        if self._database is None:
            msg = "SqlStore.startup() has not been awaited"
            raise RuntimeError(msg)
        return self._database

    async def startup(self) -> None:
        if self._database is not None:
            return
        db = create_database(self._url)
        try:
            # Connect now: a wrong URL or an unreachable server fails start-up, not a request.
            async with db.read() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except BaseException:
            await db.dispose()
            raise
        self._database = db
        # The statements with a dialect-specific part, built once per database.
        self._upsert_step = db.upsert(t.step_run, _STEP_KEY)
        self._upsert_version = db.upsert(t.workflow_version, ("workflow_id", "version"))
        self._claim_next = (
            sa.update(_EX)
            # ``status`` again: on PostgreSQL the UPDATE re-checks it under the row lock.
            .where(_EX.c.id.in_(db.lock_claimable(_OLDEST_QUEUED)), _IS_QUEUED)
            .values(_CLAIM)
            .returning(*_EX.c)
        )

    async def shutdown(self) -> None:
        if self._database is not None:
            database, self._database = self._database, None
            await database.dispose()

    async def ping(self) -> bool:
        try:
            async with self._db.read() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except (SQLAlchemyError, OSError):
            return False
        return True

    async def _first(self, query: sa.Executable, **params: Any) -> sa.Row[Any] | None:
        async with self._db.read() as conn:
            return (await conn.execute(query, params)).first()

    async def _all(self, query: sa.Executable, **params: Any) -> Sequence[sa.Row[Any]]:
        async with self._db.read() as conn:
            return (await conn.execute(query, params)).all()

    async def _write(self, stmt: sa.Executable, params: dict[str, Any]) -> int:
        """Run one write statement; the number of rows it matched."""
        async with self._db.write_one() as conn:
            return (await conn.execute(stmt, params)).rowcount

    # -- tenants, users, tokens -----------------------------------------------------------
    async def create_tenant(self, tenant: Tenant, user: User, token: ApiToken) -> None:
        try:
            async with self._db.write() as conn:
                await conn.execute(sa.insert(t.tenant), dict(tenant))
                await conn.execute(
                    sa.insert(t.app_user), dict(user) | {"email": user.email.lower()}
                )
                await conn.execute(sa.insert(t.api_token), dict(token))
        except IntegrityError as exc:
            raise DuplicateError("email") from exc

    async def get_user_by_email(self, email: str) -> User | None:
        row = await self._first(_GET_USER, p_email=email.lower())
        return None if row is None else User.model_construct(**row._mapping)

    async def get_token_by_hash(self, token_hash: str) -> ApiToken | None:
        row = await self._first(_GET_TOKEN, p_hash=token_hash)
        return None if row is None else ApiToken.model_construct(**row._mapping)

    async def create_token(self, token: ApiToken) -> None:
        await self._write(sa.insert(t.api_token), dict(token))

    async def list_tokens(self, tenant_id: str) -> list[ApiToken]:
        rows = await self._all(_LIST_TOKENS, p_tenant_id=tenant_id)
        return [ApiToken.model_construct(**row._mapping) for row in rows]

    async def revoke_token(self, tenant_id: str, token_id: str, revoked_at: datetime) -> bool:
        params = {"p_tenant_id": tenant_id, "p_id": token_id, "p_revoked_at": revoked_at}
        return await self._write(_REVOKE_TOKEN, params) == 1

    # -- credentials ----------------------------------------------------------------------
    async def create_credential(self, credential: Credential) -> None:
        values = dict(credential) | {"type": credential.type.value}
        await self._write(sa.insert(t.credential), values)

    async def get_credential(self, tenant_id: str, credential_id: str) -> Credential | None:
        found = await self.get_credentials(tenant_id, [credential_id])
        return found.get(credential_id)

    async def get_credentials(
        self, tenant_id: str, credential_ids: Sequence[str]
    ) -> dict[str, Credential]:
        if not credential_ids:
            return {}
        rows = await self._all(_GET_CREDENTIALS, p_tenant_id=tenant_id, p_ids=list(credential_ids))
        return {row.id: _credential(row) for row in rows}

    async def list_credentials(self, tenant_id: str) -> list[Credential]:
        return [
            _credential(row) for row in await self._all(_LIST_CREDENTIALS, p_tenant_id=tenant_id)
        ]

    async def delete_credential(self, tenant_id: str, credential_id: str) -> bool:
        params = {"p_tenant_id": tenant_id, "p_id": credential_id}
        return await self._write(_DELETE_CREDENTIAL, params) == 1

    # -- workflows ------------------------------------------------------------------------
    async def create_workflow(self, workflow: Workflow) -> None:
        async with self._db.write() as conn:
            await conn.execute(sa.insert(t.workflow), _workflow_values(workflow))
            await conn.execute(sa.insert(t.workflow_version), _version_values(workflow))

    async def get_workflow(self, tenant_id: str, workflow_id: str) -> Workflow | None:
        row = await self._first(_GET_WORKFLOW, p_tenant_id=tenant_id, p_id=workflow_id)
        return None if row is None else _workflow(row)

    async def get_workflow_for_intake(self, workflow_id: str) -> Workflow | None:
        row = await self._first(_GET_WORKFLOW_FOR_INTAKE, p_id=workflow_id)
        return None if row is None else _workflow(row)

    async def list_workflows(self, tenant_id: str) -> list[Workflow]:
        return [_workflow(row) for row in await self._all(_LIST_WORKFLOWS, p_tenant_id=tenant_id)]

    async def update_workflow(self, workflow: Workflow, *, new_version: bool) -> bool:
        params = {
            "p_tenant_id": workflow.tenant_id,
            "p_id": workflow.id,
            "p_name": workflow.name,
            "p_active": workflow.active,
            "p_version": workflow.version,
            "p_trigger": workflow.trigger,
            "p_steps": workflow.steps,
            "p_updated_at": workflow.updated_at,
        }
        async with self._db.write() as conn:
            if (await conn.execute(_UPDATE_WORKFLOW, params)).rowcount != 1:
                return False
            if new_version:
                # An upsert: saving the same version twice must not fail the update.
                await conn.execute(self._upsert_version, _version_values(workflow))
        return True

    async def delete_workflow(self, tenant_id: str, workflow_id: str) -> bool:
        params = {"p_tenant_id": tenant_id, "p_id": workflow_id}
        return await self._write(_DELETE_WORKFLOW, params) == 1

    async def get_workflow_version(
        self, tenant_id: str, workflow_id: str, version: int
    ) -> WorkflowDefinition | None:
        row = await self._first(
            _GET_VERSION, p_tenant_id=tenant_id, p_id=workflow_id, p_version=version
        )
        if row is None:
            return None
        return WorkflowDefinition.model_construct(
            trigger=Trigger.model_validate(row.trigger),
            steps=[Step.model_validate(step) for step in row.steps],
        )

    # -- executions -----------------------------------------------------------------------
    async def create_execution(self, execution: Execution) -> None:
        await self._write(sa.insert(_EX), _execution_values(execution))

    async def get_execution(self, tenant_id: str, execution_id: str) -> Execution | None:
        row = await self._first(_GET_EXECUTION, p_tenant_id=tenant_id, p_id=execution_id)
        return None if row is None else _execution(row)

    async def list_executions(
        self,
        tenant_id: str,
        *,
        workflow_id: str | None = None,
        status: ExecutionStatus | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> ExecutionPage:
        if limit <= 0:
            return ExecutionPage([], None)
        query = sa.select(_EX).where(_scoped(_EX))
        params: dict[str, Any] = {"p_tenant_id": tenant_id, "p_limit": limit + 1}
        if workflow_id is not None:
            query = query.where(_EX.c.workflow_id == _p("p_workflow_id"))
            params["p_workflow_id"] = workflow_id
        if status is not None:
            query = query.where(_EX.c.status == _p("p_status"))
            params["p_status"] = status.value
        if before is not None:
            # A row-value comparison, so the (tenant_id, created_at, id) index bounds the scan.
            cursor = sa.tuple_(_p_at("p_before_at"), _p("p_before_id"))
            query = query.where(sa.tuple_(_EX.c.created_at, _EX.c.id) < cursor)
            params["p_before_at"], params["p_before_id"] = before
        # One extra row tells whether another page follows, without a COUNT.
        query = query.order_by(_EX.c.created_at.desc(), _EX.c.id.desc()).limit(
            sa.bindparam("p_limit", type_=sa.Integer())
        )
        rows = await self._all(query, **params)
        items = [_execution(row) for row in rows[:limit]]
        more = len(rows) > limit
        return ExecutionPage(items, (items[-1].created_at, items[-1].id) if more else None)

    async def count_queued(self, tenant_id: str | None = None) -> int:
        if tenant_id is None:
            row = await self._first(_COUNT_QUEUED)
        else:
            row = await self._first(_COUNT_QUEUED_OF_TENANT, p_tenant_id=tenant_id)
        assert row is not None  # an aggregate always returns a row
        return int(row[0])

    async def claim_execution(
        self,
        execution_id: str,
        *,
        owner: str,
        now: datetime,
        lease_until: datetime,
        timeout_s: float,
    ) -> Execution | None:
        params = _claim_params(owner, now, lease_until, timeout_s) | {"p_id": execution_id}
        async with self._db.write() as conn:
            rows = (await conn.execute(_CLAIM_ONE, params)).all()
            claimed = await _fill_deadlines(conn, rows, timeout_s)
        return claimed[0] if claimed else None

    async def claim_next(
        self, *, owner: str, now: datetime, lease_until: datetime, timeout_s: float, limit: int
    ) -> list[Execution]:
        if limit <= 0:
            return []
        params = _claim_params(owner, now, lease_until, timeout_s) | {"p_limit": limit}
        async with self._db.write() as conn:
            rows = (await conn.execute(self._claim_next, params)).all()
            claimed = await _fill_deadlines(conn, rows, timeout_s)
        # RETURNING has no defined order; callers expect the oldest first.
        return sorted(claimed, key=lambda ex: (ex.created_at, ex.id))

    async def renew_leases(
        self, execution_ids: Sequence[str], *, owner: str, lease_until: datetime
    ) -> set[str]:
        if not execution_ids:
            return set()
        params = {"p_ids": list(execution_ids), "p_owner": owner, "p_lease_until": lease_until}
        async with self._db.write_one() as conn:
            return set((await conn.execute(_RENEW, params)).scalars())

    async def cancel_requested(self, execution_ids: Sequence[str]) -> set[str]:
        if not execution_ids:
            return set()
        return {row.id for row in await self._all(_CANCEL_REQUESTED, p_ids=list(execution_ids))}

    async def record_step(self, step: StepRun) -> None:
        await self._write(self._upsert_step, _step_values(step))

    async def list_step_runs(self, tenant_id: str, execution_id: str) -> list[StepRun]:
        rows = await self._all(_LIST_STEPS, p_tenant_id=tenant_id, p_id=execution_id)
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
        params = {
            "p_id": execution_id,
            "p_owner": owner,
            "p_status": status.value,
            "p_error": error,
            "p_finished_at": finished_at,
        }
        # One statement without a step: no transaction needed around it.
        async with self._db.write() if step is not None else self._db.write_one() as conn:
            # The status change goes first: when the lease is lost, the step is not written.
            if (await conn.execute(_FINISH, params)).rowcount != 1:
                return False
            if step is not None:
                await conn.execute(self._upsert_step, _step_values(step))
        return True

    async def release_execution(self, execution_id: str, *, owner: str) -> bool:
        return await self._write(_RELEASE, {"p_id": execution_id, "p_owner": owner}) == 1

    async def request_cancel(
        self, tenant_id: str, execution_id: str, *, now: datetime
    ) -> Execution | None:
        params = {"p_tenant_id": tenant_id, "p_id": execution_id, "p_now": now}
        async with self._db.write_one() as conn:
            row = (await conn.execute(_REQUEST_CANCEL, params)).first()
        return None if row is None else _execution(row)

    async def reap(self, *, now: datetime) -> Reaped:
        params = {"p_now": now}
        async with self._db.write() as conn:
            timed_out = list((await conn.execute(_REAP_TIMED_OUT, params)).scalars())
            await conn.execute(_REAP_CANCELLED, params)
            requeued = list((await conn.execute(_REAP_REQUEUED, params)).scalars())
        return Reaped(requeued=requeued, timed_out=timed_out)

    async def queued_ids(self, *, limit: int) -> list[str]:
        return [row.id for row in await self._all(_OLDEST_QUEUED, p_limit=limit)]


# -- claiming -------------------------------------------------------------------------------
def _claim_params(
    owner: str, now: datetime, lease_until: datetime, timeout_s: float
) -> dict[str, Any]:
    return {
        "p_owner": owner,
        "p_now": now,
        "p_lease_until": lease_until,
        "p_deadline": now + timedelta(seconds=timeout_s),
    }


async def _fill_deadlines(
    conn: AsyncConnection, rows: Sequence[sa.Row[Any]], timeout_s: float
) -> list[Execution]:
    claimed = [_execution(row) for row in rows]
    for ex in claimed:
        if ex.deadline_at is None and ex.started_at is not None:
            ex.deadline_at = ex.started_at + timedelta(seconds=timeout_s)
            await conn.execute(
                sa.update(_EX).where(_EX.c.id == ex.id).values(deadline_at=ex.deadline_at)
            )
    return claimed


# -- rows <-> domain models -----------------------------------------------------------------
# ``dict(model)`` is a shallow field dict: nested models stay models, and the engine's JSON
# serializer (pydantic-core) writes them without a ``model_dump`` pass first.
def _credential(row: sa.Row[Any]) -> Credential:
    return Credential.model_construct(**{**row._mapping, "type": CredentialType(row.type)})


def _workflow_values(workflow: Workflow) -> dict[str, Any]:
    return dict(workflow)


def _version_values(workflow: Workflow) -> dict[str, Any]:
    return {
        "workflow_id": workflow.id,
        "version": workflow.version,
        "tenant_id": workflow.tenant_id,
        "trigger": workflow.trigger,
        "steps": workflow.steps,
        "created_at": workflow.updated_at,
    }


def _workflow(row: sa.Row[Any]) -> Workflow:
    return Workflow.model_construct(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        active=bool(row.active),
        version=row.version,
        trigger=Trigger.model_validate(row.trigger),
        steps=[Step.model_validate(step) for step in row.steps],
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _execution_values(execution: Execution) -> dict[str, Any]:
    return dict(execution) | {"status": execution.status.value}


def _execution(row: sa.Row[Any]) -> Execution:
    return Execution.model_construct(
        id=row.id,
        tenant_id=row.tenant_id,
        workflow_id=row.workflow_id,
        workflow_version=row.workflow_version,
        status=ExecutionStatus(row.status),
        trigger=TriggerData.model_validate(row.trigger),
        error=row.error,
        attempt=row.attempt,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        cancel_requested=bool(row.cancel_requested),
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        deadline_at=row.deadline_at,
    )


def _step_values(step: StepRun) -> dict[str, Any]:
    return dict(step) | {"status": step.status.value}


def _step_run(row: sa.Row[Any]) -> StepRun:
    return StepRun.model_construct(**{**row._mapping, "status": StepStatus(row.status)})
