"""The intake's view of workflows: cached briefly, dropped on every local change."""

from __future__ import annotations

from dataclasses import dataclass

from ipaas.kit.cache import TtlCache
from ipaas.workflows.models import WebhookOptions, Workflow

#: Another process's change is seen within this time; local changes invalidate at once.
TTL_S = 2.0


@dataclass(frozen=True, slots=True)
class IntakeWorkflow:
    """An active webhook workflow, with its trigger options parsed once per load."""

    workflow: Workflow
    options: WebhookOptions
    #: The stored options do not parse (they are checked on save, so this is a bug or a
    #: hand edit): the intake refuses the workflow's webhooks rather than skip its auth.
    misconfigured: bool = False


class WorkflowCache(TtlCache[str, IntakeWorkflow | None]):
    def __init__(self, ttl_s: float = TTL_S) -> None:
        super().__init__(ttl_s)
