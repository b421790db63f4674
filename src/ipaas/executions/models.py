from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator

from ipaas.kit.inputs import Input
from ipaas.kit.secrets import mask_headers

#: The largest page of executions one request returns.
MAX_PAGE = 200


class ExecutionStatus(StrEnum):
    #: Accepted and committed; waiting for a worker (or for ``next_attempt_at``).
    queued = "queued"
    #: Claimed by a worker that holds an unexpired lease.
    running = "running"
    #: Every step succeeded.
    succeeded = "succeeded"
    #: A step failed for good.
    failed = "failed"
    #: Cancelled by a user before it finished.
    cancelled = "cancelled"
    #: Ran past ``IPAAS_EXECUTION_TIMEOUT_S``.
    timed_out = "timed_out"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {
        ExecutionStatus.succeeded,
        ExecutionStatus.failed,
        ExecutionStatus.cancelled,
        ExecutionStatus.timed_out,
    }
)


#: The outcomes that run a workflow's error workflow (``engine/alerts.py``); a cancel is
#: someone's decision, not a failure.
ALERTING_STATUSES = frozenset({ExecutionStatus.failed, ExecutionStatus.timed_out})
#: The trigger type of an error workflow's execution (its body: the failure).
ERROR_TRIGGER = "error"


class StepStatus(StrEnum):
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    timed_out = "timed_out"
    #: Its ``when`` did not hold: it did not run, and the steps after it did.
    skipped = "skipped"


class TriggerData(Input):
    """What started an execution: the webhook request, a manual run's input, a schedule
    tick (``type="schedule"``, ``body={"scheduled_for": <tick, ISO in the trigger's zone>}``),
    or another workflow's failure (``type="error"``, the failure as ``body``:
    ``engine/alerts.py``).

    A manual run's and a dry run's sample are refused with fields it does not have
    (``Input``); stored ones load unchecked (``model_construct``)."""

    type: str = "webhook"
    method: str = "POST"
    body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)
    #: A name given more than once: the list of its values (``webhooks/fields.py``).
    query: dict[str, str | list[str]] = Field(default_factory=dict)
    content_type: str | None = None


class TriggerSample(TriggerData):
    """Trigger data a user gives: a manual run's input, a dry run's sample. Its headers are
    taken as a webhook's are stored, so its templates read them as a webhook's execution
    will: names in lower case (``{"X-Shop-Topic": ...}`` was out of reach of
    ``trigger.headers['x-shop-topic']``), a sensitive header's value masked (a manual run
    stored an ``Authorization`` it was given for every member to read)."""

    @field_validator("headers")
    @classmethod
    def _as_a_webhooks(cls, headers: dict[str, str]) -> dict[str, str]:
        lowered: dict[str, str] = {}
        for name, value in headers.items():
            key = name.lower()
            if key in lowered:
                msg = f"header {key!r} is given twice (names are case-insensitive)"
                raise ValueError(msg)
            lowered[key] = value
        return mask_headers(lowered)


class Execution(BaseModel):
    id: str
    tenant_id: str
    workflow_id: str
    workflow_version: int
    status: ExecutionStatus
    trigger: TriggerData
    error: str | None = None
    #: How many times a worker claimed it (a crash and re-queue makes it 2).
    attempt: int = 0
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    cancel_requested: bool = False
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: ``started_at + IPAAS_EXECUTION_TIMEOUT_S``, fixed at the first claim.
    deadline_at: datetime | None = None
    #: Unique per workflow when set (``schedule:<tick>``; later the ``Idempotency-Key``):
    #: a second execution with the same key is refused by the store.
    dedup_key: str | None = None
    #: While ``queued`` for a retry (or a circuit's cooldown): no worker claims it before.
    next_attempt_at: datetime | None = None
    #: The execution this one replays (``POST /api/executions/{id}/replay``).
    replay_of: str | None = None
    #: W3C ``traceparent`` of the span that queued it (tracing on): the worker's spans,
    #: in whatever process, join that trace. ``None`` when tracing is off.
    trace_context: str | None = None


class StepRun(BaseModel):
    execution_id: str
    tenant_id: str
    step_id: str
    position: int
    type: str
    status: StepStatus
    #: The step's own attempt number: 1, then 2 for its first retry...
    attempt: int = 1
    input: Any = None
    output: Any = None
    error: str | None = None
    #: A stable code for some failures: ``circuit_open``, ``timeout``, ``connection_error``.
    error_code: str | None = None
    #: The remote's HTTP status of a failed call.
    status_code: int | None = None
    #: Set when this failed attempt is retried: when the next one is due.
    next_attempt_at: datetime | None = None
    started_at: datetime
    finished_at: datetime

    @property
    def duration_ms(self) -> float:
        return (self.finished_at - self.started_at).total_seconds() * 1000
