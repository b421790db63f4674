"""Delay steps: the execution waits in the store (no worker slot held), then goes on from the
next step; a cancel ends the wait, the timeout does not count it, a restart repeats nothing."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from ipaas.config import Settings
from ipaas.engine import worker as worker_module
from ipaas.engine.connectors.delay import MAX_DELAY_S, DelayParams
from ipaas.engine.worker import Worker
from ipaas.kit.clock import utcnow
from ipaas.runtime import Runtime
from tests.standins.server import StandinServer


@pytest.fixture
def settings(settings: Settings, each_store: str) -> Settings:
    return settings.model_copy(update={"database_url": each_store})


class Flow:
    def __init__(
        self, client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime, url: str
    ) -> None:
        self.client, self.auth, self.runtime, self.url = client, auth, runtime, url

    def post(self, text: str = "after the wait") -> dict[str, Any]:
        return {
            "id": "post",
            "type": "http_request",
            "config": {
                "method": "POST",
                "url": self.url + "/services/T1/B1/x",
                "json": {"text": text},
            },
        }

    async def workflow(self, steps: list[dict[str, Any]], name: str = "wait") -> str:
        created = await self.client.post(
            "/api/workflows", json={"name": name, "steps": steps}, headers=self.auth
        )
        assert created.status_code == 201, created.text
        return str(created.json()["id"])

    async def fire(self, workflow_id: str, body: Any = None) -> str:
        fired = await self.client.post(f"/api/webhooks/{workflow_id}", json=body or {})
        assert fired.status_code == 202, fired.text
        return str(fired.json()["execution_id"])

    async def detail(self, execution_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/api/executions/{execution_id}", headers=self.auth)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def burst(self) -> None:
        """One worker, run until nothing is due, then stopped (a process that ends)."""
        worker = Worker(self.runtime)
        try:
            await worker.run_until_empty()
        finally:
            await worker.stop(grace_s=0)


@pytest.fixture
async def flow(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime, clean_standin: StandinServer
) -> Flow:
    return Flow(client, auth, runtime, clean_standin.url)


def posted(standin: StandinServer) -> list[str]:
    return [r["body"]["text"] for r in standin.requests(kind="slack_webhook")]


def parse(at: str) -> datetime:
    return datetime.fromisoformat(at)


async def test_the_execution_waits_in_the_store_then_goes_on(
    flow: Flow, clean_standin: StandinServer
) -> None:
    workflow_id = await flow.workflow(
        [{"id": "wait", "type": "delay", "config": {"seconds": 0.6}}, flow.post()]
    )
    before = utcnow()
    execution_id = await flow.fire(workflow_id)
    await flow.burst()  # runs the delay, and returns: nothing is due until it ends
    waiting = await flow.detail(execution_id)
    assert waiting["status"] == "queued"
    [delay] = waiting["steps"]
    assert (delay["step_id"], delay["status"]) == ("wait", "succeeded")
    until = parse(delay["output"]["until"])
    assert before + timedelta(seconds=0.6) <= until <= utcnow() + timedelta(seconds=0.6)
    assert parse(waiting["next_attempt_at"]) == until == parse(delay["next_attempt_at"])
    assert posted(clean_standin) == []

    await asyncio.sleep(max(0.0, (until - utcnow()).total_seconds()) + 0.05)
    await flow.burst()
    done = await flow.detail(execution_id)
    assert done["status"] == "succeeded", done
    assert [(s["step_id"], s["status"]) for s in done["steps"]] == [
        ("wait", "succeeded"),
        ("post", "succeeded"),
    ]
    assert parse(done["steps"][1]["started_at"]) >= until
    assert posted(clean_standin) == ["after the wait"]


async def test_a_running_worker_resumes_it_on_its_own(
    flow: Flow, runtime: Runtime, clean_standin: StandinServer
) -> None:
    """No queue message marks the end of a wait: an idle worker finds it due in the store."""
    workflow_id = await flow.workflow(
        [{"id": "wait", "type": "delay", "config": {"seconds": "0.3"}}, flow.post()]
    )
    worker = Worker(runtime)
    await worker.start()
    try:
        execution_id = await flow.fire(workflow_id)
        started = time.monotonic()
        while (await flow.detail(execution_id))["status"] != "succeeded":
            assert time.monotonic() - started < 5, await flow.detail(execution_id)
            await asyncio.sleep(0.05)
    finally:
        await worker.stop(grace_s=0)
    assert time.monotonic() - started >= 0.3
    assert posted(clean_standin) == ["after the wait"]


async def test_it_resumes_when_the_wait_ends_not_at_the_next_pass(
    flow: Flow, runtime: Runtime, clean_standin: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker that made the wait runs the due pass when it ends: with the regular pass a
    minute apart, the next step still starts within moments of the wait's end (3-5 ms on
    an idle machine; the bound leaves room for a busy one, far below the minute)."""
    monkeypatch.setattr(worker_module, "DUE_RETRY_INTERVAL_S", 60.0)
    workflow_id = await flow.workflow(
        [{"id": "wait", "type": "delay", "config": {"seconds": 0.4}}, flow.post()]
    )
    worker = Worker(runtime)
    await worker.start()
    try:
        await asyncio.sleep(0.1)  # the first regular pass has run; the next is a minute away
        execution_id = await flow.fire(workflow_id)
        started = time.monotonic()
        while (await flow.detail(execution_id))["status"] != "succeeded":
            assert time.monotonic() - started < 20, await flow.detail(execution_id)
            await asyncio.sleep(0.02)
    finally:
        await worker.stop(grace_s=0)
    wait, post = (await flow.detail(execution_id))["steps"]
    until = parse(wait["output"]["until"])
    assert until <= parse(post["started_at"]) <= until + timedelta(seconds=10)
    assert posted(clean_standin) == ["after the wait"]
    assert len(worker.wakeups) == 0


