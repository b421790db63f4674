"""The guard rails across processes: one rate budget in Redis, one idempotency key per
workflow in a shared database (two apps, two stores, one database)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from ipaas.api.app import create_app
from ipaas.config import Settings
from ipaas.stores.sql import run_migrations
from ipaas.webhooks.ratelimit import RateLimited, TenantRateLimiter, rate_for
from tests.conftest import signup
from tests.contracts.conftest import POSTGRES_ONLY, in_thread, postgres_database

REDIS_URL = os.environ.get("IPAAS_TEST_REDIS_URL")

needs_redis = [
    pytest.mark.redis,
    pytest.mark.skipif(not REDIS_URL, reason="IPAAS_TEST_REDIS_URL is not set"),
]


class TestRedisBudget:
    pytestmark = needs_redis

    async def test_two_processes_share_one_budget(self, redis_key_prefix: str) -> None:
        assert REDIS_URL is not None
        limiters = [TenantRateLimiter(REDIS_URL, key_prefix=redis_key_prefix) for _ in range(2)]
        rate = rate_for(0.1, 4)
        outcomes = []
        try:
            for n in range(6):
                try:
                    await limiters[n % 2].hit("tn_shared", rate)
                    outcomes.append("ok")
                except RateLimited as exc:
                    outcomes.append(exc.headers["RateLimit-Remaining"])
            # Another tenant's budget is untouched.
            await limiters[0].hit("tn_other", rate)
        finally:
            for limiter in limiters:
                await limiter.aclose()
        assert outcomes == ["ok"] * 4 + ["0", "0"]

    async def test_redis_down_lets_webhooks_through(self) -> None:
        limiter = TenantRateLimiter("redis://127.0.0.1:1/0")
        try:
            await limiter.hit("tn_x", rate_for(1, 1))
            await limiter.hit("tn_x", rate_for(1, 1))
        finally:
            await limiter.aclose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=POSTGRES_ONLY)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
        in_thread(lambda: run_migrations(url))
        yield url
        return
    with postgres_database() as url:
        in_thread(lambda: run_migrations(url))
        yield url


async def test_two_apps_on_one_database_accept_a_key_once(
    settings: Settings, database_url: str
) -> None:
    """Two API processes (here: two apps with their own stores) get the same delivery at
    the same moment: one 202, the rest 200 with its id, one execution."""
    shared = settings.model_copy(update={"database_url": database_url})
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(2):
            app = create_app(shared, workers=False)
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            clients.append(
                await stack.enter_async_context(
                    httpx.AsyncClient(transport=transport, base_url="http://ipaas.test")
                )
            )
        auth = await signup(clients[0])
        auth.pop("tenant_id")
        created = await clients[0].post(
            "/api/workflows",
            json={
                "name": "echo",
                "steps": [
                    {"id": "call", "type": "http_request", "config": {"url": "http://x.test"}}
                ],
            },
            headers=auth,
        )
        workflow_id = created.json()["id"]
        for round_ in range(3):
            responses = await asyncio.gather(
                *(
                    clients[n % 2].post(
                        f"/api/webhooks/{workflow_id}",
                        json={"n": n},
                        headers={"webhook-id": f"msg_{round_}"},
                    )
                    for n in range(8)
                )
            )
            assert sorted(r.status_code for r in responses) == [200] * 7 + [202]
            assert len({r.json()["execution_id"] for r in responses}) == 1
        listed = await clients[1].get(
            "/api/executions", params={"workflow_id": workflow_id}, headers=auth
        )
        assert len(listed.json()["items"]) == 3
