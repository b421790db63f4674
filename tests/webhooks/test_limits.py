"""Items 1 and 2: the tenant rate limit (429) and the queue depth limits (503) at intake."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx

from ipaas.executions.models import Execution, ExecutionStatus, TriggerData
from ipaas.kit.clock import utcnow
from ipaas.kit.ids import new_id
from ipaas.runtime import Runtime
from ipaas.tenants.models import TenantLimits
from ipaas.webhooks.depth import QueueDepth
from ipaas.webhooks.ratelimit import Rate, rate_for
from tests.conftest import signup
from tests.webhooks.conftest import NewWorkflow, executions_of


async def fire(client: httpx.AsyncClient, workflow_id: str, n: int) -> list[httpx.Response]:
    return [await client.post(f"/api/webhooks/{workflow_id}", json={"n": i}) for i in range(n)]


class TestRateFor:
    def test_burst_and_rate_become_one_window(self) -> None:
        assert rate_for(50, 200) == Rate(amount=200, window_s=4)
        assert rate_for(0.5, 10) == Rate(amount=10, window_s=20)
        # Never above the configured rate: 10 per 4 s is 2.5/s for a rate of 3/s.
        assert rate_for(3, 10) == Rate(amount=10, window_s=4)

    def test_default_and_small_bursts_are_one_seconds_worth(self) -> None:
        assert rate_for(5, None) == Rate(amount=5, window_s=1)
        assert rate_for(100, 20) == Rate(amount=100, window_s=1)
        assert rate_for(0.2, None) == Rate(amount=1, window_s=5)


class TestRateLimit:
    async def test_over_the_burst_is_429_and_persists_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        runtime.settings.tenant_rate_limit = 0.1
        runtime.settings.tenant_rate_burst = 3
        workflow_id = await new_workflow()
        responses = await fire(client, workflow_id, 4)
        assert [r.status_code for r in responses] == [202, 202, 202, 429]
        refused = responses[-1]
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 30
        assert refused.headers["ratelimit-limit"] == "3"
        assert refused.headers["ratelimit-remaining"] == "0"
        assert refused.headers["ratelimit-reset"] == refused.headers["retry-after"]
        assert refused.headers["ratelimit-policy"] == "3;w=30"
        assert len(executions_of(runtime, workflow_id)) == 3

    async def test_each_tenant_has_its_own_budget(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        runtime.settings.tenant_rate_limit = 0.1
        runtime.settings.tenant_rate_burst = 2
        mine = await new_workflow()
        other_auth = await signup(client, "grace@example.com")
        other_auth.pop("tenant_id")
        theirs = await new_workflow(headers=other_auth)
        assert [r.status_code for r in await fire(client, mine, 3)] == [202, 202, 429]
        assert [r.status_code for r in await fire(client, theirs, 2)] == [202, 202]

    async def test_a_tenant_override_beats_the_default(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        runtime.settings.tenant_rate_limit = 0.1
        runtime.settings.tenant_rate_burst = 1
        workflow_id = await new_workflow()
        wf = runtime.store.workflows[workflow_id]  # type: ignore[attr-defined]
        await runtime.store.set_tenant_limits(wf.tenant_id, TenantLimits(rate_burst=3))
        assert [r.status_code for r in await fire(client, workflow_id, 4)] == [
            202,
            202,
            202,
            429,
        ]

    async def test_no_limit_by_default(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        workflow_id = await new_workflow()
        assert {r.status_code for r in await fire(client, workflow_id, 30)} == {202}


class TestQueueDepth:
    async def test_tenant_over_its_depth_is_503_and_others_are_not(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        runtime.settings.tenant_max_queued = 2
        mine = await new_workflow()
        other_auth = await signup(client, "grace@example.com")
        other_auth.pop("tenant_id")
        theirs = await new_workflow(headers=other_auth)
        responses = await fire(client, mine, 3)
        assert [r.status_code for r in responses] == [202, 202, 503]
        assert responses[-1].json()["error"]["code"] == "tenant_queue_full"
        assert responses[-1].headers["retry-after"].isdigit()
        assert len(executions_of(runtime, mine)) == 2
        assert [r.status_code for r in await fire(client, theirs, 2)] == [202, 202]

    async def test_the_tenant_override_wins_and_claims_free_room(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        runtime.intake.depth.ttl_s = 0  # count on every webhook: claims show at once
        workflow_id = await new_workflow()
        wf = runtime.store.workflows[workflow_id]  # type: ignore[attr-defined]
        await runtime.store.set_tenant_limits(wf.tenant_id, TenantLimits(max_queued=1))
        assert [r.status_code for r in await fire(client, workflow_id, 2)] == [202, 503]
        (queued,) = executions_of(runtime, workflow_id)
        queued.status = "running"  # a worker claimed it
        assert [r.status_code for r in await fire(client, workflow_id, 1)] == [202]

    async def test_the_count_is_cached_between_webhooks(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        runtime.settings.queue_max_depth = 1000
        runtime.settings.tenant_max_queued = 1000
        workflow_id = await new_workflow()
        counted = 0
        count_queued = runtime.store.count_queued

        async def counting(tenant_id: str | None = None) -> int:
            nonlocal counted
            counted += 1
            return await count_queued(tenant_id)

        runtime.store.count_queued = counting  # type: ignore[method-assign]
        # Longer than 20 webhooks take on any machine: in one CI run on a slow one they took
        # over the default second, and the counts were taken again (4).
        runtime.intake.depth.ttl_s = 60
        assert {r.status_code for r in await fire(client, workflow_id, 20)} == {202}
        assert counted == 2  # once for all tenants, once for this one
        # Once the lifetime is over, the next webhook counts again.
        runtime.intake.depth = QueueDepth(0.05)
        await fire(client, workflow_id, 1)
        await asyncio.sleep(0.1)
        await fire(client, workflow_id, 1)
        assert counted == 6


class TestTenantEndpoint:
    async def test_shows_effective_limits_and_overrides(
        self, client: httpx.AsyncClient, runtime: Runtime, auth: dict[str, str]
    ) -> None:
        runtime.settings.tenant_rate_limit = 20
        runtime.settings.tenant_max_queued = 500
        body = (await client.get("/api/tenant", headers=auth)).json()
        assert body["limits"] == {
            "rate_limit": 20.0,
            "rate_burst": 20,
            "max_queued": 500,
            # Unset IPAAS_TENANT_MAX_CONCURRENCY: 80% of IPAAS_WORKERS.
            "max_concurrency": runtime.settings.workers * 4 // 5,
        }
        runtime.settings.tenant_max_concurrency = 0  # no cap
        body = (await client.get("/api/tenant", headers=auth)).json()
        assert body["limits"]["max_concurrency"] is None
        await runtime.store.set_tenant_limits(
            body["id"], TenantLimits(rate_burst=100, max_concurrency=4)
        )
        body = (await client.get("/api/tenant", headers=auth)).json()
        assert body["limits"]["rate_burst"] == 100
        assert body["limits"]["max_concurrency"] == 4
        assert body["overrides"]["rate_limit"] is None
        assert body["overrides"]["rate_burst"] == 100

    async def test_read_only_and_authenticated(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        assert (await client.get("/api/tenant")).status_code == 401
        response = await client.patch("/api/tenant", json={"limits": {}}, headers=auth)
        assert response.status_code == 405


async def failed_executions(runtime: Runtime, workflow_id: str, n: int) -> list[str]:
    """``n`` failed executions of the workflow, made an hour ago, as a worker leaves them."""
    wf = runtime.store.workflows[workflow_id]  # type: ignore[attr-defined]
    ids = []
    for i in range(n):
        made = utcnow() - timedelta(hours=1) + timedelta(seconds=i)
        execution = Execution(
            id=new_id("ex"),
            tenant_id=wf.tenant_id,
            workflow_id=workflow_id,
            workflow_version=1,
            status=ExecutionStatus.failed,
            trigger=TriggerData(body={"n": i}),
            created_at=made,
            started_at=made,
            finished_at=made,
            attempt=1,
        )
        await runtime.store.create_execution(execution)
        ids.append(execution.id)
    return ids


class TestWorkTheApiQueues:
    """Manual runs, retries and replays queue work too: under the same depth limits as
    webhooks, so a tenant cannot grow its queue past them through the API."""

    async def test_a_manual_run_over_the_depth_is_503_and_queues_nothing(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        runtime: Runtime,
        new_workflow: NewWorkflow,
    ) -> None:
        runtime.settings.tenant_max_queued = 1
        workflow_id = await new_workflow()
        run = f"/api/workflows/{workflow_id}/run"
        assert (await client.post(run, headers=auth)).status_code == 202
        refused = await client.post(run, headers=auth)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "tenant_queue_full"
        assert refused.headers["retry-after"].isdigit()
        assert len(executions_of(runtime, workflow_id)) == 1
        other = await signup(client, "grace@example.com")
        other.pop("tenant_id")
        theirs = await new_workflow(headers=other)
        assert (await client.post(f"/api/workflows/{theirs}/run", headers=other)).status_code == 202

    async def test_a_bulk_retry_takes_only_the_room_left(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        runtime: Runtime,
        new_workflow: NewWorkflow,
    ) -> None:
        runtime.settings.tenant_max_queued = 3
        workflow_id = await new_workflow()
        await failed_executions(runtime, workflow_id, 5)
        since = (utcnow() - timedelta(hours=2)).isoformat()
        first = await client.post("/api/executions/retry", json={"since": since}, headers=auth)
        assert first.status_code == 202, first.text
        assert (len(first.json()["retried"]), first.json()["more"]) == (3, True)
        full = await client.post("/api/executions/retry", json={"since": since}, headers=auth)
        assert full.status_code == 503, full.text
        assert full.json()["error"]["code"] == "tenant_queue_full"
        statuses = sorted(e.status.value for e in executions_of(runtime, workflow_id))
        assert statuses == ["failed", "failed", "queued", "queued", "queued"]

    async def test_a_retry_and_a_replay_over_the_depth_are_503(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        runtime: Runtime,
        new_workflow: NewWorkflow,
    ) -> None:
        runtime.settings.queue_max_depth = 1
        workflow_id = await new_workflow()
        one, two = await failed_executions(runtime, workflow_id, 2)
        assert (await client.post(f"/api/executions/{one}/retry", headers=auth)).status_code == 202
        for action in ("retry", "replay"):
            refused = await client.post(f"/api/executions/{two}/{action}", headers=auth)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "queue_full"
        assert len(executions_of(runtime, workflow_id)) == 2
        assert (await client.get(f"/api/executions/{two}", headers=auth)).json()["status"] == (
            "failed"
        )
