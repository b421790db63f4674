"""The SQL store's statements, portable Core built once at import.

Building and cache-keying a Core statement costs more than running it on SQLite, and these
run for every execution, so each is built here once with named parameters bound at
execution. Parameter names start with ``p_`` because SQLAlchemy reserves column names for the
SET clause. The few statements with a dialect-specific part are built per database by
``SqlStore.startup`` from the fragments in ``engine.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ipaas.circuits.models import CircuitState
from ipaas.executions.models import ExecutionStatus
from ipaas.stores.base import FIGURE_MINUTES
from ipaas.stores.sql import tables as t
from ipaas.tenants.models import Role
from ipaas.workflows.models import TriggerType

EX = t.execution
LockClaimable = Callable[[sa.Select[tuple[str]]], sa.Select[tuple[str]]]
CI = t.circuit
CLOSED = CircuitState.closed.value
OPEN = CircuitState.open.value
HALF_OPEN = CircuitState.half_open.value


def _constant(value: str) -> sa.ColumnElement[str]:
    """``value`` written into the SQL, not sent as a parameter. asyncpg prepares every
    statement, and PostgreSQL switches a prepared statement to a generic plan (made without
    the parameters' values) after a few runs: with the status a parameter, that plan cannot
    tell how rare ``queued`` and ``running`` are among the history, and reads the whole
    table where an index holds the few rows (tests/contracts/test_pg_plans.py)."""
    return sa.literal_column(f"'{value}'", sa.String())


#: ``LIMIT 1`` written into the SQL: a parameter's limit is guessed as a tenth of the table in a
#: generic plan, so PostgreSQL kept planning the finish anew at every call (~300 us each).
ONE = sa.literal_column("1", sa.Integer())
QUEUED = _constant(ExecutionStatus.queued.value)
RUNNING = _constant(ExecutionStatus.running.value)
CANCELLED = _constant(ExecutionStatus.cancelled.value)
CANCELLED_BY_USER = "cancelled by user"
TIMED_OUT = "execution timed out"
STEP_KEY = ("execution_id", "step_id", "attempt")
VERSION_KEY = ("workflow_id", "version")
DEDUP_KEY = ("workflow_id", "dedup_key")


def p(name: str) -> sa.BindParameter[Any]:
    return sa.bindparam(name)


def p_str(name: str) -> sa.BindParameter[str]:
    """Typed where no column gives it a type (in a tuple), so the dialect's string handling
    applies (on PostgreSQL, U+0000 replaced: ``engine._without_nul_on``)."""
    return sa.bindparam(name, type_=sa.String())


def p_at(name: str) -> sa.BindParameter[datetime]:
    # Typed, so CASE/COALESCE branches get the UTC conversion too.
    return sa.bindparam(name, type_=t.UtcDateTime())


def scoped(table: sa.Table) -> sa.ColumnElement[bool]:
    """The tenant filter, built here only; every scoped statement binds ``p_tenant_id``."""
    return table.c.tenant_id == p("p_tenant_id")


def _ids() -> sa.BindParameter[Any]:
    return sa.bindparam("p_ids", expanding=True)


def _limit() -> sa.BindParameter[int]:
    return sa.bindparam("p_limit", type_=sa.Integer())


LEASE_EXPIRED = sa.and_(
    EX.c.status == RUNNING,
    sa.or_(EX.c.lease_expires_at.is_(None), EX.c.lease_expires_at <= p_at("p_now")),
)
CLAIM = {
    "status": RUNNING,
    "lease_owner": p("p_owner"),
    "lease_expires_at": p_at("p_lease_until"),
    "attempt": EX.c.attempt + 1,
    "next_attempt_at": None,
    "started_at": sa.func.coalesce(EX.c.started_at, p_at("p_now")),
    # A first claim fixes the deadline (``p_deadline`` = now + timeout); later claims keep
    # it. The odd row with a preset ``started_at`` but no deadline is completed with
    # ``FILL_DEADLINE``, which keeps date arithmetic (it differs per dialect) out of SQL.
    "deadline_at": sa.case(
        (sa.and_(EX.c.deadline_at.is_(None), EX.c.started_at.is_(None)), p_at("p_deadline")),
        else_=EX.c.deadline_at,
    ),
}
_ENDED = {"finished_at": p_at("p_now"), "lease_owner": None, "lease_expires_at": None}
#: The lease holder's guard, by primary key. Here the status is a parameter, unlike everywhere
#: else: written into the SQL it matches the running rows' partial index, which PostgreSQL then
#: read whole (dead entries and all) in place of the primary key whenever statistics showed
#: few running rows.
_HELD = sa.and_(
    EX.c.id == p("p_id"),
    EX.c.status == sa.bindparam("p_held", ExecutionStatus.running.value, type_=sa.String()),
    EX.c.lease_owner == p("p_owner"),
)
IS_QUEUED = EX.c.status == QUEUED
#: Queued and not waiting: the rows of the queue's index (``tables.READY``), which claims
#: read. A wait that has come stays out of it until the due pass clears its
#: ``next_attempt_at`` (``HAS_COME``, about once a second), so a claim never reads past
#: executions that wait (a delay of days, a retry's backoff).
IS_READY = sa.and_(IS_QUEUED, EX.c.next_attempt_at.is_(None))
#: Queued and waiting for a ``next_attempt_at`` (read through that column's index).
IS_WAITING = sa.and_(IS_QUEUED, EX.c.next_attempt_at.is_not(None))
#: Queued and not waiting for a later ``next_attempt_at``: a claim by id (a job from the
#: queue) takes a wait that has come without waiting for the due pass.
IS_DUE = sa.and_(
    IS_QUEUED,
    sa.or_(EX.c.next_attempt_at.is_(None), EX.c.next_attempt_at <= p_at("p_now")),
)

INSERT_TENANT = sa.insert(t.tenant)
INSERT_USER = sa.insert(t.app_user)
INSERT_TOKEN = sa.insert(t.api_token)
INSERT_CREDENTIAL = sa.insert(t.credential)
INSERT_WORKFLOW = sa.insert(t.workflow)
INSERT_VERSION = sa.insert(t.workflow_version)
INSERT_EXECUTION = sa.insert(EX)

GET_TENANT = sa.select(t.tenant).where(t.tenant.c.id == p("p_tenant_id"))
SET_TENANT_LIMITS = (
    sa.update(t.tenant)
    .where(t.tenant.c.id == p("p_tenant_id"))
    .values(
        rate_limit=p("p_rate_limit"),
        rate_burst=p("p_rate_burst"),
        max_queued=p("p_max_queued"),
        max_concurrency=p("p_max_concurrency"),
    )
)
GET_USER = sa.select(t.app_user).where(t.app_user.c.email == p("p_email"))
GET_USER_BY_ID = sa.select(t.app_user).where(scoped(t.app_user), t.app_user.c.id == p("p_id"))
LIST_USERS = (
    sa.select(t.app_user)
    .where(scoped(t.app_user))
    .order_by(t.app_user.c.created_at, t.app_user.c.id)
)
#: Unscoped: the invitation establishes the tenant. Closes it, so it is accepted once.
ACCEPT_INVITE = (
    sa.update(t.app_user)
    .where(
        t.app_user.c.invite_hash == p("p_invite_hash"),
        t.app_user.c.invite_expires_at > p_at("p_now"),
    )
    .values(password_hash=p("p_password_hash"), invite_hash=None, invite_expires_at=None)
    .returning(*t.app_user.c)
)
#: A member change's first statement: it waits for the tenant's other member changes to
#: commit (the row's lock on PostgreSQL; SQLite has one writer). No key column changes, so
#: the inserts that refer to the tenant (their key share lock) do not wait for it.
LOCK_TENANT = (
    sa.update(t.tenant).where(t.tenant.c.id == p("p_tenant_id")).values(name=t.tenant.c.name)
)
#: Another owner of the tenant who has accepted: one keeps it owned.
OTHER_OWNER = sa.select(
    sa.exists().where(
        scoped(t.app_user),
        t.app_user.c.id != p("p_id"),
        t.app_user.c.role == Role.owner.value,
        t.app_user.c.invite_hash.is_(None),
    )
)
SET_ROLE = (
    sa.update(t.app_user)
    .where(scoped(t.app_user), t.app_user.c.id == p("p_id"))
    .values(role=p("p_role"))
)
DELETE_USER_TOKENS = sa.delete(t.api_token).where(
    scoped(t.api_token), t.api_token.c.user_id == p("p_id")
)
DELETE_USER = sa.delete(t.app_user).where(scoped(t.app_user), t.app_user.c.id == p("p_id"))
#: A password set (by the operator's reset, for one) closes an open invitation too: the link
#: must not set another one later.
SET_PASSWORD = (
    sa.update(t.app_user)
    .where(scoped(t.app_user), t.app_user.c.id == p("p_id"))
    .values(password_hash=p("p_password_hash"), invite_hash=None, invite_expires_at=None)
)
_keep = sa.bindparam("p_keep", type_=sa.String())  # typed: asyncpg must know NULL's type
END_SESSIONS = (
    sa.update(t.api_token)
    .where(
        scoped(t.api_token),
        t.api_token.c.user_id == p("p_user_id"),
        t.api_token.c.revoked_at.is_(None),
        t.api_token.c.session.is_(True),
        # NULL (no token to keep) keeps none: ``id != NULL`` would match nothing.
        sa.or_(_keep.is_(None), t.api_token.c.id != _keep),
    )
    .values(revoked_at=p_at("p_revoked_at"))
)
GET_TOKEN = sa.select(t.api_token).where(t.api_token.c.token_hash == p("p_hash"))
_TOKEN = t.api_token.c
LIST_TOKENS = (
    sa.select(t.api_token)
    .where(
        scoped(t.api_token),
        _TOKEN.revoked_at.is_(None),
        sa.or_(_TOKEN.expires_at.is_(None), _TOKEN.expires_at > p_at("p_now")),
    )
    .order_by(_TOKEN.created_at.desc(), _TOKEN.id.desc())
)
# Maintenance, every tenant's (as LIST_TENANT_IDS): tokens that authenticate nothing any more.
PRUNE_TOKENS = sa.delete(t.api_token).where(
    _TOKEN.id.in_(
        sa.select(_TOKEN.id)
        .where(sa.or_(_TOKEN.revoked_at < p_at("p_before"), _TOKEN.expires_at < p_at("p_before")))
        .limit(_limit())
    )
)
REVOKE_TOKEN = (
    sa.update(t.api_token)
    .where(scoped(t.api_token), t.api_token.c.id == p("p_id"), t.api_token.c.revoked_at.is_(None))
    .values(revoked_at=p_at("p_revoked_at"))
)
GET_CREDENTIALS = sa.select(t.credential).where(scoped(t.credential), t.credential.c.id.in_(_ids()))
LIST_CREDENTIALS = (
    sa.select(t.credential)
    .where(scoped(t.credential))
    .order_by(t.credential.c.created_at.desc(), t.credential.c.id.desc())
)
REPLACE_CREDENTIAL_SECRET = (
    sa.update(t.credential)
    .where(
        scoped(t.credential),
        t.credential.c.id == p("p_id"),
        t.credential.c.secret_ciphertext == p("p_old"),
    )
    .values(secret_ciphertext=p("p_new"))
)
UPDATE_CREDENTIAL = sa.update(t.credential).where(
    scoped(t.credential), t.credential.c.id == p("p_id")
)
DELETE_CREDENTIAL = sa.delete(t.credential).where(
    scoped(t.credential), t.credential.c.id == p("p_id")
)
GET_WORKFLOW = sa.select(t.workflow).where(scoped(t.workflow), t.workflow.c.id == p("p_id"))
GET_WORKFLOW_FOR_INTAKE = sa.select(t.workflow).where(t.workflow.c.id == p("p_id"))
LIST_WORKFLOWS = (
    sa.select(t.workflow)
    .where(scoped(t.workflow))
    .order_by(t.workflow.c.created_at.desc(), t.workflow.c.id.desc())
)
WORKFLOW_NAMES = (
    sa.select(t.workflow.c.id, t.workflow.c.name)
    .where(scoped(t.workflow))
    .order_by(t.workflow.c.created_at.desc(), t.workflow.c.id.desc())
)
# Unscoped (the scheduler). The JSON path is portable Core: JSON_EXTRACT on SQLite, ->> on
# PostgreSQL. No index: a full scan of ``workflow`` per scheduler pass is cheap at our sizes.
_WF = t.workflow
_SCHEDULED = sa.and_(
    _WF.c.active.is_(True), _WF.c.trigger["type"].as_string() == TriggerType.schedule.value
)
LIST_SCHEDULED_WORKFLOWS = (
    sa.select(_WF.c.id, _WF.c.tenant_id, _WF.c.version, _WF.c.trigger, _WF.c.updated_at)
    .where(_SCHEDULED)
    .order_by(_WF.c.created_at, _WF.c.id)
)
SCHEDULED_WORKFLOWS_BY_ID = sa.select(
    _WF.c.id, _WF.c.tenant_id, _WF.c.version, _WF.c.trigger, _WF.c.updated_at, _WF.c.created_at
).where(_SCHEDULED, _WF.c.id.in_(_ids()))
SCHEDULED_WORKFLOW_STAMPS = (
    sa.select(_WF.c.id, _WF.c.updated_at).where(_SCHEDULED).order_by(_WF.c.created_at, _WF.c.id)
)
UPDATE_WORKFLOW = (
    sa.update(t.workflow)
    .where(scoped(t.workflow), t.workflow.c.id == p("p_id"))
    .values(
        name=p("p_name"),
        active=p("p_active"),
        version=p("p_version"),
        trigger=sa.bindparam("p_trigger", type_=sa.JSON()),
        steps=sa.bindparam("p_steps", type_=sa.JSON()),
        updated_at=p_at("p_updated_at"),
        error_workflow_id=p("p_error_workflow_id"),
    )
)
# The compare-and-set of an edit: saved only over the row the edit was made from.
UPDATE_WORKFLOW_IF_UNCHANGED = UPDATE_WORKFLOW.where(
    t.workflow.c.updated_at == p_at("p_base_updated_at")
)
DELETE_WORKFLOW = sa.delete(t.workflow).where(scoped(t.workflow), t.workflow.c.id == p("p_id"))
DELETE_WORKFLOW_IF_UNCHANGED = DELETE_WORKFLOW.where(
    t.workflow.c.updated_at == p_at("p_base_updated_at")
)
GET_VERSION = sa.select(t.workflow_version.c.trigger, t.workflow_version.c.steps).where(
    scoped(t.workflow_version),
    t.workflow_version.c.workflow_id == p("p_id"),
    t.workflow_version.c.version == p("p_version"),
)
_VERSIONS = t.workflow_version
LIST_VERSIONS = (
    sa.select(_VERSIONS.c.version, _VERSIONS.c.trigger, _VERSIONS.c.steps, _VERSIONS.c.created_at)
    .where(scoped(_VERSIONS), _VERSIONS.c.workflow_id == p("p_id"))
    .order_by(_VERSIONS.c.version.desc())
    .limit(sa.bindparam("p_limit", type_=sa.Integer()))
)
LIST_VERSIONS_BEFORE = LIST_VERSIONS.where(_VERSIONS.c.version < p("p_before"))
_DEDUP = sa.and_(EX.c.workflow_id == p("p_workflow_id"), EX.c.dedup_key == p("p_dedup_key"))
# An expired holder gives its key up, so the insert that follows in the same transaction
# can take it; on PostgreSQL a concurrent caller waits on the row lock and then no longer
# matches (the key is NULL by then).
RELEASE_EXPIRED_KEY = (
    sa.update(EX).where(_DEDUP, EX.c.created_at < p_at("p_expired_before")).values(dedup_key=None)
)
DEDUP_HOLDER = sa.select(EX.c.id).where(_DEDUP)
GET_EXECUTION = sa.select(EX).where(scoped(EX), EX.c.id == p("p_id"))


@functools.cache
def like_pattern(text: str) -> str:
    """A LIKE pattern that finds ``text`` anywhere, its ``%``, ``_`` and ``\\`` themselves,
    lowered as ``lower()`` lowers the column (PostgreSQL's every letter; SQLite's ASCII
    letters only, so there an uppercase letter beyond ASCII in the data matches itself)."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_executions(
    *,
    workflow: bool,
    status: ExecutionStatus | None,
    before: bool,
    since: bool,
    contains: bool = False,
) -> sa.Select[Any]:
    """A page of the tenant's executions, newest first (``p_limit`` rows), with the filters
    asked for: ``p_workflow_id``, ``p_status``, the keyset ``p_before_at``/``p_before_id``,
    ``p_since``. Filtered by a status that did not succeed, it also names the partial
    index's own predicate, so that both databases read that index (the tenant's few
    failures) rather than the listing index's whole history."""
    query = sa.select(EX).where(scoped(EX))
    if workflow:
        query = query.where(EX.c.workflow_id == p("p_workflow_id"))
    if status is not None:
        query = query.where(EX.c.status == p("p_status"))
        if status.value in t.UNSUCCESSFUL_STATUSES:
            query = query.where(sa.text(t.UNSUCCESSFUL))
    if before:
        # A row-value comparison, so the index's (created_at, id) bounds the scan.
        cursor = sa.tuple_(p_at("p_before_at"), p_str("p_before_id"))
        query = query.where(sa.tuple_(EX.c.created_at, EX.c.id) < cursor)
    if since:
        query = query.where(EX.c.created_at >= p_at("p_since"))
    if contains:
        # The trigger's JSON text, read row by row along the listing's order until a page
        # is found: bound it with ``since`` on a long history (docs/operations.md).
        text = sa.func.lower(sa.cast(EX.c.trigger, sa.Text()))
        query = query.where(text.like(p_str("p_contains"), escape="\\"))
    # One extra row tells whether another page follows, without a COUNT.
    return query.order_by(EX.c.created_at.desc(), EX.c.id.desc()).limit(
        sa.bindparam("p_limit", type_=sa.Integer())
    )


