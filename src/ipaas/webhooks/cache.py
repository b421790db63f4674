"""The intake's view of workflows: cached briefly, dropped on every local change."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from ipaas.workflows.models import Workflow

#: Another process's change is seen within this time; local changes invalidate at once.
TTL_S = 2.0
MAX_ENTRIES = 10_000


class WorkflowCache:
    def __init__(self, ttl_s: float = TTL_S) -> None:
        self._ttl_s = ttl_s
        self._entries: dict[str, tuple[float, Workflow | None]] = {}

    async def get(
        self, workflow_id: str, load: Callable[[str], Awaitable[Workflow | None]]
    ) -> Workflow | None:
        now = time.monotonic()
        hit = self._entries.get(workflow_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        workflow = await load(workflow_id)
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[workflow_id] = (now + self._ttl_s, workflow)
        return workflow

    def invalidate(self, workflow_id: str) -> None:
        self._entries.pop(workflow_id, None)
