"""Per-tenant rate limits on the ``limits`` library (async API): the intake's, and the
authenticated API's (``hit_api``, a budget of its own).

"Sustained rate R per second, burst B" becomes ONE sliding-window-counter item of B webhooks
per ``ceil(B / R)`` seconds: a tenant may send its whole burst at once, and over any longer
stretch averages at most R (exactly R when B is a multiple of R). One item means one storage
call per webhook (one Redis round trip when scaled out) and O(1) memory per tenant, where a
moving window would keep B timestamps per tenant and two items would cost two calls. A burst
below one second's worth of the rate is raised to it: the library's windows are whole
seconds. The sliding-window counter weights the previous window's count by how much of it
still overlaps, so it is an approximation (a uniform spread is assumed), never a fixed
window's 2x at a boundary.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import structlog
from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError

from ipaas.errors import TooManyRequests

if TYPE_CHECKING:
    from redis.asyncio import ConnectionPool

_log = structlog.get_logger(__name__)

#: Redis keys of the limiter (``<prefix>:LIMITS:LIMITER/<tenant>/<amount>/<window>/second``).
KEY_PREFIX = "ipaas:ratelimit"


@dataclass(frozen=True, slots=True)
class Rate:
    """What the limiter enforces for one tenant: ``amount`` webhooks per ``window_s``."""

    amount: int
    window_s: int

    @property
    def item(self) -> RateLimitItemPerSecond:
        return _item(self.amount, self.window_s)


@lru_cache(maxsize=1024)
def _item(amount: int, window_s: int) -> RateLimitItemPerSecond:
    return RateLimitItemPerSecond(amount, window_s)


def rate_for(per_s: float, burst: int | None) -> Rate:
    """Map a sustained rate and a burst onto one window (see the module docstring)."""
    if burst is None:
        burst = max(1, math.ceil(per_s))
    if burst < per_s:
        return Rate(amount=max(burst, math.floor(per_s)), window_s=1)
    return Rate(amount=burst, window_s=max(1, math.ceil(burst / per_s)))


class RateLimited(TooManyRequests):
    code = "rate_limited"


class ApiRateLimited(TooManyRequests):
    code = "api_rate_limited"


class TenantRateLimiter:
    """One budget per tenant: in this process, or in Redis shared by every process."""

    def __init__(self, redis_url: str | None = None, *, key_prefix: str = KEY_PREFIX) -> None:
        storage: Storage
        self._pool: ConnectionPool | None = None
        if redis_url is None:
            storage = MemoryStorage()
        else:
            # redis-py (already here for the queue) rather than limits' default coredis,
            # on a pool of our own so that ``aclose`` can close it. Imported here: the
            # embedded server, which has no Redis, does not load the client (memory).
            from redis.asyncio import ConnectionPool

            self._pool = ConnectionPool.from_url(redis_url)
            storage = RedisStorage(
                f"async+{redis_url}",
                implementation="redispy",
                key_prefix=key_prefix,
                wrap_exceptions=True,
                # Passed on to redis-py's client; limits types its options narrowly.
                connection_pool=self._pool,  # type: ignore[arg-type]
            )
        #: Also counts failed log-ins (``tenants.throttle``): one Redis pool, not two.
        self.storage = storage
        self._limiter = SlidingWindowCounterRateLimiter(storage)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()

    async def hit(self, tenant_id: str, rate: Rate) -> None:
        """Count one webhook; raise ``RateLimited`` (with the draft's headers) when over.

        A storage failure (Redis down) lets the webhook through: the store, not Redis,
        decides what is accepted, and losing the limit for a while beats refusing work."""
        await self._hit(tenant_id, rate, RateLimited, "webhook")

    async def hit_api(self, tenant_id: str, rate: Rate) -> None:
        """Count one API request, in a budget apart from the webhooks';
        ``ApiRateLimited`` when over (``IPAAS_TENANT_API_RATE_LIMIT``)."""
        await self._hit(f"api:{tenant_id}", rate, ApiRateLimited, "API request")

    async def _hit(self, key: str, rate: Rate, refusal: type[TooManyRequests], what: str) -> None:
        item = rate.item
        try:
            if await self._limiter.hit(item, key):
                return
            stats = await self._limiter.get_window_stats(item, key)
        except StorageError as exc:
            _log.warning("rate_limit_storage_unavailable", error=repr(exc))
            return
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise refusal(
            f"Over this tenant's {what} rate ({rate.amount} per {rate.window_s} s); "
            f"retry in {retry_after} s",
            headers={
                "Retry-After": str(retry_after),
                # draft-ietf-httpapi-ratelimit-headers-06: separate fields, delta-seconds.
                "RateLimit-Limit": str(rate.amount),
                "RateLimit-Remaining": str(stats.remaining),
                "RateLimit-Reset": str(retry_after),
                "RateLimit-Policy": f"{rate.amount};w={rate.window_s}",
            },
        )