# The console's figures, aggregated in SQL. A minute's bucket is a CASE over bound minute
# edges (``p_m1`` .. ``p_m59``), which needs no dialect's date functions.
_SINCE = sa.and_(scoped(EX), EX.c.created_at >= p_at("p_since"))
_MINUTE = sa.case(
    *((EX.c.created_at < p_at(f"p_m{i}"), i - 1) for i in range(1, FIGURE_MINUTES)),
    else_=FIGURE_MINUTES - 1,
)
_BY_MINUTE = sa.select(_MINUTE.label("minute"), EX.c.status).where(_SINCE).subquery()
FIGURES_PER_MINUTE = sa.select(_BY_MINUTE.c.minute, _BY_MINUTE.c.status, sa.func.count()).group_by(
    _BY_MINUTE.c.minute, _BY_MINUTE.c.status
)
_FAILED_STATUSES = [ExecutionStatus.failed.value, ExecutionStatus.timed_out.value]
_FAILED = sa.case((EX.c.status.in_(_FAILED_STATUSES), 1), else_=0)
FIGURES_PER_WORKFLOW = (
    sa.select(EX.c.workflow_id, sa.func.sum(_FAILED), sa.func.count())
    .where(_SINCE)
    .group_by(EX.c.workflow_id)
)
RUN_FINISHED = sa.and_(_SINCE, EX.c.started_at.is_not(None), EX.c.finished_at.is_not(None))