async def test_until_a_time_from_the_payload_and_a_past_one_does_not_wait(
    flow: Flow, clean_standin: StandinServer
) -> None:
    workflow_id = await flow.workflow(
        [
            {"id": "wait", "type": "delay", "config": {"until": "{{ trigger.body.at }}"}},
            flow.post("waited {{ steps.wait.output.seconds }}"),
        ]
    )
    later = (utcnow() + timedelta(hours=2)).replace(microsecond=0)
    later_id = await flow.fire(workflow_id, {"at": later.isoformat()})
    past_id = await flow.fire(workflow_id, {"at": "2020-01-01T00:00:00+02:00"})
    await flow.burst()
    waiting = await flow.detail(later_id)
    assert waiting["status"] == "queued"
    assert parse(waiting["next_attempt_at"]) == later
    assert parse(waiting["steps"][0]["output"]["until"]) == later
    done = await flow.detail(past_id)
    assert done["status"] == "succeeded", done["steps"]
    assert done["steps"][0]["output"]["seconds"] == 0
    assert posted(clean_standin) == ["waited 0.0"]


async def test_a_cancel_ends_the_wait_at_once(flow: Flow, clean_standin: StandinServer) -> None:
    workflow_id = await flow.workflow(
        [{"id": "wait", "type": "delay", "config": {"seconds": 3600}}, flow.post()]
    )
    execution_id = await flow.fire(workflow_id)
    await flow.burst()
    assert (await flow.detail(execution_id))["status"] == "queued"
    r = await flow.client.post(f"/api/executions/{execution_id}/cancel", headers=flow.auth)
    assert r.status_code == 200, r.text
    detail = await flow.detail(execution_id)
    assert detail["status"] == "cancelled"
    assert detail["finished_at"] is not None
    await flow.burst()
    assert (await flow.detail(execution_id))["status"] == "cancelled"
    assert posted(clean_standin) == []


async def test_the_wait_does_not_count_against_the_timeout(
    flow: Flow, runtime: Runtime, clean_standin: StandinServer
) -> None:
    """A 1 s timeout, a 1.2 s delay: the execution succeeds, and its deadline moved by the
    wait (the reaper does not time it out while it waits)."""
    runtime.settings.execution_timeout_s = 1.0
    workflow_id = await flow.workflow(
        [{"id": "wait", "type": "delay", "config": {"seconds": 1.2}}, flow.post()]
    )
    execution_id = await flow.fire(workflow_id)
    await flow.burst()
    tenant = (await flow.client.get("/api/tenant", headers=flow.auth)).json()
    first = await runtime.store.get_execution(tenant["id"], execution_id)
    assert first is not None
    assert first.deadline_at is not None
    assert first.next_attempt_at is not None
    assert first.deadline_at > first.next_attempt_at
    await asyncio.sleep((first.next_attempt_at - utcnow()).total_seconds() + 0.05)
    reaped = await runtime.store.reap(now=utcnow())
    assert execution_id not in reaped.timed_out
    await flow.burst()
    assert (await flow.detail(execution_id))["status"] == "succeeded"
    assert posted(clean_standin) == ["after the wait"]


