"""The workflow editor's two forms: fields generated per connector, or the JSON shape.

Both end in a ``WorkflowCreate`` / ``WorkflowUpdate``, so the API's own validation (and
then the service's) decides, and each error comes back keyed by its path
(``steps.0.config.text``), which is also how the generated fields are named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ipaas.web import forms
from ipaas.workflows.models import TRIGGER_KEYS, Workflow
from ipaas.workflows.schemas import WorkflowCreate, WorkflowUpdate

#: A new workflow's form offers this many step slots; an edit, one more than it has.
BLANK_SLOTS = 1
MAX_SLOTS = 20


@dataclass(slots=True)
class WorkflowForm:
    mode: str = "form"
    #: Submitted strings by control name (``name``, ``steps.0.type``, ...): redrawn as given.
    values: dict[str, str] = field(default_factory=dict)
    slots: int = BLANK_SLOTS
    definition: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    message: str = ""
    payload: dict[str, Any] | None = None
    current: Workflow | None = None

    @classmethod
    def blank(cls) -> WorkflowForm:
        example = {
            "trigger": {"type": "webhook"},
            "steps": [{"id": "notify", "type": "slack_message", "config": {"text": "Hello"}}],
        }
        return cls(
            values={"active": "true", "trigger.type": "webhook", "steps.0.id": "notify"},
            definition=json.dumps(example, indent=2),
        )

    @classmethod
    def of(cls, workflow: Workflow, connectors: dict[str, list[forms.Field]]) -> WorkflowForm:
        values = {
            "name": workflow.name,
            "active": "true" if workflow.active else "",
            "trigger.type": workflow.trigger.type.value,
            "trigger.cron": str((workflow.trigger.model_extra or {}).get("cron", "")),
            "trigger.timezone": str((workflow.trigger.model_extra or {}).get("timezone", "")),
            "error_workflow_id": workflow.error_workflow_id or "",
        }
        for index, step in enumerate(workflow.steps):
            values[f"steps.{index}.id"] = step.id
            values[f"steps.{index}.type"] = step.type
            values[f"steps.{index}.credential_id"] = step.credential_id or ""
            values[f"steps.{index}.for_each"] = forms.shown(step.for_each)
            values[f"steps.{index}.concurrency"] = forms.shown(step.concurrency)
            values[f"steps.{index}.when"] = forms.shown(step.when)
            for name, value in step.config.items():
                values[f"steps.{index}.config.{step.type}.{name}"] = forms.shown(value)
        shape: dict[str, Any] = {
            "trigger": workflow.trigger.model_dump(mode="json"),
            "steps": [s.model_dump(mode="json", exclude_none=True) for s in workflow.steps],
        }
        if workflow.error_workflow_id is not None:
            # Saving replaces the whole workflow: left out of the JSON, it would be removed.
            shape["error_workflow_id"] = workflow.error_workflow_id
        return cls(
            values=values,
            slots=len(workflow.steps) + 1,
            definition=json.dumps(shape, indent=2),
            current=workflow,
        )

    @classmethod
    def parse(
        cls,
        form: dict[str, str],
        connectors: dict[str, list[forms.Field]],
        *,
        current: Workflow | None = None,
    ) -> WorkflowForm:
        parsed = cls(mode=form.get("mode", "form"), values=dict(form), current=current)
        parsed.definition = form.get("definition", "")
        try:
            parsed.slots = min(MAX_SLOTS, max(1, int(form.get("slots", "1"))))
        except ValueError:
            parsed.slots = 1
        base = {"name": form.get("name", ""), "active": form.get("active") == "true"}
        if parsed.mode == "json":
            try:
                shape = json.loads(parsed.definition)
            except ValueError as exc:
                parsed.errors["definition"] = f"not valid JSON: {exc}"
                return parsed
            if not isinstance(shape, dict):
                parsed.errors["definition"] = "must be a JSON object with trigger and steps"
                return parsed
            parsed.payload = {**base, **shape}
            return parsed
        parsed.payload = {
            **base,
            "error_workflow_id": form.get("error_workflow_id") or None,
            "trigger": parsed._trigger(form),
            "steps": [],
        }
        for index in range(parsed.slots):
            step = parsed._step(form, index, connectors)
            if step is not None:
                parsed.payload["steps"].append(step)
        parsed.slots = max(parsed.slots, len(parsed.payload["steps"]))
        return parsed

    def _trigger(self, form: dict[str, str]) -> dict[str, Any]:
        kind = form.get("trigger.type", "webhook")
        trigger: dict[str, Any] = {}
        if self.current is not None and self.current.trigger.type.value == kind:
            # Keep what the form does not show (a webhook's auth, idempotency), but not a key
            # stored before saving refused it: the form could neither show nor remove it.
            keys = TRIGGER_KEYS[self.current.trigger.type]
            kept = self.current.trigger.model_dump(mode="json").items()
            trigger = {key: value for key, value in kept if key in keys}
        trigger["type"] = kind
        if kind == "schedule":
            trigger["cron"] = form.get("trigger.cron", "")
            trigger["timezone"] = form.get("trigger.timezone", "") or "UTC"
        return trigger

    def _step(
        self, form: dict[str, str], index: int, connectors: dict[str, list[forms.Field]]
    ) -> dict[str, Any] | None:
        kind = form.get(f"steps.{index}.type", "")
        step_id = form.get(f"steps.{index}.id", "").strip()
        if not kind and not step_id:
            return None  # an unused slot
        prefix = f"steps.{index}.config.{kind}."
        config, errors = forms.read(connectors.get(kind, []), form, prefix)
        for name, msg in errors.items():
            self.errors[f"steps.{index}.config.{name}"] = msg
        step: dict[str, Any] = {"id": step_id, "type": kind, "config": config}
        if self.current is not None and index < len(self.current.steps):
            before = self.current.steps[index]
            if before.type == kind:  # keep what the form does not show
                if before.name is not None:
                    step["name"] = before.name
                if before.retry is not None:
                    step["retry"] = before.retry.model_dump(exclude_none=True)
                if before.timeout_s is not None:
                    step["timeout_s"] = before.timeout_s
        credential = form.get(f"steps.{index}.credential_id", "")
        if credential:
            step["credential_id"] = credential
        loop = form.get(f"steps.{index}.for_each", "").strip()
        if loop:
            step["for_each"] = _loop(loop)
        at_once = form.get(f"steps.{index}.concurrency", "").strip()
        if at_once:  # a number, else left as typed: refused when saved, at the field
            step["concurrency"] = int(at_once) if at_once.isdecimal() else at_once
        when = form.get(f"steps.{index}.when", "").strip()
        if when:
            step["when"] = _TEXT_BOOLEANS.get(when.lower(), when)
        return step

    def _validated(self, model: type[WorkflowCreate]) -> WorkflowCreate | None:
        if self.payload is None or self.errors:
            self.message = self.message or "Please correct the fields marked below."
            return None
        try:
            return model.model_validate(self.payload)
        except ValidationError as exc:
            self.add_errors(
                forms.errors_by_field(exc.errors(include_input=False, include_url=False)),
                "Invalid workflow",
            )
            return None

    def to_create(self) -> WorkflowCreate | None:
        return self._validated(WorkflowCreate)

    def to_update(self) -> WorkflowUpdate | None:
        data = self._validated(WorkflowUpdate)
        return data if isinstance(data, WorkflowUpdate) else None

    def add_errors(self, errors: dict[str, str], message: str) -> None:
        self.errors.update(errors)
        self.message = message


#: A ``when`` typed as a literal: the boolean (as a stored one is shown).
_TEXT_BOOLEANS = {"true": True, "false": False}


def _loop(text: str) -> Any:
    """A ``for_each`` as typed: a JSON list (as a stored literal list is shown), else the
    template it is."""
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            return text  # refused when saved, next to the field
        if isinstance(value, list):
            return value
    return text