@functools.lru_cache(maxsize=64)
def recent_runs(workflows: int) -> sa.CompoundSelect[Any]:
    """The latest ``p_limit`` executions of each of ``workflows`` workflows (``p_w0`` ...):
    one ``UNION ALL`` of a limited read per workflow, each a walk of the listing index
    ``(tenant_id, workflow_id, created_at, id)`` that stops after ``p_limit`` rows
    (a window function would number every execution of the workflow first)."""
    return sa.union_all(
        *(
            sa.select(
                sa.select(EX.c.id, EX.c.workflow_id, EX.c.status, EX.c.created_at)
                .where(scoped(EX), EX.c.workflow_id == p(f"p_w{i}"))
                .order_by(EX.c.created_at.desc(), EX.c.id.desc())
                .limit(_limit())
                .subquery()
            )
            for i in range(workflows)
        )
    )


COUNT_QUEUED = sa.select(sa.func.count()).select_from(EX).where(IS_READY)
COUNT_QUEUED_OF_TENANT = COUNT_QUEUED.where(scoped(EX))
# -- fairness: per-tenant caps and round-robin claims (``stores/fairness.py``) ---------------
_RUN = EX.alias("run")
TENANT = t.tenant


def _override_of(tenant_id: sa.ColumnElement[str]) -> sa.ScalarSelect[int | None]:
    """The tenant ``tenant_id``'s own cap (``max_concurrency``), NULL when it has none."""
    return sa.select(TENANT.c.max_concurrency).where(TENANT.c.id == tenant_id).scalar_subquery()