async def test_a_delay_that_ends_the_steps_does_not_wait(flow: Flow) -> None:
    workflow_id = await flow.workflow([{"id": "wait", "type": "delay", "config": {"seconds": 60}}])
    execution_id = await flow.fire(workflow_id)
    await flow.burst()
    detail = await flow.detail(execution_id)
    assert detail["status"] == "succeeded"
    assert detail["next_attempt_at"] is None


async def test_a_new_worker_after_the_wait_repeats_nothing(
    flow: Flow, runtime: Runtime, clean_standin: StandinServer
) -> None:
    """Two delays and a post; each burst is a process that stops while the execution waits.
    Each delay is recorded once, the post is sent once."""
    workflow_id = await flow.workflow(
        [
            {"id": "one", "type": "delay", "config": {"seconds": 0.2}},
            {"id": "two", "type": "delay", "config": {"seconds": 0.2}},
            flow.post(),
        ]
    )
    execution_id = await flow.fire(workflow_id)
    for _ in range(3):
        await flow.burst()
        detail = await flow.detail(execution_id)
        if detail["status"] == "queued":
            due = parse(detail["next_attempt_at"])
            await asyncio.sleep(max(0.0, (due - utcnow()).total_seconds()) + 0.05)
    assert detail["status"] == "succeeded", detail
    assert [s["step_id"] for s in detail["steps"]] == ["one", "two", "post"]
    assert detail["attempt"] == 3
    assert posted(clean_standin) == ["after the wait"]


async def test_a_dry_run_does_not_wait(flow: Flow, clean_standin: StandinServer) -> None:
    r = await flow.client.post(
        "/api/workflows/dry-run",
        json={
            "name": "wait",
            "steps": [{"id": "wait", "type": "delay", "config": {"seconds": 3600}}, flow.post()],
        },
        headers=flow.auth,
    )
    assert r.status_code == 200, r.text
    steps = r.json()["steps"]
    assert [s["status"] for s in steps] == ["succeeded", "succeeded"]
    until = parse(steps[0]["output"]["until"])
    assert until - utcnow() > timedelta(minutes=59)
    assert posted(clean_standin) == ["after the wait"]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({}, "config"),
        ({"seconds": 5, "until": "2030-01-01T00:00:00Z"}, "config"),
        ({"seconds": 0}, "seconds"),
        ({"seconds": MAX_DELAY_S + 1}, "seconds"),
        ({"seconds": "soon"}, "seconds"),
        ({"until": "2030-01-01T00:00:00"}, "until"),
        ({"minutes": 5}, "minutes"),
    ],
)
async def test_a_bad_delay_is_a_422_naming_the_field(
    flow: Flow, config: dict[str, Any], field: str
) -> None:
    r = await flow.client.post(
        "/api/workflows",
        json={"name": "w", "steps": [{"id": "wait", "type": "delay", "config": config}]},
        headers=flow.auth,
    )
    assert r.status_code == 422, r.text
    paths = [d["loc"][-1] for d in r.json()["error"]["details"]]
    assert field in paths, r.json()


async def test_a_delay_does_not_loop(flow: Flow) -> None:
    r = await flow.client.post(
        "/api/workflows",
        json={
            "name": "w",
            "steps": [
                {
                    "id": "wait",
                    "type": "delay",
                    "for_each": "{{ trigger.body.items }}",
                    "config": {"seconds": 5},
                }
            ],
        },
        headers=flow.auth,
    )
    assert r.status_code == 422, r.text
    assert "does not loop" in r.text


async def test_a_rendered_bad_value_fails_the_step_with_its_reason(
    flow: Flow, clean_standin: StandinServer
) -> None:
    workflow_id = await flow.workflow(
        [
            {"id": "wait", "type": "delay", "config": {"until": "{{ trigger.body.at }}"}},
            flow.post(),
        ]
    )
    far = (utcnow() + timedelta(days=31)).isoformat()
    ids = [
        await flow.fire(workflow_id, {"at": far}),
        await flow.fire(workflow_id, {"at": "tomorrow"}),
    ]
    await flow.burst()
    errors = [(await flow.detail(i))["steps"][0]["error"] for i in ids]
    assert [(await flow.detail(i))["status"] for i in ids] == ["failed", "failed"]
    assert "more than 30 days away" in errors[0]
    assert "until" in errors[1]
    assert posted(clean_standin) == []


def test_params_read_a_number_sent_as_text() -> None:
    assert DelayParams.model_validate({"seconds": " 90 "}).seconds == 90.0
