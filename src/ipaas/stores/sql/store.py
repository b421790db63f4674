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
_CANCELLED_BY_USER = "cancelled by user"
_TIMED_OUT = "execution timed out"


def _scoped(table: sa.Table, tenant_id: str) -> sa.ColumnElement[bool]:
    """The tenant filter: every tenant-scoped query goes through here."""
    return table.c.tenant_id == tenant_id


def _utc(value: datetime) -> sa.BindParameter[datetime]:
    # A typed bind for values inside CASE/COALESCE, where no column lends its type.
    return sa.literal(value, t.UtcDateTime())


def _lease_expired(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        _EX.c.status == _RUNNING,
        sa.or_(_EX.c.lease_expires_at.is_(None), _EX.c.lease_expires_at <= now),
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
        if self._database is None:
            self._database = create_database(self._url)

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

    # -- tenants, users, tokens -----------------------------------------------------------
    async def create_tenant(self, tenant: Tenant, user: User, token: ApiToken) -> None:
        try:
            async with self._db.write() as conn:
                await conn.execute(sa.insert(t.tenant).values(tenant.model_dump()))
                await conn.execute(
                    sa.insert(t.app_user).values(user.model_dump() | {"email": user.email.lower()})
                )
                await conn.execute(sa.insert(t.api_token).values(token.model_dump()))
        except IntegrityError as exc:
            raise DuplicateError("email") from exc

    async def get_user_by_email(self, email: str) -> User | None:
        query = sa.select(t.app_user).where(t.app_user.c.email == email.lower())
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else User.model_construct(**row._mapping)

    async def get_token_by_hash(self, token_hash: str) -> ApiToken | None:
        query = sa.select(t.api_token).where(t.api_token.c.token_hash == token_hash)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else ApiToken.model_construct(**row._mapping)

    async def create_token(self, token: ApiToken) -> None:
        async with self._db.write() as conn:
            await conn.execute(sa.insert(t.api_token).values(token.model_dump()))

    async def list_tokens(self, tenant_id: str) -> list[ApiToken]:
        tok = t.api_token
        query = (
            sa.select(tok)
            .where(_scoped(tok, tenant_id), tok.c.revoked_at.is_(None))
            .order_by(tok.c.created_at.desc(), tok.c.id.desc())
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [ApiToken.model_construct(**row._mapping) for row in rows]

    async def revoke_token(self, tenant_id: str, token_id: str, revoked_at: datetime) -> bool:
        tok = t.api_token
        stmt = (
            sa.update(tok)
            .where(_scoped(tok, tenant_id), tok.c.id == token_id, tok.c.revoked_at.is_(None))
            .values(revoked_at=revoked_at)
        )
        async with self._db.write() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    # -- credentials ----------------------------------------------------------------------
    async def create_credential(self, credential: Credential) -> None:
        values = credential.model_dump() | {"type": credential.type.value}
        async with self._db.write() as conn:
            await conn.execute(sa.insert(t.credential).values(values))

    async def get_credential(self, tenant_id: str, credential_id: str) -> Credential | None:
        found = await self.get_credentials(tenant_id, [credential_id])
        return found.get(credential_id)

    async def get_credentials(
        self, tenant_id: str, credential_ids: Sequence[str]
    ) -> dict[str, Credential]:
        if not credential_ids:
            return {}
        cred = t.credential
        query = sa.select(cred).where(_scoped(cred, tenant_id), cred.c.id.in_(credential_ids))
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return {row.id: _credential(row) for row in rows}

    async def list_credentials(self, tenant_id: str) -> list[Credential]:
        cred = t.credential
        query = (
            sa.select(cred)
            .where(_scoped(cred, tenant_id))
            .order_by(cred.c.created_at.desc(), cred.c.id.desc())
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_credential(row) for row in rows]

    async def delete_credential(self, tenant_id: str, credential_id: str) -> bool:
        cred = t.credential
        stmt = sa.delete(cred).where(_scoped(cred, tenant_id), cred.c.id == credential_id)
        async with self._db.write() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    # -- workflows ------------------------------------------------------------------------
    async def create_workflow(self, workflow: Workflow) -> None:
        async with self._db.write() as conn:
            await conn.execute(sa.insert(t.workflow).values(_workflow_values(workflow)))
            await conn.execute(sa.insert(t.workflow_version).values(_version_values(workflow)))

    async def get_workflow(self, tenant_id: str, workflow_id: str) -> Workflow | None:
        wf = t.workflow
        return await self._one_workflow(
            sa.select(wf).where(_scoped(wf, tenant_id), wf.c.id == workflow_id)
        )

    async def get_workflow_for_intake(self, workflow_id: str) -> Workflow | None:
        return await self._one_workflow(sa.select(t.workflow).where(t.workflow.c.id == workflow_id))

    async def _one_workflow(self, query: sa.Select[Any]) -> Workflow | None:
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _workflow(row)

    async def list_workflows(self, tenant_id: str) -> list[Workflow]:
        wf = t.workflow
        query = (
            sa.select(wf)
            .where(_scoped(wf, tenant_id))
            .order_by(wf.c.created_at.desc(), wf.c.id.desc())
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_workflow(row) for row in rows]

    async def update_workflow(self, workflow: Workflow, *, new_version: bool) -> bool:
        wf = t.workflow
        values = _workflow_values(workflow)
        for immutable in ("id", "tenant_id", "created_at"):
            del values[immutable]
        stmt = (
            sa.update(wf)
            .where(_scoped(wf, workflow.tenant_id), wf.c.id == workflow.id)
            .values(values)
        )
        async with self._db.write() as conn:
            if (await conn.execute(stmt)).rowcount != 1:
                return False
            if new_version:
                # An upsert: saving the same version twice must not fail the update.
                await conn.execute(
                    self._db.upsert(
                        t.workflow_version,
                        _version_values(workflow),
                        key=("workflow_id", "version"),
                    )
                )
        return True

    async def delete_workflow(self, tenant_id: str, workflow_id: str) -> bool:
        wf = t.workflow
        stmt = sa.delete(wf).where(_scoped(wf, tenant_id), wf.c.id == workflow_id)
        async with self._db.write() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    async def get_workflow_version(
        self, tenant_id: str, workflow_id: str, version: int
    ) -> WorkflowDefinition | None:
        ver = t.workflow_version
        query = sa.select(ver.c.trigger, ver.c.steps).where(
            _scoped(ver, tenant_id), ver.c.workflow_id == workflow_id, ver.c.version == version
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return WorkflowDefinition.model_construct(
            trigger=Trigger.model_validate(row.trigger),
            steps=[Step.model_validate(step) for step in row.steps],
        )

    # -- executions -----------------------------------------------------------------------
    async def create_execution(self, execution: Execution) -> None:
        async with self._db.write() as conn:
            await conn.execute(sa.insert(_EX).values(_execution_values(execution)))

    async def get_execution(self, tenant_id: str, execution_id: str) -> Execution | None:
        query = sa.select(_EX).where(_scoped(_EX, tenant_id), _EX.c.id == execution_id)
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
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
        query = sa.select(_EX).where(_scoped(_EX, tenant_id))
        if workflow_id is not None:
            query = query.where(_EX.c.workflow_id == workflow_id)
        if status is not None:
            query = query.where(_EX.c.status == status.value)
        if before is not None:
            # A row-value comparison, so the (tenant_id, created_at, id) index bounds the scan.
            cursor = sa.tuple_(_utc(before[0]), sa.literal(before[1], sa.String()))
            query = query.where(sa.tuple_(_EX.c.created_at, _EX.c.id) < cursor)
        # One extra row tells whether another page follows without a COUNT.
        query = query.order_by(_EX.c.created_at.desc(), _EX.c.id.desc()).limit(limit + 1)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        items = [_execution(row) for row in rows[:limit]]
        more = len(rows) > limit
        return ExecutionPage(items, (items[-1].created_at, items[-1].id) if more else None)

    async def count_queued(self, tenant_id: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(_EX).where(_EX.c.status == _QUEUED)
        if tenant_id is not None:
            query = query.where(_scoped(_EX, tenant_id))
        async with self._db.read() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def claim_execution(
        self,
        execution_id: str,
        *,
        owner: str,
        now: datetime,
        lease_until: datetime,
        timeout_s: float,
    ) -> Execution | None:
        stmt = (
            sa.update(_EX)
            .where(_EX.c.id == execution_id, _EX.c.status == _QUEUED)
            .values(_claim_values(owner, now, lease_until, timeout_s))
            .returning(*_EX.c)
        )
        async with self._db.write() as conn:
            rows = (await conn.execute(stmt)).all()
            claimed = await _fill_deadlines(conn, rows, timeout_s)
        return claimed[0] if claimed else None

    async def claim_next(
        self, *, owner: str, now: datetime, lease_until: datetime, timeout_s: float, limit: int
    ) -> list[Execution]:
        if limit <= 0:
            return []
        candidates = self._db.lock_claimable(
            sa.select(_EX.c.id)
            .where(_EX.c.status == _QUEUED)
            .order_by(_EX.c.created_at, _EX.c.id)
            .limit(limit)
        )
        stmt = (
            sa.update(_EX)
            # ``status`` again: on PostgreSQL the outer UPDATE re-checks it under the row lock.
            .where(_EX.c.id.in_(candidates), _EX.c.status == _QUEUED)
            .values(_claim_values(owner, now, lease_until, timeout_s))
            .returning(*_EX.c)
        )
        async with self._db.write() as conn:
            rows = (await conn.execute(stmt)).all()
            claimed = await _fill_deadlines(conn, rows, timeout_s)
        # RETURNING has no defined order; callers expect oldest first.
        return sorted(claimed, key=lambda ex: (ex.created_at, ex.id))

    async def renew_leases(
        self, execution_ids: Sequence[str], *, owner: str, lease_until: datetime
    ) -> set[str]:
        if not execution_ids:
            return set()
        stmt = (
            sa.update(_EX)
            .where(
                _EX.c.id.in_(execution_ids),
                _EX.c.status == _RUNNING,
                _EX.c.lease_owner == owner,
            )
            .values(lease_expires_at=lease_until)
            .returning(_EX.c.id)
        )
        async with self._db.write() as conn:
            return set((await conn.execute(stmt)).scalars().all())

    async def cancel_requested(self, execution_ids: Sequence[str]) -> set[str]:
        if not execution_ids:
            return set()
        query = sa.select(_EX.c.id).where(
            _EX.c.id.in_(execution_ids),
            _EX.c.status == _RUNNING,
            _EX.c.cancel_requested.is_(True),
        )
        async with self._db.read() as conn:
            return set((await conn.execute(query)).scalars().all())

    async def record_step(self, step: StepRun) -> None:
        async with self._db.write() as conn:
            await conn.execute(self._upsert_step(step))

    def _upsert_step(self, step: StepRun) -> sa.Executable:
        return self._db.upsert(
            t.step_run, _step_values(step), key=("execution_id", "step_id", "attempt")
        )

    async def list_step_runs(self, tenant_id: str, execution_id: str) -> list[StepRun]:
        sr = t.step_run
        query = (
            sa.select(sr)
            .where(_scoped(sr, tenant_id), sr.c.execution_id == execution_id)
            .order_by(sr.c.position, sr.c.attempt)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
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
        stmt = (
            sa.update(_EX)
            .where(_EX.c.id == execution_id, _EX.c.status == _RUNNING, _EX.c.lease_owner == owner)
            .values(
                status=status.value,
                error=error,
                finished_at=finished_at,
                lease_owner=None,
                lease_expires_at=None,
            )
        )
        async with self._db.write() as conn:
            # The status change goes first: when the lease is lost, the step is not written.
            if (await conn.execute(stmt)).rowcount != 1:
                return False
            if step is not None:
                await conn.execute(self._upsert_step(step))
        return True

    async def release_execution(self, execution_id: str, *, owner: str) -> bool:
        stmt = (
            sa.update(_EX)
            .where(_EX.c.id == execution_id, _EX.c.status == _RUNNING, _EX.c.lease_owner == owner)
            .values(status=_QUEUED, lease_owner=None, lease_expires_at=None)
        )
        async with self._db.write() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    async def request_cancel(
        self, tenant_id: str, execution_id: str, *, now: datetime
    ) -> Execution | None:
        queued = _EX.c.status == _QUEUED
        # One statement for all three cases; SET expressions see the row as it was before.
        stmt = (
            sa.update(_EX)
            .where(_scoped(_EX, tenant_id), _EX.c.id == execution_id)
            .values(
                status=sa.case((queued, ExecutionStatus.cancelled.value), else_=_EX.c.status),
                finished_at=sa.case((queued, _utc(now)), else_=_EX.c.finished_at),
                error=sa.case((queued, _CANCELLED_BY_USER), else_=_EX.c.error),
                cancel_requested=sa.case(
                    (_EX.c.status == _RUNNING, sa.true()), else_=_EX.c.cancel_requested
                ),
            )
            .returning(*_EX.c)
        )
        async with self._db.write() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _execution(row)

    async def reap(self, *, now: datetime) -> Reaped:
        ended = {"finished_at": now, "lease_owner": None, "lease_expires_at": None}
        # Order matters and mirrors the rules' precedence: the deadline first, then a
        # requested cancel, and only then a plain re-queue.
        timed_out = (
            sa.update(_EX)
            .where(
                _EX.c.deadline_at <= now,
                sa.or_(_EX.c.status == _QUEUED, _lease_expired(now)),
            )
            .values(status=ExecutionStatus.timed_out.value, error=_TIMED_OUT, **ended)
            .returning(_EX.c.id)
        )
        cancelled = (
            sa.update(_EX)
            .where(_lease_expired(now), _EX.c.cancel_requested.is_(True))
            .values(status=ExecutionStatus.cancelled.value, error=_CANCELLED_BY_USER, **ended)
        )
        requeued = (
            sa.update(_EX)
            .where(_lease_expired(now))
            .values(status=_QUEUED, lease_owner=None, lease_expires_at=None)
            .returning(_EX.c.id)
        )
        async with self._db.write() as conn:
            timed_out_ids = list((await conn.execute(timed_out)).scalars().all())
            await conn.execute(cancelled)
            requeued_ids = list((await conn.execute(requeued)).scalars().all())
        return Reaped(requeued=requeued_ids, timed_out=timed_out_ids)

    async def queued_ids(self, *, limit: int) -> list[str]:
        query = (
            sa.select(_EX.c.id)
            .where(_EX.c.status == _QUEUED)
            .order_by(_EX.c.created_at, _EX.c.id)
            .limit(limit)
        )
        async with self._db.read() as conn:
            return list((await conn.execute(query)).scalars().all())


# -- claiming -------------------------------------------------------------------------------
def _claim_values(
    owner: str, now: datetime, lease_until: datetime, timeout_s: float
) -> dict[str, Any]:
    return {
        "status": _RUNNING,
        "lease_owner": owner,
        "lease_expires_at": lease_until,
        "attempt": _EX.c.attempt + 1,
        "started_at": sa.func.coalesce(_EX.c.started_at, _utc(now)),
        # A first claim fixes the deadline from ``now``; later claims keep it. The odd row
        # with a preset ``started_at`` but no deadline is completed by ``_fill_deadlines``,
        # which avoids date arithmetic in SQL (it differs per dialect).
        "deadline_at": sa.case(
            (
                sa.and_(_EX.c.deadline_at.is_(None), _EX.c.started_at.is_(None)),
                _utc(now + timedelta(seconds=timeout_s)),
            ),
            else_=_EX.c.deadline_at,
        ),
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
def _credential(row: sa.Row[Any]) -> Credential:
    return Credential.model_construct(**{**row._mapping, "type": CredentialType(row.type)})


def _workflow_values(workflow: Workflow) -> dict[str, Any]:
    return {
        "id": workflow.id,
        "tenant_id": workflow.tenant_id,
        "name": workflow.name,
        "active": workflow.active,
        "version": workflow.version,
        "trigger": workflow.trigger,
        "steps": workflow.steps,
        "created_at": workflow.created_at,
        "updated_at": workflow.updated_at,
    }


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
    values = dict(execution)  # shallow: ``trigger`` stays a model, the JSON type serializes it
    values["status"] = execution.status.value
    return values


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
    values = dict(step)
    values["status"] = step.status.value
    return values


def _step_run(row: sa.Row[Any]) -> StepRun:
    return StepRun.model_construct(**{**row._mapping, "status": StepStatus(row.status)})
