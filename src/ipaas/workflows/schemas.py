from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import AfterValidator, BaseModel, Field, model_validator

from ipaas.executions.models import TriggerSample
from ipaas.kit import jsontext
from ipaas.kit.inputs import Input, LeftOutKeeps
from ipaas.kit.numbers import MAX_INT32
from ipaas.kit.text import Name
from ipaas.workflows.models import Step, Trigger, check_trigger

#: A trigger as the API accepts it: a schedule's cron and time zone are checked (422 at
#: ``body.trigger.cron`` / ``body.trigger.timezone``).
CheckedTrigger = Annotated[Trigger, AfterValidator(check_trigger)]

#: The step id the seed's single-action shape maps its action to.
SEED_STEP_ID = "action"


def _from_seed_shape(data: Any) -> Any:
    """``{"trigger_type", "action_type", "config_json"}`` (v0.2 API) -> the general shape."""
    if not isinstance(data, dict) or "action_type" not in data:
        return data
    data = dict(data)
    raw = data.pop("config_json", None) or "{}"
    if isinstance(raw, str):
        try:
            config = jsontext.loads(raw)
        except jsontext.JsonError as exc:
            msg = f"config_json is not valid JSON: {exc}"
            raise ValueError(msg) from exc
    else:
        config = raw
    if not isinstance(config, dict):
        msg = "config_json must encode a JSON object"
        raise ValueError(msg)
    config = dict(config)
    credential_id = config.pop("credential_id", None)
    # No connector has a ``retry`` param: in the seed's config it is the step's policy.
    retry = config.pop("retry", None)
    # Left out, the trigger is what the request's own default is: a webhook for a create or
    # a PUT, the stored one for a PATCH (which made every seed-shaped PATCH a webhook).
    if "trigger_type" in data:
        if "trigger" in data:
            msg = "give trigger or trigger_type, not both"
            raise ValueError(msg)
        data["trigger"] = {"type": data.pop("trigger_type")}
    data["steps"] = [
        {
            "id": SEED_STEP_ID,
            "type": data.pop("action_type"),
            "credential_id": credential_id,
            "config": config,
            **({"retry": retry} if retry is not None else {}),
        }
    ]
    return data


#: The id of another workflow of the tenant, run for each failure of this one.
ErrorWorkflowId = Annotated[
    str | None,
    Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Another workflow of yours, run with the failure as its trigger body "
        "each time an execution of this one ends failed or timed_out; null: none.",
    ),
]


#: A saved version's number in a URL: at most what the stores hold (PostgreSQL's INTEGER; a
#: larger one was a 500 there).
VersionNumber = Annotated[int, Path(ge=1, le=MAX_INT32)]


def _read_only() -> Any:
    """A field of a read of the workflow that is not a setting (``WorkflowRead``)."""
    return Field(default=None, exclude=True, json_schema_extra={"readOnly": True})


class _SentBack(Input):
    """The fields of a read that are not settings, accepted in a write and ignored, so what
    a ``GET`` returned can be changed and sent back whole (``PUT`` with ``If-Match``).
    Any other field the model does not have is refused (``Input``)."""

    id: str | None = _read_only()
    version: int | None = _read_only()
    webhook_url: str | None = _read_only()
    created_at: datetime | None = _read_only()
    updated_at: datetime | None = _read_only()


class WorkflowCreate(_SentBack):
    name: Name
    active: bool = Field(default=True, strict=True)  # not "yes", 1 or "off"
    trigger: CheckedTrigger = Field(default_factory=Trigger)
    steps: list[Step] = Field(min_length=1, max_length=50)
    error_workflow_id: ErrorWorkflowId = None

    _seed = model_validator(mode="before")(_from_seed_shape)


class WorkflowUpdate(WorkflowCreate):
    """PUT: the whole workflow; a new version when trigger or steps change."""


class WorkflowPatch(_SentBack):
    name: LeftOutKeeps[Name] = None
    active: LeftOutKeeps[Annotated[bool, Field(strict=True)]] = None
    trigger: LeftOutKeeps[CheckedTrigger] = None
    steps: LeftOutKeeps[Annotated[list[Step], Field(min_length=1, max_length=50)]] = None
    #: ``null`` removes it; left out, it stays.
    error_workflow_id: ErrorWorkflowId = None

    _seed = model_validator(mode="before")(_from_seed_shape)


class WorkflowRead(BaseModel):
    id: str
    name: str
    active: bool
    version: int
    trigger: Trigger
    steps: list[Step]
    error_workflow_id: str | None
    #: Found by hand: a manual or schedule workflow showed a URL that answered 404.
    webhook_url: str | None = Field(
        description="Where to POST this workflow's webhooks; null unless its trigger is a "
        "webhook (a manual or schedule workflow takes none)."
    )
    created_at: datetime
    updated_at: datetime


class WorkflowVersionRead(BaseModel):
    """A saved version: what its executions ran; ``current`` for the workflow's own."""

    version: int
    trigger: Trigger
    steps: list[Step]
    created_at: datetime
    current: bool


class DryRunCreate(WorkflowCreate):
    mode: Literal["run", "simulate"] = "run"
    trigger_sample: TriggerSample = Field(default_factory=TriggerSample)


class DryRunOptions(Input):
    mode: Literal["run", "simulate"] = "run"
    trigger_sample: TriggerSample = Field(default_factory=TriggerSample)


class DryRunStep(BaseModel):
    step_id: str
    type: str
    status: str
    input: Any = None
    output: Any = None
    error: str | None = None
    #: Simulate mode: the exact request that would go out, secrets masked.
    request: dict[str, Any] | None = None
    duration_ms: float


class DryRunRead(BaseModel):
    mode: Literal["run", "simulate"]
    status: str
    steps: list[DryRunStep]
