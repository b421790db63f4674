"""Retries, manual retry and replay, end to end: webhook -> worker -> real HTTP to stand-ins."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from ipaas.config import Settings
from ipaas.engine import worker as worker_module
from ipaas.engine.queue.redis import RedisQueue
from ipaas.engine.worker import Worker
from ipaas.executions.models import ExecutionStatus, TriggerData
from ipaas.runtime import Runtime
from ipaas.stores.memory import MemoryStore
from ipaas.webhooks import service as webhook_service
from ipaas.workflows import service as workflow_service
from ipaas.workflows.schemas import WorkflowCreate
from tests.conftest import signup
from tests.standins.server import StandinServer

#: Short backoff so the suite stays fast; the policy's shape is what is under test.
FAST_RETRY = {"max_attempts": 3, "initial_delay_s": 0.05, "max_delay_s": 0.2}


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout_s: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s}s")
        await asyncio.sleep(0.02)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A breaker threshold above every retry budget here: these tests are about retries.
    return settings.model_copy(update={"circuit_failure_threshold": 10, "retry_after_max_s": 30.0})


class Api:
    def __init__(self, client: httpx.AsyncClient, auth: dict[str, str], standin: StandinServer):
        self.client = client
        self.auth = auth
        self.standin = standin

    async def workflow(
        self, steps: list[dict[str, Any]], auth: dict[str, str] | None = None
    ) -> str:
        r = await self.client.post(
            "/api/workflows", json={"name": "wf", "steps": steps}, headers=auth or self.auth
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def call(self, step_id: str, path: str, retry: dict[str, Any] | None = None) -> dict[str, Any]:
        step: dict[str, Any] = {
            "id": step_id,
            "type": "http_request",
            "config": {"url": f"{self.standin.url}{path}", "method": "POST", "json": {"n": 1}},
        }
        if retry is not None:
            step["retry"] = retry
        return step

    async def fire(self, workflow_id: str, body: Any = None) -> str:
        r = await self.client.post(f"/api/webhooks/{workflow_id}", json=body or {})
        assert r.status_code == 202, r.text
        return str(r.json()["execution_id"])

    async def execution(self, execution_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/api/executions/{execution_id}", headers=self.auth)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def settled(self, execution_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """The execution once it reached a terminal status."""
        detail: dict[str, Any] = {}

        async def terminal() -> bool:
            nonlocal detail
            detail = await self.execution(execution_id)
            return detail["status"] in ("succeeded", "failed", "cancelled", "timed_out")

        await wait_for(terminal, timeout_s, f"{execution_id} terminal")
        return detail

    def hits(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.standin.requests() if r["path"] == path]


@pytest.fixture
async def api(client: httpx.AsyncClient, auth: dict[str, str], clean_standin: StandinServer) -> Api:
    return Api(client, auth, clean_standin)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


class TestAutomaticRetries:
    async def test_flaky_endpoint_succeeds_on_the_third_attempt(
        self, api: Api, worker: Worker
    ) -> None:
        api.standin.add_fault("/echo/flaky", status=503, count=2, retry_after=0)
        wf = await api.workflow([api.call("call", "/echo/flaky", FAST_RETRY)])
        ex = await api.fire(wf)
        detail = await api.settled(ex)
        assert detail["status"] == "succeeded", detail
        assert detail["error"] is None
        steps = detail["steps"]
        assert [(s["attempt"], s["status"], s["status_code"]) for s in steps] == [
            (1, "failed", 503),
            (2, "failed", 503),
            (3, "succeeded", None),
        ]
        for step in steps[:2]:
            assert "503" in step["error"]
            assert at(step["next_attempt_at"]) >= at(step["finished_at"])
        assert steps[2]["next_attempt_at"] is None
        # Each attempt started no earlier than the previous one said it would.
        assert at(steps[1]["started_at"]) >= at(steps[0]["next_attempt_at"])
        assert at(steps[2]["started_at"]) >= at(steps[1]["next_attempt_at"])
        assert [r["status"] for r in api.hits("/echo/flaky")] == [503, 503, 200]
        listed = await api.client.get("/api/executions", headers=api.auth)
        assert [e["id"] for e in listed.json()["items"]] == [ex]
        assert detail["attempt"] == 3  # claimed once per attempt

    async def test_every_attempt_sends_the_same_execution_id(
        self, api: Api, worker: Worker
    ) -> None:
        # {{ execution.id }} is the idempotency key a remote dedupes a repeated call by.
        api.standin.add_fault("/echo/keyed", status=503, count=1, retry_after=0)
        step = api.call("call", "/echo/keyed", FAST_RETRY)
        step["config"]["headers"] = {"Idempotency-Key": "{{ execution.id }}-call"}
        step["config"]["json"] = {"workflow": "{{ execution.workflow_id }}"}
        wf = await api.workflow([step])
        ex = await api.fire(wf)
        detail = await api.settled(ex)
        assert detail["status"] == "succeeded", detail
        hits = api.hits("/echo/keyed")
        assert [(r["status"], r["headers"]["idempotency-key"]) for r in hits] == [
            (503, f"{ex}-call"),
            (200, f"{ex}-call"),
        ]
        assert hits[0]["body"] == {"workflow": wf}

    async def test_retry_after_is_honoured(self, api: Api, worker: Worker) -> None:
        api.standin.add_fault("/echo/limited", status=429, count=1, retry_after=2)
        retry = {"max_attempts": 3, "initial_delay_s": 0.01, "max_delay_s": 0.01}
        wf = await api.workflow([api.call("call", "/echo/limited", retry)])
        ex = await api.fire(wf)
        detail = await api.settled(ex)
        assert detail["status"] == "succeeded", detail
        first, second = api.hits("/echo/limited")
        assert first["status"] == 429
        assert second["received_monotonic"] - first["received_monotonic"] >= 2.0
        waited = at(detail["steps"][0]["next_attempt_at"]) - at(detail["steps"][0]["finished_at"])
        assert waited.total_seconds() >= 2.0

    async def test_a_retry_runs_when_its_wait_ends_not_at_the_next_pass(
        self, api: Api, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With the regular due pass a minute apart, each retry still runs within moments of
        its ``next_attempt_at``: the worker that deferred it wakes for it."""
        monkeypatch.setattr(worker_module, "DUE_RETRY_INTERVAL_S", 60.0)
        api.standin.add_fault("/echo/flaky", status=503, count=2, retry_after=0)
        retry = {"max_attempts": 3, "initial_delay_s": 0.2, "max_delay_s": 0.2}
        wf = await api.workflow([api.call("call", "/echo/flaky", retry)])
        worker = Worker(runtime)
        await worker.start()
        try:
            await asyncio.sleep(0.1)  # past the first regular pass
            detail = await api.settled(await api.fire(wf), timeout_s=30.0)
        finally:
            await worker.stop(grace_s=0)
        assert detail["status"] == "succeeded", detail
        steps = detail["steps"]
        assert [s["status"] for s in steps] == ["failed", "failed", "succeeded"]
        for waited, retried in itertools.pairwise(steps):
            due = at(waited["next_attempt_at"])
            # Far below the minute; leaves room for a busy machine.
            assert due <= at(retried["started_at"]) <= due + timedelta(seconds=10)

    async def test_a_permanent_4xx_is_not_retried(self, api: Api, worker: Worker) -> None:
        api.standin.add_fault("/echo/bad", status=400, count=1)
        wf = await api.workflow([api.call("call", "/echo/bad", FAST_RETRY)])
        detail = await api.settled(await api.fire(wf))
        assert detail["status"] == "failed"
        [step] = detail["steps"]
        assert (step["attempt"], step["status_code"], step["next_attempt_at"]) == (1, 400, None)
        assert "gave up" not in step["error"]
        assert len(api.hits("/echo/bad")) == 1

    async def test_invalid_params_are_not_retried(self, api: Api, worker: Worker) -> None:
        step = api.call("call", "/echo/x", FAST_RETRY)
        step["config"]["method"] = "{{ trigger.body.m }}"
        wf = await api.workflow([step])
        detail = await api.settled(await api.fire(wf, {"m": "TELEPORT"}))
        assert detail["status"] == "failed"
        assert len(detail["steps"]) == 1
        assert api.hits("/echo/x") == []

    async def test_exhausted_attempts_fail_the_execution(self, api: Api, worker: Worker) -> None:
        api.standin.add_fault("/echo/down", status=500, count=3)
        wf = await api.workflow([api.call("call", "/echo/down", FAST_RETRY)])
        detail = await api.settled(await api.fire(wf))
        assert detail["status"] == "failed"
        assert [s["attempt"] for s in detail["steps"]] == [1, 2, 3]
        assert detail["steps"][-1]["next_attempt_at"] is None
        assert "gave up after 3 attempts" in detail["error"]
        assert len(api.hits("/echo/down")) == 3

    async def test_connection_errors_are_retried(self, api: Api, worker: Worker) -> None:
        # Nothing listens on port 9 (discard) of 127.0.0.1 here: the connection is refused.
        step = {
            "id": "call",
            "type": "http_request",
            "config": {"url": "http://127.0.0.1:9/"},
            "retry": {"max_attempts": 2, "initial_delay_s": 0.01, "max_delay_s": 0.01},
        }
        wf = await api.workflow([step])
        detail = await api.settled(await api.fire(wf))
        assert detail["status"] == "failed"
        assert [(s["attempt"], s["error_code"]) for s in detail["steps"]] == [
            (1, "connection_error"),
            (2, "connection_error"),
        ]

    async def test_a_waiting_retry_is_cancelled_at_once(
        self, api: Api, worker: Worker, runtime: Runtime
    ) -> None:
        api.standin.add_fault("/echo/later", status=503, count=1, retry_after=20)
        wf = await api.workflow([api.call("call", "/echo/later", FAST_RETRY)])
        ex = await api.fire(wf)

        async def waiting() -> bool:
            detail = await api.execution(ex)
            # No worker sleeps on it (the slot frees just after the defer commits).
            waits = detail["status"] == "queued" and detail["next_attempt_at"] is not None
            return waits and worker.running == 0

        await wait_for(waiting, what="a waiting retry that holds no worker slot")
        r = await api.client.post(f"/api/executions/{ex}/cancel", headers=api.auth)
        assert r.status_code == 200
        assert r.json()["status"] == "cancelled"
        assert len(api.hits("/echo/later")) == 1

    async def test_completed_steps_are_not_repeated(self, api: Api, worker: Worker) -> None:
        api.standin.add_fault("/echo/second", status=502, count=1, retry_after=0)
        wf = await api.workflow(
            [api.call("first", "/echo/first"), api.call("second", "/echo/second", FAST_RETRY)]
        )
        detail = await api.settled(await api.fire(wf))
        assert detail["status"] == "succeeded"
        assert [(s["step_id"], s["attempt"]) for s in detail["steps"]] == [
            ("first", 1),
            ("second", 1),
            ("second", 2),
        ]
        assert len(api.hits("/echo/first")) == 1


