"""Which queued executions a claim takes: round-robin across tenants, within their caps.

Both stores use ``share``: the memory store over its dict, the SQL store over the few rows it
reads per tenant inside the claim's transaction. Keeping the choice in one pure function keeps
the backends in step (the contract suite checks the outcome on each).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol, TypeVar


class Candidate(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def tenant_id(self) -> str: ...

    @property
    def created_at(self) -> datetime: ...


C = TypeVar("C", bound=Candidate)


def cap_of(override: int | None, default: int | None) -> int | None:
    """A tenant's concurrency cap: its override, else the default (``None``: no cap)."""
    return override if override is not None else default


def room(running: int, cap: int | None, limit: int) -> int:
    """How many more executions a tenant may start in one claim of ``limit``."""
    return limit if cap is None else max(0, min(limit, cap - running))


def share(queued: Mapping[str, Sequence[C]], running: Mapping[str, int], limit: int) -> list[C]:
    """Up to ``limit`` of the candidates, max-min fair across tenants.

    ``queued`` holds each tenant's due executions oldest first, already cut to what its cap
    allows. Each slot goes to the tenant with the fewest executions running (counting the ones
    this claim has given it so far), ties to the older head, so a tenant with one running
    execution is served before a tenant with five, whatever their queues' lengths. With equal
    counts this is plain round-robin: one each, in the order of their oldest waiting work.
    """
    heap = [
        (running.get(tenant_id, 0), rows[0].created_at, rows[0].id, tenant_id, 0)
        for tenant_id, rows in queued.items()
        if rows
    ]
    heapq.heapify(heap)
    taken: list[C] = []
    while heap and len(taken) < limit:
        load, _, _, tenant_id, index = heapq.heappop(heap)
        rows = queued[tenant_id]
        taken.append(rows[index])
        if index + 1 < len(rows):
            nxt = rows[index + 1]
            heapq.heappush(heap, (load + 1, nxt.created_at, nxt.id, tenant_id, index + 1))
    return taken