def _cap_of(tenant_id: sa.ColumnElement[str]) -> sa.ColumnElement[int | None]:
    """The tenant's cap: its override, else the caller's default (``p_cap``, NULL: no cap)."""
    return sa.func.coalesce(_override_of(tenant_id), sa.bindparam("p_cap", type_=sa.Integer()))


_CAP = _cap_of(EX.c.tenant_id)


def _running_of(tenant_id: sa.ColumnElement[str]) -> sa.ScalarSelect[int]:
    """How many executions of the tenant ``tenant_id`` (a correlated column) are running."""
    return (
        sa.select(sa.func.count())
        .select_from(_RUN)
        .where(_RUN.c.status == RUNNING, _RUN.c.tenant_id == tenant_id)
        .scalar_subquery()
    )


_RUNNING_OF_ROW_TENANT = _running_of(EX.c.tenant_id)
UNDER_CAP = sa.or_(_CAP.is_(None), _RUNNING_OF_ROW_TENANT < _CAP)


def claim_one(running: sa.ColumnElement[int] | None) -> sa.Update:
    """Claim execution ``p_id`` if due and its tenant is under its cap, in one statement;
    ``running`` counts the tenant's running executions under its claim lock where claims
    can overlap (``Database.running_under_claim_lock``), else a plain count serves."""
    under_cap = UNDER_CAP if running is None else sa.or_(_CAP.is_(None), running < _CAP)
    return (
        sa.update(EX).where(EX.c.id == p("p_id"), IS_DUE, under_cap).values(CLAIM).returning(*EX.c)
    )


