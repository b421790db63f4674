"""What the API, the workers and the CLI share: one typed bundle, built once per process."""

from __future__ import annotations

from dataclasses import dataclass, field

from ipaas.config import Settings
from ipaas.credentials.crypto import CredentialCipher
from ipaas.engine.cancellation import (
    CancelBus,
    CancelRegistry,
    LocalCancelBus,
    StopReason,
    create_cancel_bus,
)
from ipaas.engine.connectors.base import Endpoints
from ipaas.engine.queue import JobQueue, create_queue
from ipaas.kit.egress import EgressPolicy
from ipaas.kit.http import HttpClient
from ipaas.stores.base import Store
from ipaas.webhooks.cache import WorkflowCache


@dataclass(slots=True)
class Runtime:
    settings: Settings
    store: Store
    queue: JobQueue
    http: HttpClient
    cipher: CredentialCipher
    endpoints: Endpoints
    workflow_cache: WorkflowCache = field(default_factory=WorkflowCache)
    cancels: CancelRegistry = field(default_factory=CancelRegistry)
    #: Carries a cancel to the process running the execution (Redis pub/sub when scaled out).
    cancel_bus: CancelBus = field(default_factory=LocalCancelBus)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        store: Store | None = None,
        queue: JobQueue | None = None,
        cancel_bus: CancelBus | None = None,
    ) -> Runtime:
        if store is None:
            from ipaas.stores import create_store

            store = create_store(settings)
        return cls(
            settings=settings,
            store=store,
            queue=queue if queue is not None else create_queue(settings),
            cancel_bus=cancel_bus
            if cancel_bus is not None
            else create_cancel_bus(settings.redis_url),
            http=HttpClient(
                timeout_s=settings.step_timeout_s,
                max_connections=max(settings.workers * 2, 20),
                egress=EgressPolicy.from_allow(settings.egress_allow),
            ),
            cipher=CredentialCipher(settings.fernet_key),
            endpoints=Endpoints(
                slack_api_url=settings.slack_api_url, openweather_url=settings.openweather_url
            ),
        )

    async def startup(self) -> None:
        await self.store.startup()
        await self.queue.startup()
        # Every process subscribes: where the execution does not run, a cancel is a no-op.
        await self.cancel_bus.start(self._cancel_here)

    async def shutdown(self) -> None:
        await self.cancel_bus.stop()
        await self.queue.shutdown()
        await self.http.aclose()
        await self.store.shutdown()

    def _cancel_here(self, execution_id: str) -> None:
        self.cancels.stop(execution_id, StopReason.cancelled)
