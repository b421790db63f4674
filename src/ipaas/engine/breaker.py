"""Circuit breakers per (tenant, destination host), shared through the store.

The store holds each circuit (``circuit`` table; see ``Store.record_circuit_failure`` and
friends), so every process sees the same state. Each process also keeps the circuits it
knows to be unhealthy in memory: a call to a host whose circuit is closed and has no
failures costs no I/O at all, before or after. The store is written only when a call fails
(retryable class: connection error, timeout, 408, 429, 5xx) or when a success changes
something (resets a failure count, closes a half-open circuit). Every process re-reads the
circuits that are not closed once a second (``refresh``), so a circuit another process
opened fails fast here too within a second; until then a call may still go out, and its
failure brings the current state back with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from ipaas.circuits.models import Circuit, CircuitState
from ipaas.engine.connectors.base import CircuitOpenError
from ipaas.kit.clock import utcnow
from ipaas.stores.base import Store

_log = structlog.get_logger(__name__)

#: While a probe is in flight, other callers come back after this long (or the cooldown, if
#: shorter): a probe usually answers in well under a second, and then the circuit is
#: closed again or open for a whole cooldown.
HALF_OPEN_RECHECK_S = 1.0


class CircuitBreaker:
    """One per process; ``gate(tenant_id)`` is what a step's connector talks to."""

    def __init__(self, store: Store, *, threshold: int, cooldown_s: float, probe_s: float) -> None:
        self.store = store
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        #: How long a half-open circuit waits for its probe before letting another go.
        self.probe_s = max(probe_s, cooldown_s)
        #: Circuits with failures or not closed; absent means closed and healthy.
        self._known: dict[tuple[str, str], Circuit] = {}

    def gate(self, tenant_id: str) -> TenantGate:
        return TenantGate(self, tenant_id)

    async def before(self, tenant_id: str, host: str) -> None:
        """Raise ``CircuitOpenError`` unless a call to ``host`` may go out now."""
        key = (tenant_id, host)
        circuit = self._known.get(key)
        if circuit is None or circuit.state is CircuitState.closed:
            return
        now = utcnow()
        if circuit.retry_at is not None and circuit.retry_at > now:
            raise CircuitOpenError(host, self._come_back_at(circuit, now))
        # The cooldown is over (as far as this process knows): one caller, in any process,
        # sends the probe.
        probe_until = now + timedelta(seconds=self.probe_s)
        try:
            probing = await self.store.claim_circuit_probe(
                tenant_id, host, now=now, probe_until=probe_until
            )
            current = None if probing else await self.store.get_circuit(tenant_id, host)
        except Exception:  # a store outage must not stop every call: let this one through
            _log.warning("circuit_check_failed", host=host, exc_info=True)
            return
        if probing:
            self._known[key] = circuit.model_copy(
                update={"state": CircuitState.half_open, "retry_at": probe_until}
            )
            _log.info("circuit_probe", tenant_id=tenant_id, host=host)
            return
        if current is None or current.state is CircuitState.closed:
            self._remember(key, current)
            return
        self._known[key] = current
        raise CircuitOpenError(host, self._come_back_at(current, now))

    async def after(self, tenant_id: str, host: str, *, failed: bool) -> None:
        """Count a call's outcome. A success on a healthy circuit writes nothing."""
        key = (tenant_id, host)
        known = self._known.get(key)
        if not failed and known is None:
            return
        now = utcnow()
        try:
            if failed:
                circuit: Circuit | None = await self.store.record_circuit_failure(
                    tenant_id,
                    host,
                    now=now,
                    threshold=self.threshold,
                    retry_at=now + timedelta(seconds=self.cooldown_s),
                )
            else:
                circuit = await self.store.record_circuit_success(tenant_id, host, now=now)
        except Exception:  # the call's own outcome matters more than its bookkeeping
            _log.warning("circuit_record_failed", host=host, exc_info=True)
            return
        before = known.state if known is not None else CircuitState.closed
        after = circuit.state if circuit is not None else CircuitState.closed
        if before is not after:
            _log.info(f"circuit_{after.value}", tenant_id=tenant_id, host=host)
        self._remember(key, circuit)

    async def refresh(self) -> None:
        """Take over the circuits other processes opened or closed (once a second)."""
        unclosed = {(c.tenant_id, c.host): c for c in await self.store.list_unclosed_circuits()}
        for key, circuit in list(self._known.items()):
            if key not in unclosed and circuit.state is not CircuitState.closed:
                del self._known[key]  # closed elsewhere (by a successful probe)
        self._known.update(unclosed)

    def _remember(self, key: tuple[str, str], circuit: Circuit | None) -> None:
        if circuit is None or (circuit.state is CircuitState.closed and circuit.failures == 0):
            self._known.pop(key, None)
        else:
            self._known[key] = circuit

    def _come_back_at(self, circuit: Circuit, now: datetime) -> datetime:
        """When a caller turned away should try again."""
        if circuit.state is CircuitState.open and circuit.retry_at is not None:
            return max(circuit.retry_at, now)
        return now + timedelta(seconds=min(HALF_OPEN_RECHECK_S, self.cooldown_s))


@dataclass(frozen=True, slots=True)
class TenantGate:
    """The ``CircuitGate`` of one tenant's steps."""

    breaker: CircuitBreaker
    tenant_id: str

    async def before(self, host: str) -> None:
        await self.breaker.before(self.tenant_id, host)

    async def after(self, host: str, *, failed: bool) -> None:
        await self.breaker.after(self.tenant_id, host, failed=failed)