# The tenants with work ready, one index probe each on the queue's index (a loose index
# scan): ``SELECT DISTINCT`` would read every queued row, 100,000 of one flooding tenant
# included. Waiting executions are not in that index, so a tenant with only waits is not
# listed until the due pass makes one ready. The
# probes go from the highest tenant id down: each lands on a tenant's newest entries, the
# live ones of a queue taken oldest first, where a probe upwards landed on its oldest,
# behind one dead entry per execution claimed since the last VACUUM (PostgreSQL: 67 of
# this read's 157 buffers after one tenant's 5,000 claims; docs/benchmarks.md).
_NEXT_TENANT = sa.select(sa.func.max(EX.c.tenant_id)).where(IS_READY)
_queued_tenant = sa.select(_NEXT_TENANT.scalar_subquery().label("tenant_id")).cte(
    "queued_tenant", recursive=True
)
_queued_tenant = _queued_tenant.union_all(
    sa.select(
        _NEXT_TENANT.where(EX.c.tenant_id < _queued_tenant.c.tenant_id).scalar_subquery()
    ).where(_queued_tenant.c.tenant_id.is_not(None))
)
QUEUED_TENANTS = sa.select(_queued_tenant.c.tenant_id).where(
    _queued_tenant.c.tenant_id.is_not(None)
)
#: The tenants with work ready, each with its cap override, its running count (on
#: PostgreSQL read without the claim lock: a first guess for sharing the slots, which
#: ``claim_of_tenant`` then checks under the lock; on SQLite exact, in the claim's
#: transaction) and its oldest ready execution's ``created_at`` (the share's tie-break;
#: NULL: claimed meanwhile).
_QUEUED = QUEUED_TENANTS.subquery("queued")
TENANTS_TO_SHARE = sa.select(
    _QUEUED.c.tenant_id,
    _override_of(_QUEUED.c.tenant_id),
    _running_of(_QUEUED.c.tenant_id),
    sa.select(sa.func.min(EX.c.created_at))
    .where(EX.c.tenant_id == _QUEUED.c.tenant_id, IS_READY)
    .scalar_subquery(),
)


def _claim_oldest_due(
    tenant_id: sa.ColumnElement[str],
    limit: sa.ColumnElement[int],
    lock_claimable: LockClaimable,
    *where: sa.ColumnElement[bool],
    room: sa.ColumnElement[int] | None = None,
) -> sa.Update:
    """Claim up to ``limit`` of the tenant's oldest due executions (also matching ``where``),
    their rows locked by ``lock_claimable``, skipping those another claimer holds, and read
    once; rows claimed elsewhere since the statement's snapshot no longer match (PostgreSQL
    re-checks a locked row's newest version).

    ``room``: claim only that many of the rows locked, the first ones read. It is evaluated
    once, before the rows are read (a LIMIT's count is). It is not the locking read's own
    LIMIT: the planner cannot estimate an expression there, guesses a tenth of the rows,
    and read the whole table instead of the queue's index whenever queued rows were common
    (tests/contracts/test_pg_plans.py). A materialized CTE (PostgreSQL's ``lock_claimable``)
    is read back in the order its rows were written: oldest first."""
    due = lock_claimable(
        sa.select(EX.c.id)
        .where(EX.c.tenant_id == tenant_id, IS_READY, *where)
        .order_by(EX.c.created_at, EX.c.id)
        .limit(limit)
    )
    if room is not None:
        due = sa.select(due.subquery().c.id).limit(room)
    return sa.update(EX).where(EX.c.id.in_(due)).values(CLAIM).returning(*EX.c)


def claim_of_tenant(running: sa.ColumnElement[int], lock_claimable: LockClaimable) -> sa.Update:
    """Claim up to ``p_limit`` of tenant ``p_tenant_id``'s oldest due executions, as many as
    its cap leaves room for, in one statement: ``running`` counts under the tenant's claim
    lock (``Database.running_under_claim_lock``), evaluated once, before any row is read,
    and the lock ends with the statement."""
    tenant_id = p("p_tenant_id")
    cap = _cap_of(tenant_id)
    room = sa.case(
        (cap.is_(None), _limit()),
        else_=sa.func.greatest(0, sa.func.least(_limit(), cap - running)),
    )
    return _claim_oldest_due(tenant_id, _limit(), lock_claimable, room=room)


def claim_due_of_tenant(lock_claimable: LockClaimable) -> sa.Update:
    """Where one writer runs every claim (SQLite): claim ``p_limit`` of tenant
    ``p_tenant_id``'s oldest due executions, the room counted in the same transaction."""
    return _claim_oldest_due(p("p_tenant_id"), _limit(), lock_claimable)


def next_of_tenant(tenant_id: sa.ColumnElement[str], lock_claimable: LockClaimable) -> sa.Update:
    """Claim tenant ``tenant_id``'s oldest due execution, unless another tenant has work
    queued (then the slot is shared out by ``claim_next``). No cap check: it takes the
    place of one of the tenant's executions finishing in the same statement."""
    others_queued = sa.or_(
        _queued_tenant_beside(tenant_id, below=True).is_not(None),
        _queued_tenant_beside(tenant_id, below=False).is_not(None),
    )
    return _claim_oldest_due(tenant_id, ONE, lock_claimable, sa.not_(others_queued))


