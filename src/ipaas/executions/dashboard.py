"""What the console's dashboard shows: the last hour of a tenant's executions.

Built on ``Store.list_outcomes`` (five columns per execution, no trigger data decoded);
``MAX_SCANNED`` bounds the work for a very busy tenant, and the figures then say they were
cut short.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ipaas.executions.models import ExecutionStatus
from ipaas.executions.stats import percentile
from ipaas.stores.base import Store

WINDOW = timedelta(hours=1)
#: The most executions one summary reads.
MAX_SCANNED = 50_000
FAILED = (ExecutionStatus.failed, ExecutionStatus.timed_out)


@dataclass(slots=True)
class FailingWorkflow:
    workflow_id: str
    failed: int
    total: int


@dataclass(slots=True)
class Summary:
    since: datetime
    #: 60 buckets, oldest first: per minute, a count per status.
    per_minute: list[dict[ExecutionStatus, int]]
    total: int
    p50_ms: float | None
    p95_ms: float | None
    queue_depth: int
    failing: list[FailingWorkflow] = field(default_factory=list)
    truncated: bool = False


async def summarize(store: Store, *, tenant_id: str, now: datetime) -> Summary:
    since = (now - WINDOW).replace(second=0, microsecond=0) + timedelta(minutes=1)
    executions = await store.list_outcomes(tenant_id, since=since, limit=MAX_SCANNED)
    truncated = len(executions) >= MAX_SCANNED
    per_minute: list[dict[ExecutionStatus, int]] = [{} for _ in range(60)]
    durations: list[float] = []
    by_workflow: dict[str, list[int]] = {}
    for execution in executions:
        index = min(59, int((execution.created_at - since).total_seconds() // 60))
        bucket = per_minute[index]
        bucket[execution.status] = bucket.get(execution.status, 0) + 1
        if execution.started_at and execution.finished_at:
            durations.append((execution.finished_at - execution.started_at).total_seconds() * 1000)
        counts = by_workflow.setdefault(execution.workflow_id, [0, 0])
        counts[1] += 1
        if execution.status in FAILED:
            counts[0] += 1
    failing = sorted(
        (FailingWorkflow(wid, failed, total) for wid, (failed, total) in by_workflow.items()),
        key=lambda f: (-f.failed, f.workflow_id),
    )
    durations.sort()
    return Summary(
        since=since,
        per_minute=per_minute,
        total=len(executions),
        p50_ms=percentile(durations, 50),
        p95_ms=percentile(durations, 95),
        queue_depth=await store.count_queued(tenant_id),
        failing=[f for f in failing if f.failed][:10],
        truncated=truncated,
    )