class TestValidation:
    @pytest.mark.parametrize(
        ("retry", "field"),
        [
            ({"max_attempts": 0}, "max_attempts"),
            ({"max_attempts": 21}, "max_attempts"),
            ({"initial_delay_s": -1}, "initial_delay_s"),
            ({"max_delay_s": "soon"}, "max_delay_s"),
            ({"backoff": "linear"}, "backoff"),
        ],
    )
    async def test_bad_policy_is_422_naming_the_field(
        self, api: Api, retry: dict[str, Any], field: str
    ) -> None:
        step = api.call("call", "/echo", retry)
        r = await api.client.post(
            "/api/workflows", json={"name": "wf", "steps": [step]}, headers=api.auth
        )
        assert r.status_code == 422, r.text
        assert field in r.text
        assert "retry" in r.text

    async def test_max_below_initial_is_422(self, api: Api) -> None:
        step = api.call("call", "/echo", {"initial_delay_s": 10, "max_delay_s": 1})
        r = await api.client.post(
            "/api/workflows", json={"name": "wf", "steps": [step]}, headers=api.auth
        )
        assert r.status_code == 422
        assert "max_delay_s" in r.text

    async def test_seed_shape_takes_a_retry_policy(self, api: Api) -> None:
        seed = {
            "name": "seed",
            "trigger_type": "webhook",
            "action_type": "http_request",
            "config_json": '{"url": "http://x.test", "retry": {"max_attempts": 5}}',
        }
        r = await api.client.post("/api/workflows", json=seed, headers=api.auth)
        assert r.status_code == 201, r.text
        [step] = r.json()["steps"]
        assert step["config"] == {"url": "http://x.test"}
        assert step["retry"] == {"max_attempts": 5, "initial_delay_s": None, "max_delay_s": None}