def _queued_tenant_beside(tenant_id: sa.ColumnElement[str], *, below: bool) -> sa.ScalarSelect[str]:
    """The highest id of a tenant with work queued below (or above) ``tenant_id``, or NULL.

    One backward probe of the queued rows' index, bounded by ``tenant_id``:
    it starts at the newest entries of the tenant next to it (or of the highest tenant), the
    live ones in a queue taken oldest first, and never reads ``tenant_id``'s own entries.
    Those begin with one dead entry per execution claimed since the last VACUUM, so a probe
    from the low end of the index, as this was first written, read more of them at every
    claim: one tenant draining 5,000 executions read 135 buffers per finish with it, 101
    without (docs/benchmarks.md).
    ``EXISTS (... tenant_id < x)`` read the whole table in a generic plan when it found no
    such row (tests/contracts/test_pg_plans.py)."""
    other = EX.alias("other")
    beside = other.c.tenant_id < tenant_id if below else other.c.tenant_id > tenant_id
    return (
        sa.select(other.c.tenant_id)
        .where(other.c.status == QUEUED, other.c.next_attempt_at.is_(None), beside)
        .order_by(other.c.tenant_id.desc())
        .limit(ONE)
        .scalar_subquery()
    )


# Four aggregates on the queue's partial indexes in one round trip.
QUEUE_STATS = sa.select(
    COUNT_QUEUED.scalar_subquery(),
    sa.select(sa.func.count()).select_from(EX).where(IS_WAITING).scalar_subquery(),
    sa.select(sa.func.min(EX.c.created_at)).where(IS_READY).scalar_subquery(),
    sa.select(sa.func.count())
    .select_from(EX)
    .where(EX.c.status == RUNNING, EX.c.lease_expires_at < p_at("p_now"))
    .scalar_subquery(),
)
LIST_TENANT_IDS = sa.select(t.tenant.c.id).order_by(t.tenant.c.id)
ANY_TENANT = sa.select(t.tenant.c.id).limit(1)
# ``finished_at`` is set exactly when an execution is terminal; both use the
# (tenant_id, finished_at) index.
_FINISHED = sa.and_(scoped(EX), EX.c.finished_at.is_not(None))
# The finish times of the tenant's ``p_keep``-th and next newest finished executions.
KEEP_HORIZON = (
    sa.select(EX.c.finished_at)
    .where(_FINISHED)
    .order_by(EX.c.finished_at.desc())
    .limit(2)
    .offset(sa.bindparam("p_keep", type_=sa.Integer()) - 1)
)
PRUNE_OLDER = (
    sa.select(EX.c.id)
    .where(_FINISHED, EX.c.finished_at < p_at("p_before"))
    .order_by(EX.c.finished_at)
    .limit(_limit())
)
DELETE_STEP_RUNS = sa.delete(t.step_run).where(
    scoped(t.step_run), t.step_run.c.execution_id.in_(_ids())
)
# By primary key alone: the ids come from PRUNE_OLDER (tenant-scoped) in the same transaction.
# With ``tenant_id = ?`` beside ``id IN (...)``, SQLite (no statistics) read the delete
# through the tenant's listing index, every entry of the tenant: 31 ms per batch of 200 at
# 150,000 executions against ~1 ms by the key.
DELETE_EXECUTIONS = sa.delete(EX).where(EX.c.id.in_(_ids()))
TERMINAL = tuple(s.value for s in ExecutionStatus if s.terminal)
LIST_FINISHED = (
    sa.select(EX.c.status, EX.c.started_at, EX.c.finished_at)
    .where(
        scoped(EX),
        EX.c.status.in_(TERMINAL),
        EX.c.finished_at >= p_at("p_since"),
    )
    .order_by(EX.c.finished_at.desc())
    .limit(_limit())
)
FILL_DEADLINE = sa.update(EX).where(EX.c.id == p("p_id")).values(deadline_at=p_at("p_deadline"))
OLDEST_QUEUED = (
    sa.select(EX.c.id).where(IS_READY).order_by(EX.c.created_at, EX.c.id).limit(_limit())
)
HAS_COME = sa.and_(IS_QUEUED, EX.c.next_attempt_at <= p_at("p_now"))
DUE_RETRIES = (
    sa.select(EX.c.id).where(HAS_COME).order_by(EX.c.next_attempt_at, EX.c.id).limit(_limit())
)
# The rows are locked in id order, whatever plan reads them: a worker's finishes lock theirs
# in that order too (``RowFetch.order``), and a renewal that took them in the order of the
# table (a bitmap scan, planned once the table had statistics) deadlocked with a batch of
# them (docs/benchmarks.md, "Thirteenth session"). SQLite has no row locks.
RENEW = (
    sa.update(EX)
    .where(
        EX.c.id.in_(
            sa.select(EX.c.id)
            .where(EX.c.id.in_(_ids()), EX.c.status == RUNNING, EX.c.lease_owner == p("p_owner"))
            .order_by(EX.c.id)
            .with_for_update()
        )
    )
    .values(lease_expires_at=p_at("p_lease_until"))
    .returning(EX.c.id)
)
CANCEL_REQUESTED = sa.select(EX.c.id).where(
    EX.c.id.in_(_ids()), EX.c.status == RUNNING, EX.c.cancel_requested.is_(True)
)
# The status is compared by the caller: in the WHERE clause, PostgreSQL's planner chose to
# read the queued range of a status index, dead entries and all, over ten key
# lookups (120-370 buffers per read of ten ids, against ~26).
STATUS_AMONG = sa.select(EX.c.id, EX.c.status).where(EX.c.id.in_(_ids()))
# By position, then by start: a ``for_each`` step's items share its position and run in
# order, each after the one before has succeeded.
LIST_STEPS = (
    sa.select(t.step_run)
    .where(scoped(t.step_run), t.step_run.c.execution_id == p("p_id"))
    .order_by(
        t.step_run.c.position,
        t.step_run.c.started_at,
        t.step_run.c.attempt,
        t.step_run.c.step_id,
    )
)
FINISH = (
    sa.update(EX)
    .where(_HELD)
    .values(
        status=p("p_status"),
        error=p("p_error"),
        finished_at=p_at("p_finished_at"),
        lease_owner=None,
        lease_expires_at=None,
        # TRUE for a failure (``_finish_params``), in the statement that records it.
        alert_pending=sa.bindparam("p_alert", type_=sa.Boolean()),
    )
)
RELEASE = sa.update(EX).where(_HELD).values(status=QUEUED, lease_owner=None, lease_expires_at=None)
_CANCEL_ASKED = EX.c.cancel_requested.is_(True)
DEFER = (
    sa.update(EX)
    .where(_HELD)
    .values(
        status=sa.case((_CANCEL_ASKED, CANCELLED), else_=QUEUED),
        next_attempt_at=sa.case((_CANCEL_ASKED, sa.null()), else_=p_at("p_next_attempt_at")),
        finished_at=sa.case((_CANCEL_ASKED, p_at("p_now")), else_=EX.c.finished_at),
        error=sa.case((_CANCEL_ASKED, CANCELLED_BY_USER), else_=EX.c.error),
        # Moved by a delay (its wait does not count against the timeout); NULL keeps it.
        deadline_at=sa.func.coalesce(p_at("p_deadline_at"), EX.c.deadline_at),
        lease_owner=None,
        lease_expires_at=None,
    )
)
REQUEUE = (
    sa.update(EX)
    .where(
        scoped(EX),
        EX.c.id == p("p_id"),
        EX.c.status.in_(sa.bindparam("p_statuses", expanding=True)),
        # Not one of a deleted workflow: deleting one stops its executions for good.
        sa.exists().where(_WF.c.id == EX.c.workflow_id),
    )
    .values(
        status=QUEUED,
        error=None,
        started_at=None,
        finished_at=None,
        deadline_at=None,
        next_attempt_at=None,
        cancel_requested=False,
        lease_owner=None,
        lease_expires_at=None,
        # Retried before its alert went out: the retry's own failure, if any, alerts.
        alert_pending=None,
    )
    .returning(*EX.c)
)
# One statement for all three cases; SET expressions see the row as it was before.
REQUEST_CANCEL = (
    sa.update(EX)
    .where(scoped(EX), EX.c.id == p("p_id"))
    .values(
        status=sa.case((IS_QUEUED, CANCELLED), else_=EX.c.status),
        finished_at=sa.case((IS_QUEUED, p_at("p_now")), else_=EX.c.finished_at),
        error=sa.case((IS_QUEUED, CANCELLED_BY_USER), else_=EX.c.error),
        # A wait ends with it: a stale time would stay in that column's index for good.
        next_attempt_at=sa.case((IS_QUEUED, sa.null()), else_=EX.c.next_attempt_at),
        cancel_requested=sa.case((EX.c.status == RUNNING, sa.true()), else_=EX.c.cancel_requested),
    )
    .returning(*EX.c)
)


