"""What the intake keeps between webhooks: caches, the rate limiter, queue-depth counts."""

from __future__ import annotations

from dataclasses import dataclass, field

from ipaas.config import Settings
from ipaas.credentials.crypto import CredentialCipher
from ipaas.kit.cache import TtlCache
from ipaas.tenants.models import Tenant, TenantLimits
from ipaas.webhooks.cache import TTL_S, WorkflowCache
from ipaas.webhooks.depth import QueueDepth
from ipaas.webhooks.ratelimit import TenantRateLimiter


@dataclass(slots=True)
class Intake:
    settings: Settings
    cipher: CredentialCipher
    workflows: WorkflowCache
    limiter: TenantRateLimiter
    depth: QueueDepth
    #: Limit overrides (``ipaas tenant limits`` in another process shows within the TTL).
    tenants: TtlCache[str, Tenant | None] = field(default_factory=lambda: TtlCache(TTL_S))
    #: ``(tenant_id, credential_id)`` -> the signing secrets, newest first (empty: none).
    #: A deleted credential keeps verifying for at most the TTL.
    secrets: TtlCache[tuple[str, str], tuple[str, ...]] = field(
        default_factory=lambda: TtlCache(TTL_S)
    )

    @classmethod
    def build(
        cls, settings: Settings, *, cipher: CredentialCipher, workflows: WorkflowCache
    ) -> Intake:
        return cls(
            settings=settings,
            cipher=cipher,
            workflows=workflows,
            limiter=TenantRateLimiter(settings.redis_url),
            depth=QueueDepth(settings.queue_depth_cache_s),
        )

    def default_limits(self) -> TenantLimits:
        """The settings' defaults, read per webhook (tests and operators may change them)."""
        s = self.settings
        return TenantLimits.model_construct(
            rate_limit=s.tenant_rate_limit,
            rate_burst=s.tenant_rate_burst,
            max_queued=s.tenant_max_queued,
            max_concurrency=s.default_tenant_concurrency,
        )
