"""A tenant's execution figures over a recent window: counts per minute by status and
duration percentiles, computed from the store's finished executions."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from ipaas.executions.models import ExecutionStatus
from ipaas.executions.schemas import MAX_WINDOW_S, MIN_WINDOW_S, ExecutionStats, MinuteCounts
from ipaas.stores.base import FinishedExecution, Store

#: Executions read at most; past it the oldest part of the window is left out (``truncated``).
MAX_ROWS = 100_000
PERCENTILES = (50, 95, 99)


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of ascending ``sorted_values``."""
    if not sorted_values:
        return None
    rank = max(math.ceil(p / 100 * len(sorted_values)), 1)
    return sorted_values[rank - 1]


def summarize(
    finished: Sequence[FinishedExecution], *, since: datetime, until: datetime, truncated: bool
) -> ExecutionStats:
    by_minute: defaultdict[datetime, Counter[str]] = defaultdict(Counter)
    for f in finished:
        by_minute[f.finished_at.replace(second=0, microsecond=0)][f.status.value] += 1
    totals: Counter[str] = Counter(f.status.value for f in finished)
    minutes = max((until - since) / timedelta(minutes=1), 1.0)
    durations = sorted(f.duration_s for f in finished)
    return ExecutionStats(
        since=since,
        until=until,
        total=len(finished),
        truncated=truncated,
        by_status={s.value: totals[s.value] for s in ExecutionStatus if s.terminal},
        per_minute_avg={
            s.value: round(totals[s.value] / minutes, 3) for s in ExecutionStatus if s.terminal
        },
        per_minute=[
            MinuteCounts(minute=minute, counts=dict(counts))
            for minute, counts in sorted(by_minute.items())
        ],
        duration_s={f"p{p}": percentile(durations, p) for p in PERCENTILES},
    )


async def for_tenant(
    store: Store, *, tenant_id: str, window_s: int, now: datetime
) -> ExecutionStats:
    """The tenant's executions that finished within the last ``window_s`` seconds."""
    window_s = min(max(window_s, MIN_WINDOW_S), MAX_WINDOW_S)
    since = now - timedelta(seconds=window_s)
    finished = await store.list_finished(tenant_id, since=since, limit=MAX_ROWS + 1)
    truncated = len(finished) > MAX_ROWS
    return summarize(finished[:MAX_ROWS], since=since, until=now, truncated=truncated)