class TestManualRetry:
    async def test_resumes_from_the_failed_step(self, api: Api, worker: Worker) -> None:
        api.standin.add_fault("/echo/second", status=400, count=1)
        second = api.call("second", "/echo/second")
        second["config"]["json"] = {"first_status": "{{ steps.first.output.status_code }}"}
        wf = await api.workflow([api.call("first", "/echo/first"), second])
        ex = await api.fire(wf)
        failed = await api.settled(ex)
        assert failed["status"] == "failed"
        r = await api.client.post(f"/api/executions/{ex}/retry", headers=api.auth)
        assert r.status_code == 202, r.text
        assert (r.json()["id"], r.json()["status"], r.json()["error"]) == (ex, "queued", None)
        detail = await api.settled(ex)
        assert detail["status"] == "succeeded", detail
        assert [(s["step_id"], s["attempt"], s["status"]) for s in detail["steps"]] == [
            ("first", 1, "succeeded"),
            ("second", 1, "failed"),
            ("second", 2, "succeeded"),
        ]
        assert len(api.hits("/echo/first")) == 1  # the completed step was not repeated
        # Its output still fed the later step's template.
        [_, resent] = api.hits("/echo/second")
        assert resent["body"] == {"first_status": 200}

    async def test_not_retryable_states_are_409(self, api: Api, worker: Worker) -> None:
        wf = await api.workflow([api.call("call", "/echo/ok")])
        ex = await api.fire(wf)
        assert (await api.settled(ex))["status"] == "succeeded"
        r = await api.client.post(f"/api/executions/{ex}/retry", headers=api.auth)
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "execution_not_retryable"
        assert "succeeded" in r.json()["error"]["message"]

    async def test_a_cancelled_execution_can_be_resumed(self, api: Api, runtime: Runtime) -> None:
        wf = await api.workflow([api.call("call", "/echo/ok")])
        ex = await api.fire(wf)  # no worker yet: cancelled while queued
        r = await api.client.post(f"/api/executions/{ex}/cancel", headers=api.auth)
        assert r.json()["status"] == "cancelled"
        r = await api.client.post(f"/api/executions/{ex}/retry", headers=api.auth)
        assert r.status_code == 202
        await Worker(runtime).run_until_empty()
        assert (await api.execution(ex))["status"] == "succeeded"


