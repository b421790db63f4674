from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from ipaas.circuits.models import Circuit, CircuitState


class CircuitRead(BaseModel):
    host: str
    state: CircuitState
    consecutive_failures: int
    opened_at: datetime | None
    #: Open: when a probe call may go through. Half-open: when the probe in flight lapses.
    retry_at: datetime | None
    updated_at: datetime

    @classmethod
    def of(cls, circuit: Circuit) -> CircuitRead:
        return cls(
            host=circuit.host,
            state=circuit.state,
            consecutive_failures=circuit.failures,
            opened_at=circuit.opened_at,
            retry_at=circuit.retry_at,
            updated_at=circuit.updated_at,
        )


class CircuitList(BaseModel):
    items: list[CircuitRead]
