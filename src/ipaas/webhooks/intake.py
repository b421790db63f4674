"""What the intake keeps between webhooks: caches, the rate limiter, queue-depth counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ipaas.config import Settings
from ipaas.credentials.crypto import CredentialCipher
from ipaas.kit.cache import MAX_ENTRIES, TtlCache
from ipaas.tenants import service as tenant_service
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
    #: ``(tenant_id, credential_id)`` -> the ``verify_token`` of Meta's subscription check
    #: (``None``: the credential has none).
    verify_tokens: TtlCache[tuple[str, str], str | None] = field(
        default_factory=lambda: TtlCache(TTL_S)
    )
    #: The settings' values ``default_limits`` last saw, and the limits made of them.
    _defaults: tuple[tuple[Any, ...], TenantLimits] | None = field(default=None, init=False)
    #: tenant id -> (the tenant record, the defaults, its effective limits).
    _limits: dict[str | None, tuple[Tenant | None, TenantLimits, TenantLimits]] = field(
        default_factory=dict, init=False
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
        values = (
            s.tenant_rate_limit,
            s.tenant_rate_burst,
            s.tenant_max_queued,
            s.default_tenant_concurrency,
        )
        cached = self._defaults
        if cached is None or cached[0] != values:
            limits = TenantLimits.model_construct(
                rate_limit=values[0],
                rate_burst=values[1],
                max_queued=values[2],
                max_concurrency=values[3],
            )
            cached = self._defaults = (values, limits)
        return cached[1]

    def limits_for(self, tenant: Tenant | None) -> TenantLimits:
        """``tenant``'s effective limits (its overrides, else the defaults), computed again
        only when the tenant record (reloaded every TTL) or the defaults changed: building
        them per webhook was a tenth of the intake's own work (docs/benchmarks.md)."""
        defaults = self.default_limits()
        key = tenant.id if tenant is not None else None
        cached = self._limits.get(key)
        if cached is not None and cached[0] is tenant and cached[1] is defaults:
            return cached[2]
        limits = tenant_service.effective_limits(
            tenant.limits if tenant is not None else TenantLimits(), defaults
        )
        if len(self._limits) >= MAX_ENTRIES:
            self._limits.clear()
        self._limits[key] = (tenant, defaults, limits)
        return limits
