"""The in-memory Store: a real implementation (tests, dry runs), not a mock."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from ipaas.circuits.models import Circuit, CircuitState
from ipaas.credentials.models import Credential
from ipaas.executions.models import ALERTING_STATUSES, Execution, ExecutionStatus, StepRun
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
)
from ipaas.tenants.models import ApiToken, Role, Tenant, TenantLimits, User
from ipaas.workflows.models import TriggerType, Workflow, WorkflowDefinition, WorkflowVersion

_RUNNING = ExecutionStatus.running
_QUEUED = ExecutionStatus.queued


def _request_cancel(ex: Execution, now: datetime) -> None:
    """A queued execution cancelled at once, a running one flagged; a terminal one left."""
    if ex.status == _QUEUED:
        ex.status = ExecutionStatus.cancelled
        ex.finished_at = now
        ex.error = "cancelled by user"
        ex.next_attempt_at = None
    elif ex.status == _RUNNING:
        ex.cancel_requested = True


_CLOSED = CircuitState.closed


class MemoryStore:
    #: Every method applies its change in its first step (nothing in it suspends): in call
    #: order.
    writes_in_order = True

    def __init__(self) -> None:
        self.tenants: dict[str, Tenant] = {}
        self.users: dict[str, User] = {}
        self.tokens: dict[str, ApiToken] = {}
        self.credentials: dict[str, Credential] = {}
        self.workflows: dict[str, Workflow] = {}
        self.versions: dict[tuple[str, int], tuple[str, WorkflowVersion]] = {}
        self.executions: dict[str, Execution] = {}
        #: ``(workflow_id, dedup_key) -> execution id``: the unique index of the SQL store.
        self.dedup_keys: dict[tuple[str, str], str] = {}
        self.step_runs: dict[str, dict[tuple[str, int], StepRun]] = {}
        self.circuits: dict[tuple[str, str], Circuit] = {}
        #: Failures the alert pass has not settled (the SQL store's ``alert_pending``).
        self.alert_pending: set[str] = set()
        #: Failure alerts' pacing by failed workflow id (the SQL store's ``alert_window``).
        self.alert_windows: dict[str, AlertWindow] = {}
        # Every method is atomic: the lock stands in for a transaction where a method awaits.
        self._lock = asyncio.Lock()

    async def startup(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def clock_offset_s(self) -> float | None:
        return None

    # -- tenants --------------------------------------------------------------------------
    async def create_tenant(
        self, tenant: Tenant, user: User, token: ApiToken, *, first: bool = False
    ) -> bool:
        # Nothing from the check to the writes suspends: no other task runs in between.
        if first and self.tenants:
            return False
        if await self.get_user_by_email(user.email) is not None:
            raise DuplicateError("email")
        self.tenants[tenant.id] = tenant.model_copy(deep=True)
        self.users[user.id] = user.model_copy()
        self.tokens[token.id] = token.model_copy()
        return True

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        tenant = self.tenants.get(tenant_id)
        return tenant.model_copy(deep=True) if tenant else None

    async def set_tenant_limits(self, tenant_id: str, limits: TenantLimits) -> bool:
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            return False
        tenant.limits = limits.model_copy()
        return True

    async def get_user_by_email(self, email: str) -> User | None:
        wanted = email.lower()
        for user in self.users.values():
            if user.email.lower() == wanted:
                return user.model_copy()
        return None

    async def get_user(self, tenant_id: str, user_id: str) -> User | None:
        user = self.users.get(user_id)
        return user.model_copy() if user is not None and user.tenant_id == tenant_id else None

    async def list_users(self, tenant_id: str) -> list[User]:
        found = [u for u in self.users.values() if u.tenant_id == tenant_id]
        return [u.model_copy() for u in sorted(found, key=lambda u: (u.created_at, u.id))]

    async def create_user(self, user: User) -> None:
        if await self.get_user_by_email(user.email) is not None:
            raise DuplicateError("email")
        self.users[user.id] = user.model_copy(update={"email": user.email.lower()})

    async def accept_invite(
        self, invite_hash: str, password_hash: str, token: ApiToken, *, now: datetime
    ) -> User | None:
        for user in self.users.values():
            if user.invite_hash != invite_hash:
                continue
            if user.invite_expires_at is None or user.invite_expires_at <= now:
                return None
            user.password_hash = password_hash
            user.invite_hash = user.invite_expires_at = None
            self.tokens[token.id] = token.model_copy(
                update={"tenant_id": user.tenant_id, "user_id": user.id}
            )
            return user.model_copy()
        return None

    async def change_member(
        self, tenant_id: str, user_id: str, *, role: Role | None
    ) -> MemberChange:
        user = self.users.get(user_id)
        if user is None or user.tenant_id != tenant_id:
            return MemberChange.not_found
        owners = {
            u.id
            for u in self.users.values()
            if u.tenant_id == tenant_id and u.role is Role.owner and not u.invited
        }
        if owners == {user_id} and role is not Role.owner:
            return MemberChange.last_owner
        if role is None:
            del self.users[user_id]
            for token_id in [t.id for t in self.tokens.values() if t.user_id == user_id]:
                del self.tokens[token_id]
        else:
            user.role = role
        return MemberChange.done

    async def change_password(
        self,
        tenant_id: str,
        user_id: str,
        password_hash: str,
        *,
        keep_token_id: str | None,
        at: datetime,
    ) -> int | None:
        user = self.users.get(user_id)
        if user is None or user.tenant_id != tenant_id:
            return None
        user.password_hash = password_hash
        user.invite_hash = user.invite_expires_at = None
        ended = [
            token
            for token in self.tokens.values()
            if token.tenant_id == tenant_id
            and token.user_id == user_id
            and token.revoked_at is None
            and token.session
            and token.id != keep_token_id
        ]
        for token in ended:
            token.revoked_at = at
        return len(ended)

    async def get_token_by_hash(self, token_hash: str) -> ApiToken | None:
        for token in self.tokens.values():
            if token.token_hash == token_hash:
                return token.model_copy()
        return None

    async def create_token(self, token: ApiToken) -> None:
        self.tokens[token.id] = token.model_copy()

    async def list_tokens(self, tenant_id: str, *, now: datetime) -> list[ApiToken]:
        rows = [
            t.model_copy()
            for t in self.tokens.values()
            if t.tenant_id == tenant_id
            and t.revoked_at is None
            and (t.expires_at is None or t.expires_at > now)
        ]
        return sorted(rows, key=lambda t: (t.created_at, t.id), reverse=True)

    async def revoke_token(self, tenant_id: str, token_id: str, revoked_at: datetime) -> bool:
        token = self.tokens.get(token_id)
        if token is None or token.tenant_id != tenant_id or token.revoked_at is not None:
            return False
        token.revoked_at = revoked_at
        return True

    # -- credentials ----------------------------------------------------------------------
    async def create_credential(self, credential: Credential) -> None:
        self.credentials[credential.id] = credential.model_copy()

    async def get_credential(self, tenant_id: str, credential_id: str) -> Credential | None:
        cred = self.credentials.get(credential_id)
        return cred.model_copy() if cred and cred.tenant_id == tenant_id else None

    async def get_credentials(
        self, tenant_id: str, credential_ids: Sequence[str]
    ) -> dict[str, Credential]:
        found = {}
        for cid in credential_ids:
            cred = await self.get_credential(tenant_id, cid)
            if cred is not None:
                found[cid] = cred
        return found

    async def list_credentials(self, tenant_id: str) -> list[Credential]:
        rows = [c.model_copy() for c in self.credentials.values() if c.tenant_id == tenant_id]
        return sorted(rows, key=lambda c: (c.created_at, c.id), reverse=True)

    async def delete_credential(self, tenant_id: str, credential_id: str) -> bool:
        if await self.get_credential(tenant_id, credential_id) is None:
            return False
        del self.credentials[credential_id]
        return True

    async def update_credential(
        self,
        tenant_id: str,
        credential_id: str,
        *,
        name: str | None = None,
        secret_ciphertext: str | None = None,
    ) -> bool:
        credential = await self.get_credential(tenant_id, credential_id)
        if credential is None:
            return False
        if name is not None:
            credential.name = name
        if secret_ciphertext is not None:
            credential.secret_ciphertext = secret_ciphertext
        self.credentials[credential_id] = credential
        return True

    async def replace_credential_secret(
        self, tenant_id: str, credential_id: str, *, old: str, new: str
    ) -> bool:
        credential = await self.get_credential(tenant_id, credential_id)
        if credential is None or credential.secret_ciphertext != old:
            return False
        credential.secret_ciphertext = new
        self.credentials[credential_id] = credential
        return True

    # -- workflows ------------------------------------------------------------------------
    def _save_version(self, workflow: Workflow) -> None:
        self.versions[(workflow.id, workflow.version)] = (
            workflow.tenant_id,
            WorkflowVersion(
                trigger=workflow.trigger.model_copy(deep=True),
                steps=[step.model_copy(deep=True) for step in workflow.steps],
                version=workflow.version,
                created_at=workflow.updated_at,
            ),
        )

    async def create_workflow(self, workflow: Workflow) -> None:
        self.workflows[workflow.id] = workflow.model_copy(deep=True)
        self._save_version(workflow)

    async def get_workflow(self, tenant_id: str, workflow_id: str) -> Workflow | None:
        wf = self.workflows.get(workflow_id)
        return wf.model_copy(deep=True) if wf and wf.tenant_id == tenant_id else None

    async def get_workflow_for_intake(self, workflow_id: str) -> Workflow | None:
        wf = self.workflows.get(workflow_id)
        return wf.model_copy(deep=True) if wf else None

    def _newest_first(
        self, tenant_id: str, before: tuple[datetime, str] | None = None
    ) -> list[Workflow]:
        """The tenant's stored workflows (not copies), newest first, before ``before``."""
        rows = [
            w
            for w in self.workflows.values()
            if w.tenant_id == tenant_id and (before is None or (w.created_at, w.id) < before)
        ]
        rows.sort(key=lambda w: (w.created_at, w.id), reverse=True)
        return rows

    async def list_workflows(
        self,
        tenant_id: str,
        *,
        before: tuple[datetime, str] | None = None,
        limit: int | None = None,
    ) -> list[Workflow]:
        rows = self._newest_first(tenant_id, before)[:limit]
        return [w.model_copy(deep=True) for w in rows]

    async def workflow_names(self, tenant_id: str) -> dict[str, str]:
        # Names only: no deep copy of every definition, as the SQL store reads two columns.
        return {w.id: w.name for w in self._newest_first(tenant_id)}

    def _scheduled(self) -> list[Workflow]:
        return sorted(
            (
                w
                for w in self.workflows.values()
                if w.active and w.trigger.type is TriggerType.schedule
            ),
            key=lambda w: (w.created_at, w.id),
        )

    async def list_scheduled_workflows(
        self, ids: Collection[str] | None = None
    ) -> list[ScheduledWorkflow]:
        wanted = None if ids is None else set(ids)
        return [
            ScheduledWorkflow(
                w.id, w.tenant_id, w.version, w.trigger.model_copy(deep=True), w.updated_at
            )
            for w in self._scheduled()
            if wanted is None or w.id in wanted
        ]

    async def scheduled_workflow_stamps(self) -> list[tuple[str, datetime]]:
        return [(w.id, w.updated_at) for w in self._scheduled()]

    async def update_workflow(
        self, workflow: Workflow, *, new_version: bool, base_updated_at: datetime | None = None
    ) -> bool:
        stored = await self.get_workflow(workflow.tenant_id, workflow.id)
        if stored is None:
            return False
        if base_updated_at is not None and stored.updated_at != base_updated_at:
            return False
        self.workflows[workflow.id] = workflow.model_copy(deep=True)
        if new_version:
            self._save_version(workflow)
        return True

    async def delete_workflow(
        self, tenant_id: str, workflow_id: str, *, base_updated_at: datetime | None = None
    ) -> bool:
        stored = await self.get_workflow(tenant_id, workflow_id)
        if stored is None:
            return False
        if base_updated_at is not None and stored.updated_at != base_updated_at:
            return False
        del self.workflows[workflow_id]
        return True

    async def get_workflow_version(
        self, tenant_id: str, workflow_id: str, version: int
    ) -> WorkflowDefinition | None:
        found = self.versions.get((workflow_id, version))
        if found is None or found[0] != tenant_id:
            return None
        saved = found[1].model_copy(deep=True)
        return WorkflowDefinition(trigger=saved.trigger, steps=saved.steps)

    async def list_workflow_versions(
        self, tenant_id: str, workflow_id: str, *, before: int | None = None, limit: int
    ) -> list[WorkflowVersion]:
        found = [
            saved
            for (of, version), (tenant, saved) in self.versions.items()
            if of == workflow_id and tenant == tenant_id and (before is None or version < before)
        ]
        found.sort(key=lambda saved: saved.version, reverse=True)
        return [saved.model_copy(deep=True) for saved in found[:limit]]

    # -- executions -----------------------------------------------------------------------
    async def create_execution(self, execution: Execution) -> None:
        if execution.dedup_key is not None:
            key = (execution.workflow_id, execution.dedup_key)
            if key in self.dedup_keys:
                raise DuplicateError("dedup_key")
            self.dedup_keys[key] = execution.id
        self.executions[execution.id] = execution.model_copy(deep=True)

    async def create_execution_once(
        self, execution: Execution, *, expired_before: datetime
    ) -> str | None:
        assert execution.dedup_key is not None
        key = (execution.workflow_id, execution.dedup_key)
        holder_id = self.dedup_keys.get(key)
        if holder_id is not None:
            holder = self.executions[holder_id]
            if holder.created_at >= expired_before:
                return holder_id
            holder.dedup_key = None  # expired: the key moves to the new execution
            del self.dedup_keys[key]
        await self.create_execution(execution)
        return None

    async def get_execution(self, tenant_id: str, execution_id: str) -> Execution | None:
        ex = self.executions.get(execution_id)
        return ex.model_copy(deep=True) if ex and ex.tenant_id == tenant_id else None

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
        needle = trigger_contains.lower() if trigger_contains is not None else None
        rows = [
            ex
            for ex in self.executions.values()
            if ex.tenant_id == tenant_id
            and (workflow_id is None or ex.workflow_id == workflow_id)
            and (status is None or ex.status == status)
            and (before is None or (ex.created_at, ex.id) < before)
            and (since is None or ex.created_at >= since)
            and (needle is None or needle in _ascii_lower(ex.trigger.model_dump_json()))
        ]
        rows.sort(key=lambda ex: (ex.created_at, ex.id), reverse=True)
        page = [ex.model_copy(deep=True) for ex in rows[:limit]]
        more = len(rows) > limit
        return ExecutionPage(page, (page[-1].created_at, page[-1].id) if more and page else None)

    async def recent_runs(
        self, tenant_id: str, workflow_ids: Sequence[str], *, limit: int
    ) -> dict[str, list[RecentRun]]:
        wanted = set(workflow_ids)
        runs: dict[str, list[Execution]] = {}
        for ex in self.executions.values():
            if ex.tenant_id == tenant_id and ex.workflow_id in wanted:
                runs.setdefault(ex.workflow_id, []).append(ex)
        return {
            workflow_id: [
                RecentRun(ex.id, ex.status, ex.created_at)
                for ex in sorted(found, key=lambda ex: (ex.created_at, ex.id), reverse=True)[:limit]
            ]
            for workflow_id, found in runs.items()
        }

    async def execution_figures(self, tenant_id: str, *, since: datetime) -> ExecutionFigures:
        minutes: dict[tuple[int, ExecutionStatus], int] = {}
        workflows: dict[str, list[int]] = {}
        durations: list[float] = []
        for ex in self.executions.values():
            if ex.tenant_id != tenant_id or ex.created_at < since:
                continue
            minute = min(FIGURE_MINUTES - 1, int((ex.created_at - since).total_seconds() // 60))
            minutes[minute, ex.status] = minutes.get((minute, ex.status), 0) + 1
            counts = workflows.setdefault(ex.workflow_id, [0, 0])
            counts[0] += ex.status in (ExecutionStatus.failed, ExecutionStatus.timed_out)
            counts[1] += 1
            if ex.started_at is not None and ex.finished_at is not None:
                durations.append((ex.finished_at - ex.started_at).total_seconds())
        return ExecutionFigures(
            per_minute=[(m, status, n) for (m, status), n in sorted(minutes.items())],
            per_workflow=[(wid, f, n) for wid, (f, n) in sorted(workflows.items())],
            durations_s=sorted(durations),
        )

    async def count_queued(self, tenant_id: str | None = None) -> int:
        return sum(
            1
            for ex in self.executions.values()
            if _ready(ex) and (tenant_id is None or ex.tenant_id == tenant_id)
        )

    def _claim(
        self, ex: Execution, owner: str, now: datetime, lease_until: datetime, timeout_s: float
    ) -> Execution:
        ex.status = _RUNNING
        ex.lease_owner = owner
        ex.lease_expires_at = lease_until
        ex.attempt += 1
        ex.next_attempt_at = None
        if ex.started_at is None:
            ex.started_at = now
        if ex.deadline_at is None:
            ex.deadline_at = ex.started_at + timedelta(seconds=timeout_s)
        return ex.model_copy(deep=True)

    async def queue_stats(self, *, now: datetime) -> QueueStats:
        ready = [ex.created_at for ex in self.executions.values() if _ready(ex)]
        waiting = sum(
            1
            for ex in self.executions.values()
            if ex.status == _QUEUED and ex.next_attempt_at is not None
        )
        expired = sum(
            1
            for ex in self.executions.values()
            if ex.status == ExecutionStatus.running
            and ex.lease_expires_at is not None
            and ex.lease_expires_at < now
        )
        return QueueStats(len(ready), min(ready, default=None), expired, waiting=waiting)

    async def list_finished(
        self, tenant_id: str, *, since: datetime, limit: int
    ) -> list[FinishedExecution]:
        done = sorted(
            (
                ex
                for ex in self.executions.values()
                if ex.tenant_id == tenant_id
                and ex.status.terminal
                and ex.finished_at is not None
                and ex.finished_at >= since
            ),
            key=lambda ex: ex.finished_at or since,
            reverse=True,
        )[:limit]
        return [
            FinishedExecution(
                ex.status,
                ex.finished_at or since,
                (ex.finished_at - ex.started_at).total_seconds()
                if ex.finished_at and ex.started_at
                else 0.0,
            )
            for ex in done
        ]

    async def list_tenant_ids(self) -> list[str]:
        return sorted(self.tenants)

    def _finished_of(self, tenant_id: str) -> list[Execution]:
        return [
            ex
            for ex in self.executions.values()
            if ex.tenant_id == tenant_id and ex.finished_at is not None
        ]

    async def keep_horizon(self, tenant_id: str, keep: int) -> datetime | None:
        finished = self._finished_of(tenant_id)
        if len(finished) <= keep:
            return None
        newest = heapq.nlargest(keep, finished, key=lambda ex: ex.finished_at or datetime.min)
        return newest[-1].finished_at

    async def prune_executions(
        self, tenant_id: str, *, finished_before: datetime, limit: int
    ) -> int:
        doomed = heapq.nsmallest(
            limit,
            (
                ex
                for ex in self._finished_of(tenant_id)
                if ex.finished_at is not None and ex.finished_at < finished_before
            ),
            key=lambda ex: ex.finished_at or datetime.min,
        )
        for ex in doomed:
            del self.executions[ex.id]
            self.step_runs.pop(ex.id, None)
            self.alert_pending.discard(ex.id)
            if ex.dedup_key is not None:
                self.dedup_keys.pop((ex.workflow_id, ex.dedup_key), None)
        return len(doomed)

    async def prune_tokens(self, *, ended_before: datetime, limit: int) -> int:
        ended = [
            token.id
            for token in self.tokens.values()
            if (token.revoked_at is not None and token.revoked_at < ended_before)
            or (token.expires_at is not None and token.expires_at < ended_before)
        ][:limit]
        for token_id in ended:
            del self.tokens[token_id]
        return len(ended)

    async def compact(self) -> None:
        return None

    async def vacuum_queue(self, *, min_dead: int) -> QueueVacuum | None:
        return None

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
        ex = self.executions.get(execution_id)
        if ex is None or not _due(ex, now):
            return None
        running = self._running_per_tenant().get(ex.tenant_id, 0)
        if fairness.room(running, self._cap(ex.tenant_id, tenant_cap), 1) == 0:
            return None
        return self._claim(ex, owner, now, lease_until, timeout_s)

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
        due: dict[str, list[Execution]] = {}
        for ex in sorted(self.executions.values(), key=lambda ex: (ex.created_at, ex.id)):
            if _ready(ex):
                due.setdefault(ex.tenant_id, []).append(ex)
        running = self._running_per_tenant()
        for tenant_id, rows in due.items():
            cap = self._cap(tenant_id, tenant_cap)
            del rows[fairness.room(running.get(tenant_id, 0), cap, limit) :]
        chosen = fairness.share(due, running, limit)
        chosen.sort(key=lambda ex: (ex.created_at, ex.id))
        return [self._claim(ex, owner, now, lease_until, timeout_s) for ex in chosen]

    def _running_per_tenant(self) -> dict[str, int]:
        running: dict[str, int] = {}
        for ex in self.executions.values():
            if ex.status == _RUNNING:
                running[ex.tenant_id] = running.get(ex.tenant_id, 0) + 1
        return running

    def _cap(self, tenant_id: str, default: int | None) -> int | None:
        tenant = self.tenants.get(tenant_id)
        override = tenant.limits.max_concurrency if tenant is not None else None
        return fairness.cap_of(override, default)

    async def renew_leases(
        self, execution_ids: Sequence[str], *, owner: str, lease_until: datetime
    ) -> set[str]:
        renewed = set()
        for eid in execution_ids:
            ex = self.executions.get(eid)
            if ex is not None and ex.status == _RUNNING and ex.lease_owner == owner:
                ex.lease_expires_at = lease_until
                renewed.add(eid)
        return renewed

    async def cancel_requested(self, execution_ids: Sequence[str]) -> set[str]:
        return {
            eid
            for eid in execution_ids
            if (ex := self.executions.get(eid)) is not None
            and ex.status == _RUNNING
            and ex.cancel_requested
        }

    async def queued_among(self, execution_ids: Sequence[str]) -> set[str]:
        return {
            eid
            for eid in execution_ids
            if (ex := self.executions.get(eid)) is not None and ex.status == _QUEUED
        }

    async def record_step(self, step: StepRun) -> None:
        runs = self.step_runs.setdefault(step.execution_id, {})
        runs[(step.step_id, step.attempt)] = step.model_copy(deep=True)

    async def list_step_runs(self, tenant_id: str, execution_id: str) -> list[StepRun]:
        ex = self.executions.get(execution_id)
        if ex is None or ex.tenant_id != tenant_id:
            return []
        runs = self.step_runs.get(execution_id, {}).values()
        return [
            s.model_copy(deep=True)
            for s in sorted(runs, key=lambda s: (s.position, s.started_at, s.attempt, s.step_id))
        ]

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
        ex = self.executions.get(execution_id)
        if ex is None or ex.status != _RUNNING or ex.lease_owner != owner:
            return False
        if step is not None:
            await self.record_step(step)
        ex.status = status
        ex.error = error
        ex.finished_at = finished_at
        ex.lease_owner = None
        ex.lease_expires_at = None
        if status in ALERTING_STATUSES:
            self.alert_pending.add(ex.id)
        return True

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
        # Writes in order (one event loop): the worker's next claim is no round trip.
        finished = await self.finish_execution(
            execution_id, owner=owner, status=status, error=error, finished_at=finished_at,
            step=step,
        )  # fmt: skip
        return finished, None

    async def release_execution(self, execution_id: str, *, owner: str) -> bool:
        ex = self.executions.get(execution_id)
        if ex is None or ex.status != _RUNNING or ex.lease_owner != owner:
            return False
        ex.status = _QUEUED
        ex.lease_owner = None
        ex.lease_expires_at = None
        return True

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
        ex = self.executions.get(execution_id)
        if ex is None or ex.status != _RUNNING or ex.lease_owner != owner:
            return False
        await self.record_step(step)
        ex.lease_owner = None
        ex.lease_expires_at = None
        if ex.cancel_requested:
            ex.status = ExecutionStatus.cancelled
            ex.error = "cancelled by user"
            ex.finished_at = now
        else:
            ex.status = _QUEUED
            ex.next_attempt_at = next_attempt_at
            if deadline_at is not None:
                ex.deadline_at = deadline_at
        return True

    async def take_due_retries(self, *, now: datetime, limit: int) -> list[str]:
        due = sorted(
            (
                ex
                for ex in self.executions.values()
                if ex.status == _QUEUED
                and ex.next_attempt_at is not None
                and ex.next_attempt_at <= now
            ),
            key=lambda ex: (ex.next_attempt_at, ex.id),
        )[:limit]
        for ex in due:
            ex.next_attempt_at = None
        return [ex.id for ex in due]

    async def requeue_execution(
        self, tenant_id: str, execution_id: str, *, statuses: Sequence[ExecutionStatus]
    ) -> Execution | None:
        ex = self.executions.get(execution_id)
        if ex is None or ex.tenant_id != tenant_id or ex.status not in statuses:
            return None
        if ex.workflow_id not in self.workflows:
            return None
        ex.status = _QUEUED
        ex.error = None
        ex.started_at = ex.finished_at = ex.deadline_at = ex.next_attempt_at = None
        ex.cancel_requested = False
        ex.lease_owner = ex.lease_expires_at = None
        self.alert_pending.discard(ex.id)
        return ex.model_copy(deep=True)

    async def request_cancel(
        self, tenant_id: str, execution_id: str, *, now: datetime
    ) -> Execution | None:
        ex = self.executions.get(execution_id)
        if ex is None or ex.tenant_id != tenant_id:
            return None
        _request_cancel(ex, now)
        return ex.model_copy(deep=True)

    async def cancel_pending(
        self, tenant_id: str, *, workflow_id: str | None, now: datetime
    ) -> CancelledPending:
        cancelled = 0
        stopping: list[str] = []
        for ex in self.executions.values():
            if ex.tenant_id != tenant_id or workflow_id not in (None, ex.workflow_id):
                continue
            if ex.status == _QUEUED:
                cancelled += 1
            elif ex.status == _RUNNING:
                stopping.append(ex.id)
            _request_cancel(ex, now)
        return CancelledPending(cancelled=cancelled, stopping=stopping)

    async def reap(self, *, now: datetime) -> Reaped:
        requeued: list[str] = []
        timed_out: list[str] = []
        for ex in self.executions.values():
            lease_expired = ex.status == _RUNNING and (
                ex.lease_expires_at is None or ex.lease_expires_at <= now
            )
            if ex.status != _QUEUED and not lease_expired:
                continue
            if ex.deadline_at is not None and ex.deadline_at <= now:
                ex.status = ExecutionStatus.timed_out
                ex.error = "execution timed out"
                ex.next_attempt_at = None
            elif lease_expired and ex.cancel_requested:
                ex.status = ExecutionStatus.cancelled
                ex.error = "cancelled by user"
            elif lease_expired:
                ex.status = _QUEUED
                ex.lease_owner = None
                ex.lease_expires_at = None
                requeued.append(ex.id)
                continue
            else:
                continue
            ex.finished_at = now
            ex.lease_owner = None
            ex.lease_expires_at = None
            if ex.status == ExecutionStatus.timed_out:
                timed_out.append(ex.id)
                self.alert_pending.add(ex.id)
        return Reaped(requeued, timed_out)

    async def pending_alerts(self, *, limit: int) -> list[Execution]:
        pending = [self.executions[i] for i in self.alert_pending if i in self.executions]
        pending.sort(key=lambda ex: (ex.finished_at is None, ex.finished_at, ex.id))
        return [ex.model_copy(deep=True) for ex in pending[:limit]]

    async def settle_alerts(
        self, alerts: Sequence[PendingAlert], *, now: datetime, interval: timedelta
    ) -> list[Execution]:
        created = []
        for pending in alerts:
            ex = self.executions.get(pending.failed.id)
            if ex is None or ex.id not in self.alert_pending:
                continue
            if ex.finished_at != pending.failed.finished_at:
                continue  # failed again since the read: that failure is still pending
            self.alert_pending.discard(ex.id)
            if pending.alert is not None and self._alert_now(ex, now, interval):
                self.executions[pending.alert.id] = pending.alert.model_copy(deep=True)
                created.append(pending.alert)
        return created

    def _alert_now(self, failed: Execution, now: datetime, interval: timedelta) -> bool:
        """Open the failed workflow's window (``True``: alert now) or hold the failure."""
        if not interval:
            return True
        window = self.alert_windows.get(failed.workflow_id)
        if window is None or (not window.held and window.last_alert_at <= now - interval):
            self.alert_windows[failed.workflow_id] = AlertWindow(
                failed.workflow_id, failed.tenant_id, now, 0, None
            )
            return True
        self.alert_windows[failed.workflow_id] = replace(
            window, held=window.held + 1, held_execution_id=failed.id
        )
        return False

    async def due_alert_digests(self, *, last_before: datetime, limit: int) -> list[AlertWindow]:
        due = [w for w in self.alert_windows.values() if w.held and w.last_alert_at <= last_before]
        due.sort(key=lambda w: (w.last_alert_at, w.workflow_id))
        return due[:limit]

    async def settle_alert_digests(
        self, digests: Sequence[PendingDigest], *, now: datetime
    ) -> list[Execution]:
        created = []
        for digest in digests:
            seen = digest.window
            if self.alert_windows.get(seen.workflow_id) != seen:
                continue  # held another failure, or settled by another pass, since the read
            self.alert_windows[seen.workflow_id] = replace(
                seen, last_alert_at=now, held=0, held_execution_id=None
            )
            if digest.alert is not None:
                self.executions[digest.alert.id] = digest.alert.model_copy(deep=True)
                created.append(digest.alert)
        return created

    async def queued_ids(self, *, limit: int) -> list[str]:
        queued = sorted(
            (ex for ex in self.executions.values() if ex.status == _QUEUED),
            key=lambda ex: (ex.created_at, ex.id),
        )
        return [ex.id for ex in queued if ex.next_attempt_at is None][:limit]

    # -- circuit breakers -----------------------------------------------------------------
    async def list_circuits(self, tenant_id: str) -> list[Circuit]:
        rows = [c.model_copy() for (tid, _), c in self.circuits.items() if tid == tenant_id]
        return sorted(rows, key=lambda c: c.host)

    async def get_circuit(self, tenant_id: str, host: str) -> Circuit | None:
        circuit = self.circuits.get((tenant_id, host))
        return circuit.model_copy() if circuit else None

    async def list_unclosed_circuits(self) -> list[Circuit]:
        return [c.model_copy() for c in self.circuits.values() if c.state != _CLOSED]

    async def record_circuit_failure(
        self, tenant_id: str, host: str, *, now: datetime, threshold: int, retry_at: datetime
    ) -> Circuit:
        circuit = self.circuits.setdefault(
            (tenant_id, host), Circuit(tenant_id=tenant_id, host=host, updated_at=now)
        )
        circuit.failures += 1
        circuit.updated_at = now
        if circuit.state == CircuitState.half_open or (
            circuit.state == _CLOSED and circuit.failures >= threshold
        ):
            circuit.state = CircuitState.open
            circuit.opened_at = now
            circuit.retry_at = retry_at
        return circuit.model_copy()

    async def record_circuit_success(
        self, tenant_id: str, host: str, *, now: datetime
    ) -> Circuit | None:
        circuit = self.circuits.get((tenant_id, host))
        if circuit is None:
            return None
        if circuit.state != CircuitState.open and (
            circuit.state != _CLOSED or circuit.failures != 0
        ):
            circuit.state = _CLOSED
            circuit.failures = 0
            circuit.opened_at = circuit.retry_at = None
            circuit.updated_at = now
        return circuit.model_copy()

    async def claim_circuit_probe(
        self, tenant_id: str, host: str, *, now: datetime, probe_until: datetime
    ) -> bool:
        circuit = self.circuits.get((tenant_id, host))
        if (
            circuit is None
            or circuit.state == _CLOSED
            or (circuit.retry_at is not None and circuit.retry_at > now)
        ):
            return False
        circuit.state = CircuitState.half_open
        circuit.retry_at = probe_until
        circuit.updated_at = now
        return True


def _due(ex: Execution, now: datetime) -> bool:
    return ex.status == _QUEUED and (ex.next_attempt_at is None or ex.next_attempt_at <= now)


def _ready(ex: Execution) -> bool:
    """Queued and not waiting: what ``claim_next`` takes and ``count_queued`` counts."""
    return ex.status == _QUEUED and ex.next_attempt_at is None


_ASCII_UPPER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def _ascii_lower(text: str) -> str:
    """``text`` with ASCII letters lowercased, as SQLite's ``lower()`` (and so its LIKE)
    has it."""
    return text.translate(_ASCII_UPPER)
