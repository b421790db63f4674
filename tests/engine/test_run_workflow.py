"""``run_workflow`` steps: another workflow of the tenant started once per step and item,
its result waited for without holding a worker slot, chains bounded, checked when saved."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest

from ipaas.config import Settings
from ipaas.engine.connectors.base import QUEUE_FULL, ConnectorError, NotCalledError
from ipaas.engine.subworkflows import (
    DEPTH_HEADER,
    MAX_DEPTH,
    PARENT_EXECUTION_HEADER,
    PARENT_WORKFLOW_HEADER,
    Starter,
)
from ipaas.engine.worker import Worker
from ipaas.errors import ServiceUnavailable
from ipaas.executions.models import ExecutionStatus
from ipaas.kit.clock import utcnow
from ipaas.runtime import Runtime
from ipaas.webhooks import service as webhook_service
from tests.conftest import signup
from tests.engine import test_delay as delay_tests
from tests.engine.test_delay import posted
from tests.standins.server import StandinServer
from tests.webhooks.test_response_wait import CALC, LINES


@pytest.fixture
def settings(settings: Settings, each_store: str) -> Settings:
    return settings.model_copy(update={"database_url": each_store})


class Flow(delay_tests.Flow):
    """The delay tests' flow (``burst`` runs what is queued, then stops), and what these
    tests read of the executions a step started."""

    async def tenant_id(self) -> str:
        r = await self.client.get("/api/tenant", headers=self.auth)
        assert r.status_code == 200, r.text
        return str(r.json()["id"])

    async def starter(self, execution_id: str) -> Starter:
        """The ``run_workflow`` starter of ``execution_id``'s steps, as a worker makes it."""
        execution = await self.runtime.store.get_execution(await self.tenant_id(), execution_id)
        assert execution is not None
        return Starter(self.runtime, execution)

    async def executions(self, workflow_id: str) -> list[dict[str, Any]]:
        r = await self.client.get(
            "/api/executions", params={"workflow_id": workflow_id}, headers=self.auth
        )
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    async def settled(self, execution_id: str) -> dict[str, Any]:
        """Run a started worker until ``execution_id`` ends; its detail."""
        worker = Worker(self.runtime)
        await worker.start()
        try:
            for _ in range(250):
                detail = await self.detail(execution_id)
                if detail["status"] not in ("queued", "running"):
                    return detail
                await asyncio.sleep(0.02)
        finally:
            await worker.stop(grace_s=0)
        raise AssertionError(f"{execution_id} did not end: {detail}")


@pytest.fixture
async def flow(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime, clean_standin: StandinServer
) -> Flow:
    return Flow(client, auth, runtime, clean_standin.url)


def run(workflow_id: str, **config: Any) -> dict[str, Any]:
    return {"id": "sub", "type": "run_workflow", "config": {"workflow_id": workflow_id, **config}}


async def test_it_starts_the_workflow_with_its_body_and_says_which_execution(
    flow: Flow, clean_standin: StandinServer
) -> None:
    child = await flow.workflow([flow.post("{{ trigger.body.who }} ordered")], name="child")
    parent = await flow.workflow([run(child, body={"who": "{{ trigger.body.name }}"})])
    execution_id = await flow.fire(parent, {"name": "Ada"})
    await flow.burst()
    done = await flow.detail(execution_id)
    assert done["status"] == "succeeded", done
    (started,) = await flow.executions(child)
    assert done["steps"][0]["output"] == {
        "execution_id": started["id"],
        "workflow_id": child,
        "status": "queued",
    }
    detail = await flow.detail(started["id"])
    assert detail["status"] == "succeeded", detail
    assert detail["trigger"]["type"] == "workflow"
    assert detail["trigger"]["body"] == {"who": "Ada"}
    assert detail["trigger"]["headers"] == {
        PARENT_EXECUTION_HEADER: execution_id,
        PARENT_WORKFLOW_HEADER: parent,
        DEPTH_HEADER: "1",
    }
    assert posted(clean_standin) == ["Ada ordered"]


async def test_a_step_or_item_starts_its_execution_once_however_often_it_runs(
    flow: Flow, runtime: Runtime
) -> None:
    """A crash between the start and the step's record, or a redelivered job, runs the
    step again: it finds the execution it started. Each item of a loop has its own."""
    child = await flow.workflow([CALC], name="child")
    parent = await flow.workflow([run(child)])
    starter = await flow.starter(await flow.fire(parent, {}))
    first = await starter.start(child, LINES, record="sub")
    again = await starter.start(child, {"other": "body"}, record="sub")
    item = await starter.start(child, LINES, record="sub[1]")
    assert again.execution_id == first.execution_id != item.execution_id
    assert {e["id"] for e in await flow.executions(child)} == {
        first.execution_id,
        item.execution_id,
    }