class TestReplay:
    async def test_a_new_execution_with_the_same_trigger(self, api: Api, worker: Worker) -> None:
        wf = await api.workflow([api.call("call", "/echo/replayed")])
        ex = await api.fire(wf, {"order": 7})
        original = await api.settled(ex)
        r = await api.client.post(f"/api/executions/{ex}/replay", headers=api.auth)
        assert r.status_code == 201, r.text
        new = r.json()
        assert new["id"] != ex
        assert (new["replay_of"], new["workflow_id"], new["status"]) == (ex, wf, "queued")
        replayed = await api.settled(new["id"])
        assert replayed["status"] == "succeeded"
        assert replayed["trigger"]["body"] == original["trigger"]["body"] == {"order": 7}
        assert len(api.hits("/echo/replayed")) == 2
        assert (await api.execution(ex))["replay_of"] is None

    async def test_replay_of_a_deleted_workflow_is_409(self, api: Api, runtime: Runtime) -> None:
        wf = await api.workflow([api.call("call", "/echo/ok")])
        ex = await api.fire(wf)
        await api.client.delete(f"/api/workflows/{wf}", headers=api.auth)
        r = await api.client.post(f"/api/executions/{ex}/replay", headers=api.auth)
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "workflow_not_found"


class TestIsolation:
    async def test_another_tenants_execution_is_404(self, api: Api) -> None:
        wf = await api.workflow([api.call("call", "/echo/ok")])
        ex = await api.fire(wf)
        await api.client.post(f"/api/executions/{ex}/cancel", headers=api.auth)
        other = await signup(api.client, "mallory@example.com")
        other.pop("tenant_id")
        for action in ("retry", "replay"):
            r = await api.client.post(f"/api/executions/{ex}/{action}", headers=other)
            assert r.status_code == 404, action
            assert r.json()["error"]["code"] == "execution_not_found"
        assert (await api.execution(ex))["status"] == "cancelled"
        listed = await api.client.get("/api/executions", headers=api.auth)
        assert len(listed.json()["items"]) == 1  # no replay was created


