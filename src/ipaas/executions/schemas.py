from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from ipaas.executions.models import MAX_PAGE, Execution, ExecutionStatus, StepRun, StepStatus


class StepRunRead(BaseModel):
    step_id: str
    type: str
    status: StepStatus
    attempt: int
    input: Any
    output: Any
    error: str | None
    error_code: str | None
    status_code: int | None
    #: This attempt failed and the step runs again then.
    next_attempt_at: datetime | None
    started_at: datetime
    finished_at: datetime
    duration_ms: float

    @classmethod
    def of(cls, step: StepRun) -> StepRunRead:
        return cls(
            step_id=step.step_id,
            type=step.type,
            status=step.status,
            attempt=step.attempt,
            input=step.input,
            output=step.output,
            error=step.error,
            error_code=step.error_code,
            status_code=step.status_code,
            next_attempt_at=step.next_attempt_at,
            started_at=step.started_at,
            finished_at=step.finished_at,
            duration_ms=round(step.duration_ms, 3),
        )


class ExecutionRead(BaseModel):
    id: str
    workflow_id: str
    workflow_version: int
    status: ExecutionStatus
    error: str | None
    attempt: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    #: Queued for a retry: not started before then.
    next_attempt_at: datetime | None
    replay_of: str | None

    @classmethod
    def of(cls, ex: Execution) -> ExecutionRead:
        duration = (
            (ex.finished_at - ex.started_at).total_seconds() * 1000
            if ex.finished_at and ex.started_at
            else None
        )
        return cls(
            id=ex.id,
            workflow_id=ex.workflow_id,
            workflow_version=ex.workflow_version,
            status=ex.status,
            error=ex.error,
            attempt=ex.attempt,
            cancel_requested=ex.cancel_requested,
            created_at=ex.created_at,
            started_at=ex.started_at,
            finished_at=ex.finished_at,
            duration_ms=round(duration, 3) if duration is not None else None,
            next_attempt_at=ex.next_attempt_at,
            replay_of=ex.replay_of,
        )


class ExecutionDetail(ExecutionRead):
    trigger: dict[str, Any]
    steps: list[StepRunRead]


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]")


def _text(value: object) -> object:
    """A date-time as the schema says: RFC 3339 text (pydantic alone also takes a number
    of seconds, as a number or, in a query string, as text)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _DATE.match(value):
        msg = "give a date-time with its zone, e.g. 2026-12-01T12:00:00Z"
        raise ValueError(msg)
    return value


def _in_utc(value: datetime) -> datetime:
    """In UTC, as the stores compare and keep it. A date-time at either end of the calendar
    with an offset, ``0001-01-01T00:00:00+01:00`` say, has no UTC value (before, the SQL
    stores failed on it with a 500): it is the first or last UTC instant there is, which
    any bound it sets means as well."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        end = datetime.min if value.year == datetime.min.year else datetime.max
        return end.replace(tzinfo=UTC)


#: An RFC 3339 date-time with its zone (given back in UTC).
DateTimeText = Annotated[AwareDatetime, BeforeValidator(_text), AfterValidator(_in_utc)]


class _Window(BaseModel):
    """``since`` and ``until`` bound a window of creation times, ``[since, until)``."""

    since: DateTimeText | None = None
    until: DateTimeText | None = None

    @field_validator("until")
    @classmethod
    def _until_after_since(cls, until: datetime | None, info: ValidationInfo) -> datetime | None:
        # Not an empty window: found by hand, the two swapped answered a bulk retry after an
        # outage with ``{"retried": []}``, as if nothing had failed.
        since = info.data.get("since")
        if since is not None and until is not None and until <= since:
            msg = "must be later than since (the window is [since, until))"
            raise ValueError(msg)
        return until


#: The text ``q`` searches triggers for: long enough to narrow, short enough to type.
MIN_SEARCH, MAX_SEARCH = 3, 200


class ExecutionFilter(_Window):
    """``GET /api/executions``'s query. Unknown parameters are refused (422): a misspelled
    filter (``?stauts=failed``) would otherwise list every execution as if it had matched."""

    model_config = ConfigDict(extra="forbid")

    workflow_id: str | None = None
    status: ExecutionStatus | None = None
    #: Created at or after (RFC 3339, with its zone).
    since: DateTimeText | None = None
    #: Created before.
    until: DateTimeText | None = None
    #: Text the trigger holds (its body, headers or query, as stored JSON): an order id,
    #: an email. Case-insensitive (ASCII letters on SQLite).
    q: str | None = Field(default=None, min_length=MIN_SEARCH, max_length=MAX_SEARCH)
    cursor: str | None = None
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)


#: Executions one ``POST /api/executions/retry`` resumes at most.
MAX_BULK_RETRY = 1000
RetryableStatus = Literal["failed", "timed_out", "cancelled"]


def _failed_and_timed_out() -> list[RetryableStatus]:
    return ["failed", "timed_out"]


class BulkRetry(_Window):
    """Which executions to resume: the tenant's (or one workflow's) in these statuses,
    created in ``[since, until)``."""

    model_config = ConfigDict(extra="forbid")

    since: DateTimeText
    until: DateTimeText | None = None
    workflow_id: str | None = Field(default=None, max_length=64)
    statuses: list[RetryableStatus] = Field(
        default_factory=_failed_and_timed_out, min_length=1, max_length=3
    )
    limit: int = Field(default=100, ge=1, le=MAX_BULK_RETRY)


class BulkRetried(BaseModel):
    #: The executions queued again, oldest first.
    retried: list[str]
    #: More matched than ``limit``: call again (the ones retried no longer match).
    more: bool


class BulkCancel(BaseModel):
    """Which executions to cancel: every unfinished one of the tenant, or of one workflow
    (a deleted one's too)."""

    model_config = ConfigDict(extra="forbid")

    workflow_id: str | None = Field(default=None, max_length=64)


class BulkCancelled(BaseModel):
    #: Queued executions (a retry waiting for its time too), now ``cancelled``.
    cancelled: int
    #: Running executions told to stop, in-flight calls included; each ends ``cancelled``.
    stopping: list[str]


#: The stats window a caller may ask for: one minute to one day.
MIN_WINDOW_S = 60
MAX_WINDOW_S = 86_400


class StatsQuery(BaseModel):
    """``GET /api/stats``'s query. Unknown parameters are refused (422), as the listing's
    are: a misspelled ``?window=60`` would otherwise answer for the default hour."""

    model_config = ConfigDict(extra="forbid")

    window_s: int = Field(default=3600, ge=MIN_WINDOW_S, le=MAX_WINDOW_S)


class ExecutionList(BaseModel):
    items: list[ExecutionRead]
    next_cursor: str | None


class MinuteCounts(BaseModel):
    #: The minute's start (UTC).
    minute: datetime
    #: Executions that finished in it, by terminal status (absent: none).
    counts: dict[str, int]


class ExecutionStats(BaseModel):
    since: datetime
    until: datetime
    #: Executions that reached a terminal status in the window.
    total: int
    #: More than the readable maximum finished: the oldest part of the window is left out.
    truncated: bool
    by_status: dict[str, int]
    #: ``by_status`` divided by the window's minutes.
    per_minute_avg: dict[str, float]
    #: Minutes with at least one execution, oldest first.
    per_minute: list[MinuteCounts]
    #: First start to terminal status, nearest-rank ``p50``/``p95``/``p99`` (``null``: none).
    duration_s: dict[str, float | None]
