from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class TriggerType(StrEnum):
    webhook = "webhook"
    manual = "manual"
    schedule = "schedule"


STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class Schedule(BaseModel):
    """The schedule of a ``schedule`` trigger: a standard 5-field cron expression (or an
    ``@hourly``-style alias) read in an IANA time zone."""

    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        value = value.strip()
        # Five fields, as in crontab: croniter would also take a sixth (seconds) field.
        if not croniter.is_valid(value) or (not value.startswith("@") and len(value.split()) != 5):
            msg = "not a valid cron expression (5 fields: minute hour day month weekday)"
            raise ValueError(msg)
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            msg = "not a known IANA time zone (such as Europe/Berlin or UTC)"
            raise ValueError(msg) from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Trigger(BaseModel):
    """What starts a workflow. Other keys are kept as given (a webhook's ``secret``, a
    schedule's ``cron`` and ``timezone``); the API checks them with ``check_trigger``."""

    model_config = ConfigDict(extra="allow")

    type: TriggerType = TriggerType.webhook

    @property
    def schedule(self) -> Schedule:
        """The schedule of a ``schedule`` trigger; raises ``ValidationError`` if invalid."""
        return Schedule.model_validate(self.model_extra or {})


def check_trigger(trigger: Trigger) -> Trigger:
    """API-side validation: a ``schedule`` trigger needs a valid ``cron`` and ``timezone``
    (errors are located at ``trigger.cron`` / ``trigger.timezone``); the default time zone
    is written into the trigger so responses show it. Stored triggers are not re-checked
    on load (a zone that disappears from tzdata must not break listing)."""
    if trigger.type is TriggerType.schedule:
        schedule = trigger.schedule  # a ValidationError here carries the field's location
        if trigger.model_extra is not None:
            trigger.model_extra.update(cron=schedule.cron, timezone=schedule.timezone)
    return trigger


class RetryConfig(BaseModel):
    """A step's retry settings; a field left out keeps the connector's default
    (``Connector.retry``). ``max_attempts`` counts the first call: 1 means no retry."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int | None = Field(default=None, ge=1, le=20)
    #: The backoff before the first retry; it doubles per retry, capped by ``max_delay_s``.
    initial_delay_s: float | None = Field(default=None, ge=0, le=3600)
    max_delay_s: float | None = Field(default=None, ge=0, le=86400)

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if (
            self.initial_delay_s is not None
            and self.max_delay_s is not None
            and self.max_delay_s < self.initial_delay_s
        ):
            msg = "max_delay_s must not be less than initial_delay_s"
            raise ValueError(msg)
        return self


class Step(BaseModel):
    id: str = Field(pattern=STEP_ID_PATTERN)
    type: str
    name: str | None = None
    credential_id: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    retry: RetryConfig | None = None


class WorkflowDefinition(BaseModel):
    """What a version of a workflow runs: its trigger and ordered steps."""

    trigger: Trigger
    steps: list[Step]


class Workflow(BaseModel):
    id: str
    tenant_id: str
    name: str
    active: bool
    version: int
    trigger: Trigger
    steps: list[Step]
    created_at: datetime
    updated_at: datetime

    @property
    def definition(self) -> WorkflowDefinition:
        return WorkflowDefinition(trigger=self.trigger, steps=self.steps)