REDIS_URL = os.environ.get("IPAAS_TEST_REDIS_URL")


@pytest.mark.redis
@pytest.mark.skipif(not REDIS_URL, reason="IPAAS_TEST_REDIS_URL is not set")
async def test_scaled_out_retries_come_back_through_the_redis_queue(
    settings: Settings, clean_standin: StandinServer
) -> None:
    """Two worker processes (two runtimes over one store and one Redis stream). Their store
    poll is 30 s, so the retries can only come back through the queue, within seconds."""
    assert REDIS_URL is not None
    suffix = uuid.uuid4().hex
    stream, group = f"ipaas-test:{suffix}", f"ipaas-test-{suffix}"
    store = MemoryStore()
    slow_poll = settings.model_copy(update={"poll_interval_s": 30.0})
    runtimes = [
        Runtime.build(
            slow_poll,
            store=store,
            queue=RedisQueue(REDIS_URL, stream=stream, group=group, consumer=name),
        )
        for name in ("a", "b")
    ]
    workers = [Worker(runtime) for runtime in runtimes]
    for runtime in runtimes:
        await runtime.startup()
    try:
        for worker in workers:
            await worker.start()
        clean_standin.add_fault("/echo/flaky", status=503, count=2, retry_after=0)
        workflow = await workflow_service.create(
            store,
            tenant_id="tn_a",
            data=WorkflowCreate.model_validate(
                {
                    "name": "w",
                    "steps": [
                        {
                            "id": "call",
                            "type": "http_request",
                            "config": {"url": f"{clean_standin.url}/echo/flaky"},
                            "retry": FAST_RETRY,
                        }
                    ],
                }
            ),
        )
        started = time.monotonic()
        execution = await webhook_service.start(
            store,
            runtimes[0].queue,
            workflow_id=workflow.id,
            tenant_id="tn_a",
            version=1,
            trigger=TriggerData(),
        )

        async def succeeded() -> bool:
            current = await store.get_execution("tn_a", execution.id)
            return current is not None and current.status is ExecutionStatus.succeeded

        await wait_for(succeeded, timeout_s=15, what="success")
        assert time.monotonic() - started < 10  # well under one 30 s store poll
        steps = await store.list_step_runs("tn_a", execution.id)
        assert [(s.attempt, s.status_code) for s in steps] == [(1, 503), (2, 503), (3, None)]
        assert len([r for r in clean_standin.requests() if r["path"] == "/echo/flaky"]) == 3
    finally:
        for worker in workers:
            await worker.stop(grace_s=0)
        for runtime in runtimes:
            await runtime.shutdown()
        async with Redis.from_url(REDIS_URL) as redis:
            await redis.delete(stream)
