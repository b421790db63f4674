from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel


class CircuitState(StrEnum):
    #: Calls go through; ``failures`` counts consecutive failures.
    closed = "closed"
    #: Calls fail fast with ``circuit_open`` until ``retry_at``.
    open = "open"
    #: One probe call is in flight (until ``retry_at`` at most); the others still fail fast.
    half_open = "half_open"


class Circuit(BaseModel):
    """The breaker of one (tenant, destination host)."""

    tenant_id: str
    #: ``host`` or ``host:port`` of the destination URL.
    host: str
    state: CircuitState = CircuitState.closed
    #: Consecutive retryable-class failures (connection errors, timeouts, 5xx, 429).
    failures: int = 0
    opened_at: datetime | None = None
    #: Open: when a probe may go through. Half-open: when the probe's turn lapses.
    retry_at: datetime | None = None
    updated_at: datetime
