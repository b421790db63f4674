"""``python -m bench.intake_guards``: CPU cost per webhook of each intake guard.

Micro-benchmarks, in one process, of what the intake adds per webhook: the tenant rate
check (``limits`` sliding window counter, in memory; with ``--redis URL`` also on Redis,
which is a round trip), the cached queue-depth counts, the idempotency key, and signature
verification of a real 8.7 KB GitHub payload (HMAC-SHA256 and Standard Webhooks, one and
two secrets). Prints microseconds per call; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from standardwebhooks.webhooks import Webhook
from starlette.datastructures import Headers

from ipaas.stores.memory import MemoryStore
from ipaas.webhooks.depth import QueueDepth
from ipaas.webhooks.idempotency import dedup_key
from ipaas.webhooks.ratelimit import TenantRateLimiter, rate_for
from ipaas.webhooks.signatures import verify
from ipaas.workflows.models import WebhookAuth

BODY = (
    Path(__file__).resolve().parents[1] / "tests/fixtures/webhooks/github/push.json"
).read_bytes()
SECRET = "It's a Secret to Everybody"
WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


async def per_call_us(fn: Callable[[], Awaitable[object]], n: int) -> float:
    for _ in range(min(n, 1000)):
        await fn()
    started = time.process_time()
    for _ in range(n):
        await fn()
    return (time.process_time() - started) / n * 1e6


async def main(redis_url: str | None, n: int) -> None:
    rows: list[tuple[str, float]] = []
    limiter = TenantRateLimiter()
    rate = rate_for(1e9, None)  # never over: measures the hit itself
    tenants = [f"tn_{i}" for i in range(100)]
    i = 0

    async def hit() -> None:
        nonlocal i
        i += 1
        await limiter.hit(tenants[i % 100], rate)

    rows.append(("rate limit, memory (100 tenants)", await per_call_us(hit, n)))
    if redis_url:
        shared = TenantRateLimiter(redis_url, key_prefix="ipaas-bench")
        rows.append(
            (
                "rate limit, Redis (CPU; + 1 round trip)",
                await per_call_us(lambda: shared.hit("tn_bench", rate), n // 10),
            )
        )
        await shared.aclose()

    store, depth = MemoryStore(), QueueDepth(ttl_s=3600)

    async def counts() -> None:
        await depth.count(store, None)
        await depth.count(store, "tn_1")
        depth.added("tn_1")

    rows.append(("queue depth, global + tenant (cached)", await per_call_us(counts, n)))

    headers = Headers({"idempotency-key": "delivery-72d3162e", "content-type": "application/json"})

    async def key() -> None:
        dedup_key(None, headers, None)

    rows.append(("idempotency key from a header", await per_call_us(key, n)))

    digest = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    gh_headers = Headers({"x-hub-signature-256": f"sha256={digest}"})
    gh_auth = WebhookAuth.model_validate({"scheme": "hmac_sha256", "credential_id": "c"})

    async def hmac_one() -> None:
        verify(gh_auth, (SECRET,), BODY, gh_headers)

    async def hmac_two() -> None:
        verify(gh_auth, (SECRET, "previous-secret-x"), BODY, gh_headers)

    rows.append(("HMAC-SHA256, 8.7 KB body, 1 secret", await per_call_us(hmac_one, n)))
    rows.append(("HMAC-SHA256, 8.7 KB body, 2 secrets", await per_call_us(hmac_two, n)))

    now = datetime.now(tz=UTC)
    signature = Webhook(WHSEC).sign("msg_1", now, BODY.decode())
    sw_headers = Headers(
        {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
    )
    sw_auth = WebhookAuth.model_validate({"scheme": "standard_webhooks", "credential_id": "c"})

    async def standard() -> None:
        verify(sw_auth, (WHSEC,), BODY, sw_headers)

    rows.append(("Standard Webhooks, 8.7 KB body, 1 secret", await per_call_us(standard, n)))
    width = max(len(name) for name, _ in rows)
    print(f"{'guard':<{width}}  us/call (CPU)")
    for name, us in rows:
        print(f"{name:<{width}}  {us:8.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", help="also measure the Redis storage (redis://...)")
    parser.add_argument("-n", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(main(args.redis, args.n))
