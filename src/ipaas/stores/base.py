"""The Store port: the source of truth for every tenant's data and every execution's state.

Rules every implementation follows (the contract suite in ``tests/contracts`` checks them):

* Each method is one atomic transaction. Services compose methods and never hold a
  transaction open; whatever must be atomic is a single method here.
* Every method that reads or writes tenant data takes ``tenant_id`` and filters on it, so a
  row of tenant B is invisible (``None`` / ``False`` / absent from lists) to tenant A. The
  only unscoped reads are the entry points that *establish* a tenant: login by email, a
  bearer token by its hash, the public webhook intake by its unguessable workflow id,
  the scheduler's list of scheduled workflows (each carries its ``tenant_id``, which the
  executions it creates inherit), and the engine's list of circuits that are not closed
  (each carries its ``tenant_id``; every process keeps them to fail fast without a query).
* Terminal execution states are never overwritten.
* Timestamps are timezone-aware UTC on the way in and on the way out.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from ipaas.circuits.models import Circuit
from ipaas.credentials.models import Credential
from ipaas.executions.models import Execution, ExecutionStatus, StepRun
from ipaas.tenants.models import ApiToken, Role, Tenant, TenantLimits, User
from ipaas.workflows.models import Trigger, Workflow, WorkflowDefinition, WorkflowVersion


class DuplicateError(Exception):
    """A unique key (an email, an execution's ``dedup_key``) already exists."""


class SchemaBehind(Exception):
    """The database's schema is older than this code's (``found`` is ``None`` when it has
    none yet): ``ipaas migrate`` has not run since this version was installed."""

    def __init__(self, found: str | None, expected: str) -> None:
        self.found = found
        self.expected = expected
        at = "has no schema" if found is None else f"is at schema revision {found}"
        super().__init__(
            f"the database {at}; this version of ipaas needs {expected}: run `ipaas migrate` "
            "(`ipaas serve` without --no-migrate runs it too)"
        )


@dataclass(frozen=True, slots=True)
class QueueVacuum:
    """What ``Store.vacuum_queue`` found, and did."""

    #: Dead row versions of the execution table (PostgreSQL's statistics, approximate).
    dead: int
    #: Whether a VACUUM ran.
    vacuumed: bool
    #: Why not, when it did not: ``busy`` (another VACUUM of the table was under way, and
    #: clears the dead rows), ``not_owner`` (only the table's owner may vacuum it).
    skipped: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionPage:
    items: list[Execution]
    #: ``(created_at, id)`` of the last item when more rows follow, else ``None``.
    next_key: tuple[datetime, str] | None


#: Minutes ``Store.execution_figures`` counts per status.
FIGURE_MINUTES = 60


@dataclass(frozen=True, slots=True)
class ExecutionFigures:
    """A tenant's executions created since a moment, aggregated by the store (the console's
    dashboard): no row is read into Python."""

    #: ``(minute, status, count)``: minute ``i`` holds executions created in
    #: ``[since + i min, since + (i + 1) min)``; the last one also everything later.
    per_minute: list[tuple[int, ExecutionStatus, int]]
    #: ``(workflow_id, failed or timed out, all)``.
    per_workflow: list[tuple[str, int, int]]
    #: Seconds from first start to the end, of every finished one, ascending.
    durations_s: list[float]


@dataclass(frozen=True, slots=True)
class Reaped:
    """What one reaper pass changed."""

    requeued: list[str]
    timed_out: list[str]


@dataclass(frozen=True, slots=True)
class CancelledPending:
    """What ``Store.cancel_pending`` changed: how many queued executions it cancelled, and
    the running ones it flagged (their workers are told to stop them)."""

    cancelled: int
    stopping: list[str]


@dataclass(frozen=True, slots=True)
class QueueStats:
    """The work waiting and stuck, for operators' metrics (all tenants)."""

    #: Queued executions ready to run (not waiting for a ``next_attempt_at``).
    queued: int
    #: ``created_at`` of the oldest of those.
    oldest_due_at: datetime | None
    #: Running executions whose lease expired: their worker died; the reaper takes them.
    lease_expired: int
    #: Queued executions waiting for a ``next_attempt_at`` (a retry's backoff, a delay).
    waiting: int = 0


@dataclass(frozen=True, slots=True)
class FinishedExecution:
    status: ExecutionStatus
    finished_at: datetime
    #: ``finished_at - started_at`` (0 when it never started: cancelled while queued).
    duration_s: float


@dataclass(frozen=True, slots=True)
class RecentRun:
    """One of a workflow's latest executions, as the console's workflow list shows it."""

    id: str
    status: ExecutionStatus
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PendingAlert:
    """A failure the alert pass dealt with (``Store.settle_alerts``): the failed execution
    as ``pending_alerts`` read it, and the execution of its error workflow to create, or
    ``None`` when there is none to run."""

    failed: Execution
    alert: Execution | None


class MemberChange(StrEnum):
    """What ``Store.change_member`` did."""

    done = "done"
    not_found = "not_found"
    last_owner = "last_owner"


@dataclass(frozen=True, slots=True)
class AlertWindow:
    """The pacing of one workflow's failure alerts: when its last alert went out, and the
    failures held since (``held``, the latest ``held_execution_id``) for its next one."""

    workflow_id: str
    tenant_id: str
    last_alert_at: datetime
    held: int
    held_execution_id: str | None


@dataclass(frozen=True, slots=True)
class PendingDigest:
    """A window whose digest the alert pass dealt with (``Store.settle_alert_digests``): the
    window as ``due_alert_digests`` read it, and the alert execution for its held failures,
    or ``None`` when there is none to run."""

    window: AlertWindow
    alert: Execution | None


@dataclass(frozen=True, slots=True)
class ScheduledWorkflow:
    """What the scheduler reads of a schedule workflow each second: not its steps, whose
    JSON was most of the read (1,000 schedules: 25 ms a pass whole)."""

    id: str
    tenant_id: str
    version: int
    trigger: Trigger
    updated_at: datetime


class Store(Protocol):
    async def startup(self) -> None:
        """Open connections; the schema must already exist (``ipaas migrate``)."""

    async def shutdown(self) -> None: ...

    async def ping(self) -> bool:
        """True when the backing database answers."""

    async def clock_offset_s(self) -> float | None:
        """Seconds the database server's clock is ahead of this process's (negative:
        behind), to within half a round trip; ``None`` where the database has no clock of
        its own (SQLite, memory: this process's is the only one)."""

    @property
    def writes_in_order(self) -> bool:
        """True when a write called after another is applied after it even while the first
        is still under way (one writer: SQLite's thread, the memory store's event loop).
        The worker then starts the next execution as soon as an execution's last write is
        handed over; elsewhere it waits for that write (a claim could not count it yet)."""
        ...

    # -- tenants, users, tokens -------------------------------------------------------------
    async def create_tenant(
        self, tenant: Tenant, user: User, token: ApiToken, *, first: bool = False
    ) -> bool:
        """Sign-up in one transaction. Raises ``DuplicateError`` if the email is taken.

        With ``first``, only while the store holds no tenant: ``False``, nothing written,
        once one exists. Of concurrent first sign-ups exactly one gets in (the check and the
        insert are one step against the others)."""

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        """The tenant with its limit overrides (the intake reads it through a short cache)."""

    async def set_tenant_limits(self, tenant_id: str, limits: TenantLimits) -> bool:
        """Replace all of the tenant's limit overrides. False when the tenant is unknown."""

    async def get_user_by_email(self, email: str) -> User | None:
        """Unscoped: login establishes the tenant. Emails compare case-insensitively."""

    async def get_user(self, tenant_id: str, user_id: str) -> User | None: ...

    async def list_users(self, tenant_id: str) -> list[User]:
        """The tenant's users (members, invited ones too), oldest first."""

    async def create_user(self, user: User) -> None:
        """Insert a user of an existing tenant (an invitation); ``DuplicateError("email")``
        when any tenant's user has that email."""

    async def accept_invite(
        self, invite_hash: str, password_hash: str, token: ApiToken, *, now: datetime
    ) -> User | None:
        """In one transaction: the user whose open invitation has ``invite_hash`` and expires
        after ``now`` gets ``password_hash``, the invitation is closed, and ``token`` (its
        first session; ``token.user_id`` and ``tenant_id`` are set to the user's) is
        inserted. ``None`` (nothing written) when no such invitation is open. Unscoped: the
        invitation establishes the tenant."""

    async def change_member(
        self, tenant_id: str, user_id: str, *, role: Role | None
    ) -> MemberChange:
        """In one transaction, serialized with every other change of the tenant's members:
        set the user's ``role``, or remove the user (``role=None``) with every token it
        holds (its sessions and the API tokens it made). ``last_owner`` (nothing written)
        when that would leave the tenant without an owner who has accepted."""

    async def change_password(
        self,
        tenant_id: str,
        user_id: str,
        password_hash: str,
        *,
        keep_token_id: str | None,
        at: datetime,
    ) -> int | None:
        """In one transaction: replace the user's password hash (closing an open
        invitation: its link must not set another one), and revoke (at ``at``)
        the user's unrevoked session tokens (``ApiToken.session``: made with the password),
        all but ``keep_token_id``.
        ``None`` when the tenant has no such user, else how many tokens were revoked."""

    async def get_token_by_hash(self, token_hash: str) -> ApiToken | None:
        """Unscoped: authentication establishes the tenant. Revoked tokens are returned too."""

    async def create_token(self, token: ApiToken) -> None: ...

    async def list_tokens(self, tenant_id: str, *, now: datetime) -> list[ApiToken]:
        """Live tokens: unrevoked and unexpired at ``now``, newest first."""

    async def revoke_token(self, tenant_id: str, token_id: str, revoked_at: datetime) -> bool:
        """False when no unrevoked token of this tenant has that id."""

    # -- credentials --------------------------------------------------------------------------
    async def create_credential(self, credential: Credential) -> None: ...

    async def get_credential(self, tenant_id: str, credential_id: str) -> Credential | None: ...

    async def get_credentials(
        self, tenant_id: str, credential_ids: Sequence[str]
    ) -> dict[str, Credential]:
        """The tenant's credentials among ``credential_ids``, keyed by id (missing ones absent)."""

    async def list_credentials(self, tenant_id: str) -> list[Credential]:
        """Newest first."""

    async def delete_credential(self, tenant_id: str, credential_id: str) -> bool: ...

    async def update_credential(
        self,
        tenant_id: str,
        credential_id: str,
        *,
        name: str | None = None,
        secret_ciphertext: str | None = None,
    ) -> bool:
        """Replace the credential's name and/or secret (``None``: keep it); its type and
        id stay. False when the tenant has no such credential."""

    async def replace_credential_secret(
        self, tenant_id: str, credential_id: str, *, old: str, new: str
    ) -> bool:
        """Set the credential's ``secret_ciphertext`` to ``new`` if it is still ``old`` (a
        re-encryption under another key); False, and nothing changed, otherwise."""

    # -- workflows ----------------------------------------------------------------------------
    async def create_workflow(self, workflow: Workflow) -> None:
        """Insert the workflow and its version ``workflow.version`` (normally 1)."""

    async def get_workflow(self, tenant_id: str, workflow_id: str) -> Workflow | None: ...

    async def get_workflow_for_intake(self, workflow_id: str) -> Workflow | None:
        """Unscoped: the public webhook URL carries only the (unguessable) workflow id."""

    async def list_workflows(
        self,
        tenant_id: str,
        *,
        before: tuple[datetime, str] | None = None,
        limit: int | None = None,
    ) -> list[Workflow]:
        """Newest first (by ``created_at``, then ``id``): those before the ``(created_at,
        id)`` key ``before`` if given, at most ``limit`` of them if given."""

    async def workflow_names(self, tenant_id: str) -> dict[str, str]:
        """Every workflow's name by id, newest first: the console's labels and filters,
        without reading (and parsing) every definition."""

    async def list_scheduled_workflows(
        self, ids: Collection[str] | None = None
    ) -> list[ScheduledWorkflow]:
        """Unscoped: the active workflows of every tenant whose trigger type is ``schedule``,
        oldest first. The scheduler takes the tenant from each workflow, as intake does.
        With ``ids``, only those of them (any number of ids)."""

    async def scheduled_workflow_stamps(self) -> list[tuple[str, datetime]]:
        """Unscoped: ``(id, updated_at)`` of the workflows ``list_scheduled_workflows``
        returns, in its order. Every save of a workflow changes its ``updated_at``, so the
        scheduler reads whole only the schedules that are new or changed since its last
        pass (10,000 schedules: ~0.1-0.2 s a pass read whole, every second)."""

    async def update_workflow(
        self, workflow: Workflow, *, new_version: bool, base_updated_at: datetime | None = None
    ) -> bool:
        """Save name/active/trigger/steps/version/updated_at of an existing workflow of
        ``workflow.tenant_id``; with ``new_version`` also insert the version row
        ``workflow.version``. False when the workflow does not exist for that tenant.

        With ``base_updated_at`` (the ``updated_at`` of the workflow the change was made
        from), a compare-and-set: also False, and nothing saved, when the stored workflow's
        ``updated_at`` is no longer that, i.e. another edit was saved in between."""

    async def delete_workflow(
        self, tenant_id: str, workflow_id: str, *, base_updated_at: datetime | None = None
    ) -> bool:
        """Delete the workflow (its versions and executions stay readable by id). False when
        it does not exist for that tenant, or, with ``base_updated_at``, when its stored
        ``updated_at`` is no longer that (nothing deleted)."""

    async def get_workflow_version(
        self, tenant_id: str, workflow_id: str, version: int
    ) -> WorkflowDefinition | None:
        """The definition a given version ran, even after later updates or deletion."""

    async def list_workflow_versions(
        self, tenant_id: str, workflow_id: str, *, before: int | None = None, limit: int
    ) -> list[WorkflowVersion]:
        """Up to ``limit`` saved versions, newest first; with ``before``, those older than
        that version only (the next page)."""

    # -- executions ---------------------------------------------------------------------------
    async def create_execution(self, execution: Execution) -> None:
        """Insert a ``queued`` execution (the event is stored in it).

        ``dedup_key``, when set, is unique per workflow: raises ``DuplicateError`` (and writes
        nothing) if an execution of ``execution.workflow_id`` already has that key, whatever
        its status or tenant. Executions without a key never collide."""

    async def create_execution_once(
        self, execution: Execution, *, expired_before: datetime
    ) -> str | None:
        """Insert a ``queued`` execution whose ``dedup_key`` is set, unless the key is taken.

        When another execution of ``execution.workflow_id`` holds the key and was created at
        or after ``expired_before``, nothing is written and that execution's id is returned
        (also when both callers race on two processes: the unique key decides). A holder
        created before ``expired_before`` gives the key up (its ``dedup_key`` becomes NULL)
        in the same transaction as the insert. Returns ``None`` when inserted."""

    async def get_execution(self, tenant_id: str, execution_id: str) -> Execution | None: ...

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
        """Newest first by ``(created_at, id)``; ``before`` is the exclusive keyset cursor,
        ``since`` the earliest ``created_at`` listed (inclusive); ``trigger_contains`` keeps
        the executions whose trigger, as JSON text, holds it, ignoring case (SQLite's and
        the memory store's: of ASCII letters in the data), ``%`` and ``_`` themselves."""

    async def recent_runs(
        self, tenant_id: str, workflow_ids: Sequence[str], *, limit: int
    ) -> dict[str, list[RecentRun]]:
        """The latest ``limit`` executions of each of the tenant's ``workflow_ids``, newest
        first, in one read (id, status and ``created_at`` only); a workflow with none is
        absent."""

    async def execution_figures(self, tenant_id: str, *, since: datetime) -> ExecutionFigures:
        """Counts per minute and status, per workflow, and the run durations of the tenant's
        executions created at or after ``since`` (``FIGURE_MINUTES`` minute buckets)."""
        ...

    async def count_queued(self, tenant_id: str | None = None) -> int:
        """Executions in ``queued`` and ready to run (of one tenant, or all): not those
        waiting for a ``next_attempt_at``, which hold no worker and are no backlog."""

    async def queue_stats(self, *, now: datetime) -> QueueStats:
        """Unscoped, for the operator's ``/metrics``: queued, oldest due, expired leases."""

    async def list_finished(
        self, tenant_id: str, *, since: datetime, limit: int
    ) -> list[FinishedExecution]:
        """The tenant's executions that reached a terminal state at or after ``since``,
        newest first, at most ``limit``."""

    # -- retention ----------------------------------------------------------------------------
    async def list_tenant_ids(self) -> list[str]:
        """Unscoped: every tenant's id (retention and ``ipaas secrets rotate`` walk them one
        by one)."""

    async def keep_horizon(self, tenant_id: str, keep: int) -> datetime | None:
        """The finish time of the tenant's ``keep``-th newest finished execution when it has
        more than ``keep`` of them, else ``None``: pruning those finished before it keeps at
        least the newest ``keep`` (more only where finish times tie)."""

    async def prune_executions(
        self, tenant_id: str, *, finished_before: datetime, limit: int
    ) -> int:
        """Delete up to ``limit`` of the tenant's executions finished before
        ``finished_before`` (and their step runs), oldest first. Queued and running
        executions are never touched. Returns how many were deleted; fewer than ``limit``
        means none is left to prune."""

    async def prune_tokens(self, *, ended_before: datetime, limit: int) -> int:
        """Delete up to ``limit`` tokens, any tenant's, revoked or expired before
        ``ended_before``. Returns how many; fewer than ``limit`` means none is left."""

    async def compact(self) -> None:
        """Give the space of deleted rows back to the file system where the database does
        not do it itself (SQLite: incremental vacuum and a WAL checkpoint)."""

    async def vacuum_queue(self, *, min_dead: int) -> QueueVacuum | None:
        """Clear the dead row versions that claims and finishes leave in the execution
        table's queue indexes once ``min_dead`` of them have piled up, where the database
        keeps them until a VACUUM (PostgreSQL). ``None``: nothing to do (elsewhere always;
        there, while fewer are dead)."""

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
        """Compare-and-set ``queued -> running`` for one execution.

        Sets ``lease_owner``/``lease_expires_at``, ``attempt += 1``, ``started_at`` and
        ``deadline_at = started_at + timeout_s`` when they are still unset, and clears
        ``next_attempt_at``. Returns the claimed execution, or ``None`` if it is not
        ``queued`` (already claimed, terminal, unknown) or waits for a ``next_attempt_at``
        after ``now``, so a duplicate or early delivery is harmless.

        Also ``None`` (and the execution stays ``queued``) when its tenant already has its
        cap of executions ``running``: the tenant's ``max_concurrency``, else
        ``tenant_cap`` (``None``: no cap). The cap is exact across concurrent callers.
        """

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
        """Claim up to ``limit`` ``queued`` executions ready to run (no ``next_attempt_at``:
        a wait that has come is made ready by ``take_due_retries``, so a claim never reads
        past the waiting ones), as ``claim_execution``, oldest first within a tenant and fair across
        tenants: each one goes to the tenant with the fewest running (ties: the older
        waiting execution), and no tenant passes its cap (as in ``claim_execution``). Two
        concurrent callers never receive the same execution."""

    async def renew_leases(
        self, execution_ids: Sequence[str], *, owner: str, lease_until: datetime
    ) -> set[str]:
        """Heartbeat: extend the leases this owner still holds on running executions.
        Returns the ids whose lease was extended (a missing id means the lease was lost)."""

    async def cancel_requested(self, execution_ids: Sequence[str]) -> set[str]:
        """Which of these running executions a user asked to cancel."""

    async def queued_among(self, execution_ids: Sequence[str]) -> set[str]:
        """Which of these executions are ``queued`` (a worker's filter for ids read from the
        queue: one read instead of a refused claim per id already taken from the store)."""

    async def record_step(self, step: StepRun) -> None:
        """Insert or replace the step run ``(execution_id, step_id, attempt)`` (a checkpoint)."""

    async def list_step_runs(self, tenant_id: str, execution_id: str) -> list[StepRun]:
        """Ordered by position, then by start (attempts, and a ``for_each`` step's items)."""

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
        """``running -> status`` (terminal) if ``owner`` still holds the lease; records ``step``
        in the same transaction. False (and nothing written) otherwise."""

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
        """``finish_execution``, and in the same write, where the store can (not where it
        ``writes_in_order``: there the worker's next claim is already cheap), claim for
        ``owner`` the finished execution's tenant's oldest due execution when no other
        tenant has work queued: the tenant's running count stays as it was, so its cap holds
        without counting. ``(finished, claimed)``; nothing is claimed when not finished."""

    async def release_execution(self, execution_id: str, *, owner: str) -> bool:
        """``running -> queued`` for a graceful shutdown; clears the lease."""

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
        """A step will be retried, or a delay waits: ``running -> queued`` with
        ``next_attempt_at``, lease cleared, ``step`` recorded and, when given, the
        execution's ``deadline_at`` moved, in one transaction, if ``owner`` still holds the
        lease (False and nothing written otherwise). When a cancel was requested meanwhile
        the execution becomes ``cancelled`` (at ``now``) instead."""

    async def take_due_retries(self, *, now: datetime, limit: int) -> list[str]:
        """Queued executions whose ``next_attempt_at`` has come: clears it (they are now
        ordinary queued work) and returns their ids, each to one caller only."""

    async def requeue_execution(
        self, tenant_id: str, execution_id: str, *, statuses: Sequence[ExecutionStatus]
    ) -> Execution | None:
        """A manual retry: an execution in one of ``statuses`` goes back to ``queued`` with
        ``error``, ``started_at``, ``finished_at``, ``deadline_at``, ``next_attempt_at`` and
        ``cancel_requested`` cleared; step runs are kept. Returns it, or ``None`` when it is
        unknown to the tenant, not in one of ``statuses`` or of a deleted workflow (nothing
        written)."""

    async def request_cancel(
        self, tenant_id: str, execution_id: str, *, now: datetime
    ) -> Execution | None:
        """A ``queued`` execution becomes ``cancelled`` at once; a ``running`` one gets
        ``cancel_requested`` (its worker finishes it as ``cancelled``); a terminal one is left
        as it is. Returns the execution after the change, ``None`` if unknown."""

    async def cancel_pending(
        self, tenant_id: str, *, workflow_id: str | None, now: datetime
    ) -> CancelledPending:
        """``request_cancel`` for every unfinished execution of the tenant (of one workflow,
        or all), in two statements whatever their number: ``queued`` ones (a retry waiting
        for its time too) become ``cancelled`` at once, ``running`` ones get
        ``cancel_requested``. Queued ones first, so one claimed in between is flagged."""

    async def reap(self, *, now: datetime) -> Reaped:
        """Crash recovery. Running or queued executions whose ``deadline_at`` has passed
        become ``timed_out`` (running ones only once their lease expired, so the live
        worker records it first). Running executions whose lease expired go back to
        ``queued``, or to ``cancelled`` if a cancel was requested."""

    async def pending_alerts(self, *, limit: int) -> list[Execution]:
        """Up to ``limit`` failures (``failed``, ``timed_out``: every finish and reaper
        timeout that records one marks it) not yet settled, oldest first, all tenants."""
        ...

    async def settle_alerts(
        self, alerts: Sequence[PendingAlert], *, now: datetime, interval: timedelta
    ) -> list[Execution]:
        """In one transaction: each failure still pending and unchanged since it was read
        (same ``finished_at``) is settled, and its alert execution, if any, created
        ``queued``. The alerts created come back; a failure another process settled first
        creates nothing, so each failure has at most one alert.

        With an ``interval``, an alert is created only when its failed workflow's window
        holds nothing and its last alert is at least ``interval`` before ``now`` (or there
        is none); the window then records ``now``. Otherwise the failure is held: counted
        in the window, the latest held, for its digest (``due_alert_digests``)."""
        ...

    async def due_alert_digests(self, *, last_before: datetime, limit: int) -> list[AlertWindow]:
        """Up to ``limit`` windows (all tenants) holding failures whose last alert is at or
        before ``last_before``, the longest-waiting first."""
        ...

    async def settle_alert_digests(
        self, digests: Sequence[PendingDigest], *, now: datetime
    ) -> list[Execution]:
        """In one transaction: each window unchanged since it was read (nothing held or
        alerted since) is emptied and records ``now`` as its last alert, and its alert
        execution, if any, is created ``queued``. The alerts created come back."""
        ...

    async def queued_ids(self, *, limit: int) -> list[str]:
        """Oldest queued execution ids (to re-enqueue after a restart); executions waiting
        for a later ``next_attempt_at`` are left out."""

    # -- circuit breakers ---------------------------------------------------------------------
    async def list_circuits(self, tenant_id: str) -> list[Circuit]:
        """The tenant's circuits, by host."""

    async def get_circuit(self, tenant_id: str, host: str) -> Circuit | None: ...

    async def list_unclosed_circuits(self) -> list[Circuit]:
        """Unscoped: every tenant's open and half-open circuits (each carries its tenant)."""

    async def record_circuit_failure(
        self, tenant_id: str, host: str, *, now: datetime, threshold: int, retry_at: datetime
    ) -> Circuit:
        """One more consecutive failure (the circuit is created on the first). A closed
        circuit that reaches ``threshold`` failures, and a half-open one (its probe
        failed), become ``open`` with ``opened_at = now`` and ``retry_at``; an open one
        stays as it is. Atomic: concurrent failures are all counted."""

    async def record_circuit_success(
        self, tenant_id: str, host: str, *, now: datetime
    ) -> Circuit | None:
        """A call went through: a closed circuit's count is reset, a half-open one closes
        (its probe succeeded); an open one is left alone (its cooldown decides). Returns the
        circuit as it is now, ``None`` if there is none."""

    async def claim_circuit_probe(
        self, tenant_id: str, host: str, *, now: datetime, probe_until: datetime
    ) -> bool:
        """Compare-and-set: an open circuit whose ``retry_at`` has come (or a half-open one
        whose probe lapsed) becomes ``half_open`` with ``retry_at = probe_until``. True for
        the one caller that may send the probe."""
