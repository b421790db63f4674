"""What the API, the workers and the CLI share: one typed bundle, built once per process."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog

from ipaas.config import Settings
from ipaas.credentials.crypto import CredentialCipher
from ipaas.credentials.oauth2 import CredentialSessions
from ipaas.engine.breaker import CircuitBreaker
from ipaas.engine.cancellation import (
    CancelBus,
    CancelRegistry,
    LocalCancelBus,
    StopReason,
    create_cancel_bus,
)
from ipaas.engine.connectors.base import Endpoints
from ipaas.engine.connectors.oauth2 import TokenCache
from ipaas.engine.queue import JobQueue, create_queue
from ipaas.engine.templating import TemplateRenderer
from ipaas.errors import StoreUnavailable
from ipaas.kit.egress import EgressPolicy
from ipaas.kit.http import HttpClient
from ipaas.stores.base import SchemaBehind, Store
from ipaas.tenants.throttle import LoginThrottle
from ipaas.webhooks.cache import WorkflowCache
from ipaas.webhooks.intake import Intake

_log = structlog.get_logger(__name__)

#: Longest pause between attempts to reach the database at start-up.
STARTUP_RETRY_MAX_S = 5.0


@dataclass(slots=True)
class Runtime:
    settings: Settings
    store: Store
    queue: JobQueue
    http: HttpClient
    cipher: CredentialCipher
    endpoints: Endpoints
    workflow_cache: WorkflowCache
    #: The webhook intake's caches, rate limiter and queue-depth counts.
    intake: Intake
    #: Per (tenant, host) circuits of outbound calls (state shared through the store).
    breaker: CircuitBreaker
    #: Failed log-ins per account (beside the intake's rate limits, in memory or Redis).
    logins: LoginThrottle
    cancels: CancelRegistry = field(default_factory=CancelRegistry)
    #: Carries a cancel to the process running the execution (Redis pub/sub when scaled out).
    cancel_bus: CancelBus = field(default_factory=LocalCancelBus)
    #: Renders step configs, each tenant within its share of this process's render time.
    templates: TemplateRenderer = field(default_factory=TemplateRenderer)
    #: OAuth 2.0 access tokens of ``http`` credentials, shared by this process's steps.
    tokens: TokenCache = field(default_factory=TokenCache)
    #: Counts credential changes made through this process: part of the key of the
    #: executors' secret caches, so a new secret is used here at once (elsewhere within
    #: their TTL).
    credential_changes: int = 0

    def __post_init__(self) -> None:
        if self.tokens.sessions is None:  # connections of users' accounts are in the store
            self.tokens.sessions = CredentialSessions(self.store, self.cipher)

    def credential_changed(self, tenant_id: str, credential_id: str) -> None:
        """Forget this process's cached copies of a credential's secret."""
        self.credential_changes += 1
        self.intake.secrets.invalidate((tenant_id, credential_id))

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
        cipher = CredentialCipher(settings.fernet_key)
        workflow_cache = WorkflowCache()
        intake = Intake.build(settings, cipher=cipher, workflows=workflow_cache)
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
            cipher=cipher,
            workflow_cache=workflow_cache,
            intake=intake,
            logins=LoginThrottle(intake.limiter.storage),
            endpoints=Endpoints(
                slack_api_url=settings.slack_api_url, openweather_url=settings.openweather_url
            ),
            breaker=CircuitBreaker(
                store,
                threshold=settings.circuit_failure_threshold,
                cooldown_s=settings.circuit_cooldown_s,
                probe_s=settings.step_timeout_s,
            ),
            templates=TemplateRenderer(
                timeout_s=settings.template_timeout_s,
                tenant_share=settings.template_tenant_share,
            ),
        )

    async def startup(self) -> None:
        await self._start_store()
        await self.queue.startup()
        # Every process subscribes: where the execution does not run, a cancel is a no-op.
        await self.cancel_bus.start(self._cancel_here)

    async def shutdown(self) -> None:
        await self.cancel_bus.stop()
        await self.queue.shutdown()
        await self.intake.limiter.aclose()
        await self.http.aclose()
        await self.store.shutdown()

    async def _start_store(self) -> None:
        """Wait for the database: a process started during an outage (or before the database
        after a reboot) comes up when it returns instead of exiting; one started before the
        release's ``ipaas migrate`` (or with it forgotten) comes up once the schema is there,
        where every statement naming a new column would have failed."""
        pause = 0.2
        while True:
            try:
                await self.store.startup()
                return
            except SchemaBehind as exc:
                _log.warning(
                    "schema_not_migrated",
                    retry_in_s=pause,
                    found=exc.found,
                    expected=exc.expected,
                    error=str(exc),
                )
            except StoreUnavailable as exc:
                # Why (refused, a timeout, too many connections...) is the operator's clue.
                cause = exc.__cause__
                _log.warning(
                    "store_unreachable_at_startup",
                    retry_in_s=pause,
                    error=f"{type(cause).__name__}: {cause}" if cause is not None else None,
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, STARTUP_RETRY_MAX_S)

    def _cancel_here(self, execution_id: str) -> None:
        self.cancels.stop(execution_id, StopReason.cancelled)