def cancel_queued(of_workflow: bool, queued: sa.ColumnElement[bool]) -> sa.Update:
    """Every queued execution of the tenant (of one workflow: ``p_workflow_id``) among
    ``queued`` (the ready ones: the queue's index; the waiting ones: ``next_attempt_at``'s)
    cancelled, as ``REQUEST_CANCEL`` cancels one."""
    where = [scoped(EX), queued]
    if of_workflow:
        where.append(EX.c.workflow_id == p("p_workflow_id"))
    return (
        sa.update(EX)
        .where(*where)
        .values(
            status=CANCELLED,
            finished_at=p_at("p_now"),
            error=CANCELLED_BY_USER,
            next_attempt_at=None,
        )
    )


def flag_running(of_workflow: bool) -> sa.Update:
    """``cancel_requested`` on every running execution of the tenant (or of one workflow);
    their ids, for the cancel bus."""
    where = [scoped(EX), EX.c.status == RUNNING]
    if of_workflow:
        where.append(EX.c.workflow_id == p("p_workflow_id"))
    return sa.update(EX).where(*where).values(cancel_requested=sa.true()).returning(EX.c.id)


#: ``cancel_pending``'s statements (the cancels, the flag), for all of a tenant's workflows
#: and for one.
CANCEL_PENDING = {
    of_workflow: (
        (cancel_queued(of_workflow, IS_READY), cancel_queued(of_workflow, IS_WAITING)),
        flag_running(of_workflow),
    )
    for of_workflow in (False, True)
}
# The reaper's three passes, in the order of the rules' precedence: the deadline first,
# then a requested cancel, and only then a plain re-queue.


def _reap(where: sa.ColumnElement[bool], lock_claimable: LockClaimable) -> sa.Update:
    """An UPDATE of the rows matching ``where`` that another transaction does not hold:
    every worker and scheduler reaps, and UPDATEs that waited for each other's row locks
    (taken in scan order, held to the end of the reap's transaction) deadlocked. Skipped
    rows are the next pass's, if they still match then."""
    return sa.update(EX).where(EX.c.id.in_(lock_claimable(sa.select(EX.c.id).where(where))), where)


