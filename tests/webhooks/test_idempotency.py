"""Item 7: a repeated webhook within the window answers 200 with the first execution."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest

from ipaas.runtime import Runtime
from tests.webhooks.conftest import NewWorkflow, executions_of
from tests.webhooks.test_endpoints import FIXTURES

STRIPE = (FIXTURES / "stripe" / "customer.created.json").read_bytes()


async def post(
    client: httpx.AsyncClient, workflow_id: str, headers: dict[str, str], body: bytes = b"{}"
) -> httpx.Response:
    return await client.post(
        f"/api/webhooks/{workflow_id}",
        content=body,
        headers=headers | {"content-type": "application/json"},
    )


class TestHeaders:
    @pytest.mark.parametrize("header", ["Idempotency-Key", "webhook-id"])
    async def test_a_repeat_is_200_with_the_first_execution(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow, header: str
    ) -> None:
        workflow_id = await new_workflow()
        first = await post(client, workflow_id, {header: "delivery-1"})
        again = await post(client, workflow_id, {header: "delivery-1"})
        other = await post(client, workflow_id, {header: "delivery-2"})
        assert first.status_code == 202
        assert again.status_code == 200
        execution_id = first.json()["execution_id"]
        assert again.json() == {
            "execution_id": execution_id,
            "status_url": f"/api/executions/{execution_id}",
            "duplicate": True,
        }
        assert other.status_code == 202
        stored = executions_of(runtime, workflow_id)
        assert len(stored) == 2
        assert {ex.dedup_key for ex in stored} == {"idem:delivery-1", "idem:delivery-2"}

    async def test_the_key_is_per_workflow(
        self, client: httpx.AsyncClient, new_workflow: NewWorkflow
    ) -> None:
        one, two = await new_workflow(), await new_workflow()
        assert (await post(client, one, {"Idempotency-Key": "k"})).status_code == 202
        assert (await post(client, two, {"Idempotency-Key": "k"})).status_code == 202

    async def test_without_a_key_nothing_is_deduplicated(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        workflow_id = await new_workflow()
        for _ in range(2):
            assert (await post(client, workflow_id, {})).status_code == 202
        assert len(executions_of(runtime, workflow_id)) == 2

    async def test_a_long_key_is_stored_as_a_digest(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        workflow_id = await new_workflow()
        key = "k" * 1000
        assert (await post(client, workflow_id, {"Idempotency-Key": key})).status_code == 202
        assert (await post(client, workflow_id, {"Idempotency-Key": key})).status_code == 200
        (stored,) = executions_of(runtime, workflow_id)
        assert stored.dedup_key.startswith("idem:sha256:")
        assert len(stored.dedup_key) < 255

    async def test_two_at_the_same_moment_make_one_execution(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        workflow_id = await new_workflow()
        responses = await asyncio.gather(
            *(post(client, workflow_id, {"Idempotency-Key": "same"}) for _ in range(10))
        )
        assert sorted(r.status_code for r in responses) == [200] * 9 + [202]
        assert len({r.json()["execution_id"] for r in responses}) == 1
        assert len(executions_of(runtime, workflow_id)) == 1


class TestWindow:
    async def test_after_the_window_the_key_starts_a_new_execution(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        workflow_id = await new_workflow()
        first = await post(client, workflow_id, {"Idempotency-Key": "k"})
        (stored,) = executions_of(runtime, workflow_id)
        # The first delivery is now a day and a second old.
        window = timedelta(seconds=runtime.settings.idempotency_window_s)
        stored.created_at -= window + timedelta(seconds=1)
        again = await post(client, workflow_id, {"Idempotency-Key": "k"})
        assert again.status_code == 202
        assert again.json()["execution_id"] != first.json()["execution_id"]
        old, new = sorted(executions_of(runtime, workflow_id), key=lambda ex: ex.created_at)
        assert old.dedup_key is None
        assert new.dedup_key == "idem:k"


class TestBodyPath:
    async def test_a_providers_event_id(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        workflow_id = await new_workflow({"type": "webhook", "idempotency": {"body_path": "id"}})
        first = await post(client, workflow_id, {}, STRIPE)
        # A retried delivery: same event, and a header that would say otherwise is ignored.
        again = await post(client, workflow_id, {"Idempotency-Key": "retry-2"}, STRIPE)
        assert first.status_code == 202
        assert again.status_code == 200
        assert again.json()["execution_id"] == first.json()["execution_id"]
        (stored,) = executions_of(runtime, workflow_id)
        assert stored.dedup_key == "idem:evt_00000000000000"

    async def test_a_nested_path_and_a_missing_value(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        workflow_id = await new_workflow(
            {"type": "webhook", "idempotency": {"body_path": "data.object.id"}}
        )
        assert (await post(client, workflow_id, {}, STRIPE)).status_code == 202
        assert (await post(client, workflow_id, {}, STRIPE)).status_code == 200
        # Without the path the event is accepted, not deduplicated: nothing is dropped.
        for _ in range(2):
            assert (await post(client, workflow_id, {}, b'{"data": {}}')).status_code == 202
        assert len(executions_of(runtime, workflow_id)) == 3

    async def test_a_configured_header(
        self, client: httpx.AsyncClient, new_workflow: NewWorkflow
    ) -> None:
        workflow_id = await new_workflow(
            {"type": "webhook", "idempotency": {"header": "X-GitHub-Delivery"}}
        )
        headers = {"X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
        assert (await post(client, workflow_id, headers)).status_code == 202
        assert (await post(client, workflow_id, headers)).status_code == 200
