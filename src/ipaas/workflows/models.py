from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TriggerType(StrEnum):
    webhook = "webhook"
    manual = "manual"
    schedule = "schedule"


STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class Trigger(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: TriggerType = TriggerType.webhook


class Step(BaseModel):
    id: str = Field(pattern=STEP_ID_PATTERN)
    type: str
    name: str | None = None
    credential_id: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0, le=3600)


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
