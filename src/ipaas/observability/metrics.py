"""Prometheus metrics. Every process keeps its own (prometheus_client's default registry) and
serves them itself: the API on ``GET /metrics``, ``ipaas worker`` and ``ipaas scheduler`` on
``IPAAS_METRICS_PORT`` (``observability/exporter.py``). Prometheus tells them apart by
``instance``; docs/operations.md says how to sum counters and take ``max`` of store gauges.

Labels are bounded: outcome codes, HTTP statuses, execution statuses, connector types from
the registry (anything else is ``unknown``). Never a tenant, execution id or URL: tenants
are unbounded in number, and ``GET /api/stats`` answers per-tenant questions instead.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest

from ipaas.circuits.models import CircuitState
from ipaas.engine.connectors import REGISTRY as CONNECTORS
from ipaas.executions.models import ExecutionStatus
from ipaas.stores.base import Store

#: How long store-derived gauges are trusted: scrapes (several Prometheus servers, a
#: dashboard refreshing) within this time cost no query.
STORE_GAUGES_TTL_S = 5.0

#: Codes of refusals for load (429/503), counted apart as backpressure.
THROTTLE_CODES = frozenset({"rate_limited", "queue_full", "tenant_queue_full"})

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SLOW = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)

WEBHOOKS = Counter(
    "ipaas_webhooks",
    "Webhooks received, by outcome (accepted, duplicate, or the error code) and HTTP status",
    ["outcome", "status_code"],
)
WEBHOOK_SECONDS = Histogram(
    "ipaas_webhook_duration_seconds", "Time to answer a webhook (intake route)", buckets=_FAST
)
WEBHOOKS_THROTTLED = Counter(
    "ipaas_webhooks_throttled",
    "Webhooks refused for load: rate_limited (429), queue_full / tenant_queue_full (503)",
    ["reason"],
)
EXECUTIONS_FINISHED = Counter(
    "ipaas_executions_finished", "Executions that reached a terminal status", ["status"]
)
EXECUTION_SECONDS = Histogram(
    "ipaas_execution_duration_seconds",
    "From an execution's first start to its terminal status (retry waits included)",
    ["status"],
    buckets=_SLOW,
)
STEP_SECONDS = Histogram(
    "ipaas_step_duration_seconds",
    "One step attempt (render, call, answer), by connector type and step status",
    ["connector", "status"],
    buckets=_SLOW,
)
STEP_RETRIES = Counter(
    "ipaas_step_retries", "Failed step attempts scheduled to run again", ["connector"]
)
EXECUTIONS_RUNNING = Gauge("ipaas_executions_running", "Executions running in this process")
CLOCK_OFFSET = Gauge(
    "ipaas_clock_offset_seconds",
    "How far PostgreSQL's clock is ahead of this process's (workers and the scheduler)",
)
REAPER_REQUEUED = Counter(
    "ipaas_reaper_requeued", "Running executions whose lease expired, put back in the queue"
)
EXECUTIONS_PRUNED = Counter(
    "ipaas_executions_pruned", "Finished executions deleted by the retention job"
)
REAPER_TIMED_OUT = Counter("ipaas_reaper_timed_out", "Executions the reaper timed out")
QUEUE_VACUUMS = Counter(
    "ipaas_queue_vacuums", "VACUUMs of the execution table run by this process (PostgreSQL)"
)
# From the store at scrape time: the same value in every process (take max, not sum).
QUEUE_DEPTH = Gauge(
    "ipaas_queue_depth", "Queued executions ready to run, all tenants (from the store)"
)
QUEUE_WAITING = Gauge(
    "ipaas_queue_waiting",
    "Queued executions waiting for a retry's backoff or a delay, all tenants (from the store)",
)
QUEUE_OLDEST_AGE = Gauge(
    "ipaas_queue_oldest_age_seconds",
    "Age of the oldest queued execution that is due (0 when none; from the store)",
)
LEASES_EXPIRED = Gauge(
    "ipaas_executions_lease_expired",
    "Running executions whose lease expired (stuck until the reaper runs; from the store)",
)
CIRCUITS = Gauge(
    "ipaas_circuits", "Circuits not closed, by state, all tenants (from the store)", ["state"]
)

_ACCEPTED = WEBHOOKS.labels("accepted", "202")
_DUPLICATE = WEBHOOKS.labels("duplicate", "200")


def webhook_answered(started: float, *, duplicate: bool = False) -> None:
    """A webhook was accepted (202) or was a duplicate (200)."""
    (_DUPLICATE if duplicate else _ACCEPTED).inc()
    WEBHOOK_SECONDS.observe(time.perf_counter() - started)


def webhook_refused(code: str, status_code: int, started: float) -> None:
    WEBHOOKS.labels(code, str(status_code)).inc()
    WEBHOOK_SECONDS.observe(time.perf_counter() - started)
    if code in THROTTLE_CODES:
        WEBHOOKS_THROTTLED.labels(code).inc()


def connector_label(step_type: str) -> str:
    """The step type if it names a connector; user-made names would be unbounded."""
    return step_type if step_type in CONNECTORS else "unknown"


# The labelled children of the per-execution metrics, looked up once per label set
# (``labels()`` takes a lock and builds a key on every call). The label sets are bounded.
_finished = functools.cache(EXECUTIONS_FINISHED.labels)
_execution_seconds = functools.cache(EXECUTION_SECONDS.labels)
_step_seconds = functools.cache(STEP_SECONDS.labels)
_step_retries = functools.cache(STEP_RETRIES.labels)


def execution_finished(
    status: ExecutionStatus, started_at: datetime | None, finished_at: datetime
) -> None:
    _finished(status.value).inc()
    if started_at is not None:
        _execution_seconds(status.value).observe(
            max((finished_at - started_at).total_seconds(), 0.0)
        )


def step_finished(step_type: str, status: str, seconds: float, *, retried: bool) -> None:
    connector = connector_label(step_type)
    _step_seconds(connector, status).observe(max(seconds, 0.0))
    if retried:
        _step_retries(connector).inc()


@dataclass(slots=True)
class StoreGauges:
    """Refreshes the store-derived gauges at scrape time, at most every ``ttl_s``;
    concurrent scrapes share one refresh."""

    ttl_s: float = STORE_GAUGES_TTL_S
    _fresh_until: float = 0.0
    _pending: asyncio.Task[None] | None = field(default=None)

    async def refresh(self, store: Store) -> None:
        if time.monotonic() < self._fresh_until:
            return
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(self._read(store))
        await asyncio.shield(self._pending)

    async def _read(self, store: Store) -> None:
        from ipaas.kit.clock import utcnow

        now = utcnow()
        stats = await store.queue_stats(now=now)
        circuits = await store.list_unclosed_circuits()
        QUEUE_DEPTH.set(stats.queued)
        QUEUE_WAITING.set(stats.waiting)
        QUEUE_OLDEST_AGE.set(
            max((now - stats.oldest_due_at).total_seconds(), 0.0) if stats.oldest_due_at else 0.0
        )
        LEASES_EXPIRED.set(stats.lease_expired)
        for state in (CircuitState.open, CircuitState.half_open):
            CIRCUITS.labels(state.value).set(sum(1 for c in circuits if c.state is state))
        self._fresh_until = time.monotonic() + self.ttl_s


async def render(store: Store, gauges: StoreGauges) -> bytes:
    """This process's metrics in the Prometheus text format. A store outage leaves the
    store gauges at their last values rather than failing the scrape."""
    try:
        await gauges.refresh(store)
    except Exception:  # the process's own metrics still matter most during an outage
        import structlog

        structlog.get_logger(__name__).warning("metrics_store_gauges_failed", exc_info=True)
    return generate_latest(REGISTRY)


__all__ = ["CONTENT_TYPE", "StoreGauges", "render"]