def reap_timed_out(lock_claimable: LockClaimable, of: sa.ColumnElement[bool]) -> sa.Update:
    """Time out the overdue rows among ``of``: the ready ones, the waiting ones, or the
    running ones whose lease expired. One statement for each, as each reads its own partial
    index: with them in one ``OR``, SQLite read the whole table."""
    where = sa.and_(EX.c.deadline_at <= p_at("p_now"), of)
    return (
        _reap(where, lock_claimable)
        .values(
            status=ExecutionStatus.timed_out.value,
            error=TIMED_OUT,
            alert_pending=True,
            next_attempt_at=None,
            **_ENDED,
        )
        .returning(EX.c.id)
    )


def reap_cancelled(lock_claimable: LockClaimable) -> sa.Update:
    where = sa.and_(LEASE_EXPIRED, EX.c.cancel_requested.is_(True))
    return _reap(where, lock_claimable).values(status=CANCELLED, error=CANCELLED_BY_USER, **_ENDED)


def reap_requeued(lock_claimable: LockClaimable) -> sa.Update:
    return (
        _reap(LEASE_EXPIRED, lock_claimable)
        .values(status=QUEUED, lease_owner=None, lease_expires_at=None)
        .returning(EX.c.id)
    )


# Failure alerts (``engine/alerts.py``): the failures not dealt with yet, oldest first, and
# the compare-and-set that settles one (the same failure: a retried execution that failed
# again since the read has another ``finished_at`` and stays pending).
PENDING_ALERTS = (
    sa.select(EX)
    .where(EX.c.alert_pending.is_not(None))
    .order_by(EX.c.finished_at)
    .limit(sa.bindparam("p_limit", type_=sa.Integer()))
)
SETTLE_ALERT = (
    sa.update(EX)
    .where(
        EX.c.id == p("p_id"),
        EX.c.alert_pending.is_not(None),
        EX.c.finished_at == p_at("p_finished_at"),
    )
    .values(alert_pending=None)
)

# Their pacing (``Store.settle_alerts``): a window reopens (and the failure alerts) only when
# its last alert is old enough and nothing is held, which only its digest clears; otherwise
# the failure is held. On PostgreSQL the row lock orders passes settling one workflow's
# failures: the second re-reads the window its first reopened, and holds.
AW = t.alert_window
_ALERTS_HELD = sa.text(t.ALERTS_HELD)
REOPEN_ALERT_WINDOW = (
    sa.update(AW)
    .where(
        AW.c.workflow_id == p("p_workflow_id"),
        AW.c.held == 0,
        AW.c.last_alert_at <= p_at("p_last_before"),
    )
    .values(last_alert_at=p_at("p_now"))
)
HOLD_ALERT = (
    sa.update(AW)
    .where(AW.c.workflow_id == p("p_workflow_id"))
    .values(held=AW.c.held + 1, held_execution_id=p("p_execution_id"))
)
DUE_ALERT_DIGESTS = (
    sa.select(AW)
    .where(_ALERTS_HELD, AW.c.last_alert_at <= p_at("p_last_before"))
    .order_by(AW.c.last_alert_at)
    .limit(sa.bindparam("p_limit", type_=sa.Integer()))
)
SETTLE_ALERT_DIGEST = (
    sa.update(AW)
    .where(
        AW.c.workflow_id == p("p_workflow_id"),
        AW.c.held == p("p_held"),
        AW.c.last_alert_at == p_at("p_last_alert_at"),
    )
    .values(last_alert_at=p_at("p_now"), held=0, held_execution_id=None)
)

GET_CIRCUIT = sa.select(CI).where(scoped(CI), CI.c.host == p("p_host"))
LIST_CIRCUITS = sa.select(CI).where(scoped(CI)).order_by(CI.c.host)
LIST_UNCLOSED_CIRCUITS = sa.select(CI).where(CI.c.state != CLOSED)
# What a failure does to an existing row (the SET of ``record_circuit_failure``'s upsert):
# SET expressions see the row as it was, so ``_OPENS`` is decided on the old values.
_OPENS = sa.or_(
    CI.c.state == HALF_OPEN,
    sa.and_(CI.c.state == CLOSED, CI.c.failures + 1 >= p("p_threshold")),
)
CIRCUIT_FAILURE_SET = {
    "failures": CI.c.failures + 1,
    "state": sa.case((_OPENS, OPEN), else_=CI.c.state),
    "opened_at": sa.case((_OPENS, p_at("p_now")), else_=CI.c.opened_at),
    "retry_at": sa.case((_OPENS, p_at("p_retry_at")), else_=CI.c.retry_at),
    "updated_at": p_at("p_now"),
}
CIRCUIT_SUCCESS = (
    sa.update(CI)
    .where(
        scoped(CI),
        CI.c.host == p("p_host"),
        CI.c.state != OPEN,
        sa.or_(CI.c.state != CLOSED, CI.c.failures != 0),
    )
    .values(state=CLOSED, failures=0, opened_at=None, retry_at=None, updated_at=p_at("p_now"))
)
CLAIM_PROBE = (
    sa.update(CI)
    .where(
        scoped(CI),
        CI.c.host == p("p_host"),
        CI.c.state != CLOSED,
        sa.or_(CI.c.retry_at.is_(None), CI.c.retry_at <= p_at("p_now")),
    )
    .values(state=HALF_OPEN, retry_at=p_at("p_probe_until"), updated_at=p_at("p_now"))
)