async def test_a_loop_starts_one_execution_per_item(flow: Flow) -> None:
    child = await flow.workflow([CALC], name="child")
    step = run(child, body={"lines": ["{{ item }}"]}) | {
        "for_each": "{{ trigger.body.lines }}",
        "concurrency": 2,
    }
    parent = await flow.workflow([step])
    execution_id = await flow.fire(parent, LINES)
    await flow.burst()
    done = await flow.detail(execution_id)
    assert done["status"] == "succeeded", done
    started = {s["step_id"]: s["output"]["execution_id"] for s in done["steps"]}
    assert sorted(started) == ["sub[0]", "sub[1]"]
    totals = [(await flow.detail(started[f"sub[{n}]"]))["steps"][0]["output"] for n in range(2)]
    assert totals == [{"total": 2}, {"total": 3}]


async def test_waiting_it_gives_the_steps_results_and_holds_no_slot(
    flow: Flow, runtime: Runtime, clean_standin: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one worker slot, the parent waits in the store while the child runs in that
    slot: no deadlock; later steps read the child's step outputs."""
    monkeypatch.setattr(runtime.settings, "workers", 1)
    child = await flow.workflow([CALC], name="child")
    parent = await flow.workflow(
        [
            run(child, body="{{ trigger.body }}", wait=True),
            flow.post("total {{ steps.sub.output.steps.calc.output.total }}"),
        ]
    )
    execution_id = await flow.fire(parent, LINES)
    done = await flow.settled(execution_id)
    assert done["status"] == "succeeded", done
    sub, _post = done["steps"]  # each wait was recorded, then replaced by the next
    assert sub["status"] == "succeeded"
    assert sub["output"]["status"] == "succeeded"
    assert sub["output"]["steps"] == {"calc": {"output": {"total": 5}, "status": "succeeded"}}
    assert done["attempt"] >= 2  # it waited in the store, and was claimed again after
    (child_run,) = await flow.executions(child)
    assert child_run["finished_at"] <= sub["finished_at"]
    assert posted(clean_standin) == ["total 5"]
    assert len(await flow.executions(child)) == 1


async def test_waiting_for_a_workflow_that_fails_fails_the_step_once(
    flow: Flow, clean_standin: StandinServer
) -> None:
    clean_standin.add_fault("/services/T1/B1/x", status=400, count=1)
    child = await flow.workflow([flow.post("refused")], name="child")
    parent = await flow.workflow([run(child, wait=True)])
    execution_id = await flow.fire(parent, {})
    done = await flow.settled(execution_id)
    assert done["status"] == "failed", done
    last = done["steps"][-1]
    assert last["error_code"] == "workflow_failed"
    assert f"workflow {child}'s execution" in last["error"]
    assert "failed" in last["error"]
    assert len(await flow.executions(child)) == 1
    # The child's remote is fixed (the fault is spent): a manual retry is a new run, which
    # starts the child again rather than find the execution that failed.
    retried = await flow.client.post(f"/api/executions/{execution_id}/retry", headers=flow.auth)
    assert retried.status_code == 202, retried.text
    done = await flow.settled(execution_id)
    assert done["status"] == "succeeded", done
    assert sorted(e["status"] for e in await flow.executions(child)) == ["failed", "succeeded"]


async def test_a_workflow_that_starts_itself_stops_at_the_deepest_chain(flow: Flow) -> None:
    loop = await flow.workflow([CALC], name="loop")
    put = await flow.client.patch(
        f"/api/workflows/{loop}", json={"steps": [run(loop)]}, headers=flow.auth
    )
    assert put.status_code == 200, put.text
    await flow.fire(loop, {})
    await flow.burst()
    chain = await flow.executions(loop)
    assert len(chain) == MAX_DEPTH + 1
    statuses = sorted(e["status"] for e in chain)
    assert statuses == ["failed"] + ["succeeded"] * MAX_DEPTH
    (deepest,) = [e for e in chain if e["status"] == "failed"]
    detail = await flow.detail(deepest["id"])
    assert detail["trigger"]["headers"][DEPTH_HEADER] == str(MAX_DEPTH)
    assert f"started one another {MAX_DEPTH} deep" in detail["error"]


async def test_a_full_queue_is_a_wait_that_costs_no_attempt(
    flow: Flow, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    child = await flow.workflow([CALC], name="child")
    parent = await flow.workflow([run(child)])
    starter = await flow.starter(await flow.fire(parent, {}))

    async def full(*_: Any) -> None:
        raise ServiceUnavailable("This tenant has too much work queued; retry later")

    monkeypatch.setattr(webhook_service, "queue_room", full)
    with pytest.raises(NotCalledError) as waits:
        await starter.start(child, {}, record="sub")
    assert waits.value.code == QUEUE_FULL
    assert await flow.executions(child) == []


async def test_a_workflow_deleted_since_is_a_failed_step(flow: Flow, runtime: Runtime) -> None:
    parent = await flow.workflow([CALC])
    starter = await flow.starter(await flow.fire(parent, {}))
    with pytest.raises(ConnectorError) as failed:
        await starter.start("wf_gone", {}, record="sub")
    assert (failed.value.code, failed.value.retryable) == ("workflow_not_found", False)


async def test_a_dry_run_starts_nothing(flow: Flow) -> None:
    child = await flow.workflow([CALC], name="child")
    steps = [run(child, body={"n": "{{ trigger.body.n }}"})]
    for mode in ("simulate", "run"):
        r = await flow.client.post(
            "/api/workflows/dry-run",
            json={"name": "d", "steps": steps, "mode": mode, "trigger_sample": {"body": {"n": 7}}},
            headers=flow.auth,
        )
        assert r.status_code == 200, r.text
        (step,) = r.json()["steps"]
        assert step["status"] == ("simulated" if mode == "simulate" else "succeeded"), step
        shown = step["request"] if mode == "simulate" else step["output"]
        assert shown["starts_workflow"] == child
        assert shown["body"] == {"n": 7}
    assert await flow.executions(child) == []


async def test_checked_when_saved_and_a_workflow_run_by_another_is_not_deleted(
    flow: Flow,
) -> None:
    for config, loc, words in (
        ({"workflow_id": "wf_nope"}, ["config", "workflow_id"], "workflow not found"),
        ({"workflow_id": "{{ trigger.body.wf }}"}, ["config", "workflow_id"], "not a template"),
        ({}, ["config", "workflow_id"], "Field required"),
    ):
        r = await flow.client.post(
            "/api/workflows",
            json={"name": "p", "steps": [{"id": "sub", "type": "run_workflow", "config": config}]},
            headers=flow.auth,
        )
        assert r.status_code == 422, r.text
        details = r.json()["error"]["details"]
        assert any(d["loc"] == ["body", "steps", 0, *loc] and words in d["msg"] for d in details), (
            details
        )
    child = await flow.workflow([CALC], name="child")
    parent = await flow.workflow([run(child)], name="parent")
    refused = await flow.client.delete(f"/api/workflows/{child}", headers=flow.auth)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "workflow_in_use"
    assert refused.json()["error"]["details"]["workflows"] == [{"id": parent, "name": "parent"}]
    assert (
        await flow.client.delete(f"/api/workflows/{parent}", headers=flow.auth)
    ).status_code == 204
    assert (
        await flow.client.delete(f"/api/workflows/{child}", headers=flow.auth)
    ).status_code == 204


async def test_an_execution_it_waits_for_that_is_gone_fails_the_step(
    flow: Flow, runtime: Runtime
) -> None:
    child = await flow.workflow([CALC], name="child")
    parent = await flow.workflow([CALC])
    starter = await flow.starter(await flow.fire(parent, {}))
    started = await starter.start(child, {}, record="sub")
    assert started.status is ExecutionStatus.queued
    await flow.burst()  # both end, and retention deletes them
    pruned = await runtime.store.prune_executions(
        await flow.tenant_id(), finished_before=utcnow() + timedelta(seconds=1), limit=10
    )
    assert pruned == 2
    with pytest.raises(ConnectorError) as gone:
        await starter.state(started)
    assert (gone.value.code, gone.value.retryable) == ("workflow_failed", False)
    assert "is gone" in str(gone.value)


async def test_another_tenants_workflow_cannot_be_run(flow: Flow) -> None:
    """Its id is not found when saved, as any workflow the tenant does not have; and a
    starter, whose reads are the tenant's, does not find it either."""
    theirs = await flow.workflow([CALC], name="theirs")
    other = await signup(flow.client, "mallory@example.com")
    other.pop("tenant_id")
    r = await flow.client.post(
        "/api/workflows",
        json={"name": "p", "steps": [run(theirs)]},
        headers=other,
    )
    assert r.status_code == 422, r.text
    (detail,) = r.json()["error"]["details"]
    assert (detail["loc"], detail["type"]) == (
        ["body", "steps", 0, "config", "workflow_id"],
        "workflow_not_found",
    )
    mine = await flow.client.post(
        "/api/workflows", json={"name": "mine", "steps": [CALC]}, headers=other
    )
    fired = await flow.client.post(f"/api/webhooks/{mine.json()['id']}", json={})
    execution = await flow.runtime.store.get_execution(
        (await flow.client.get("/api/tenant", headers=other)).json()["id"],
        fired.json()["execution_id"],
    )
    assert execution is not None
    with pytest.raises(ConnectorError) as refused:
        await Starter(flow.runtime, execution).start(theirs, {}, record="sub")
    assert refused.value.code == "workflow_not_found"
    assert await flow.executions(theirs) == []
