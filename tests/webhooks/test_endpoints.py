from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from ipaas.executions.models import ExecutionStatus
from ipaas.runtime import Runtime

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"


@pytest.fixture
async def workflow_id(client: httpx.AsyncClient, auth: dict[str, str]) -> str:
    response = await client.post(
        "/api/workflows",
        json={
            "name": "echo",
            "steps": [{"id": "call", "type": "http_request", "config": {"url": "http://x.test"}}],
        },
        headers=auth,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


class TestIntake:
    async def test_202_after_the_execution_is_committed(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        body = (FIXTURES / "github" / "push.json").read_bytes()
        response = await client.post(
            f"/api/webhooks/{workflow_id}?source=github",
            content=body,
            headers={
                "content-type": "application/json",
                "x-github-event": "push",
                "authorization": "Bearer caller-secret",
            },
        )
        assert response.status_code == 202
        payload = response.json()
        execution_id = payload["execution_id"]
        assert payload["status_url"] == f"/api/executions/{execution_id}"
        stored = runtime.store.executions[execution_id]  # type: ignore[attr-defined]
        assert stored.status is ExecutionStatus.queued
        assert stored.trigger.body == json.loads(body)
        assert stored.trigger.headers["x-github-event"] == "push"
        assert stored.trigger.headers["authorization"] == "***"
        assert stored.trigger.query == {"source": "github"}

    async def test_form_and_raw_bodies(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        form = await client.post(f"/api/webhooks/{workflow_id}", data={"a": "1", "b": "two"})
        raw = await client.post(
            f"/api/webhooks/{workflow_id}", content="héllo", headers={"content-type": "text/plain"}
        )
        executions = runtime.store.executions  # type: ignore[attr-defined]
        assert executions[form.json()["execution_id"]].trigger.body == {"a": "1", "b": "two"}
        assert executions[raw.json()["execution_id"]].trigger.body == "héllo"

    async def test_invalid_json_is_422_and_persists_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        response = await client.post(
            f"/api/webhooks/{workflow_id}",
            content=b"{nope",
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_json"
        assert runtime.store.executions == {}  # type: ignore[attr-defined]

    async def test_unknown_and_inactive_are_404(
        self, client: httpx.AsyncClient, auth: dict[str, str], workflow_id: str
    ) -> None:
        assert (await client.post("/api/webhooks/wf_unknown", json={})).status_code == 404
        await client.patch(f"/api/workflows/{workflow_id}", json={"active": False}, headers=auth)
        response = await client.post(f"/api/webhooks/{workflow_id}", json={})
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "workflow_not_found"

    async def test_oversized_body_is_413_by_header(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        too_big = b"x" * (runtime.settings.max_body_bytes + 1)
        response = await client.post(f"/api/webhooks/{workflow_id}", content=too_big)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"

    async def test_oversized_streamed_body_is_413_without_reading_it_all(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        sent = 0
        chunk = b"y" * 65536

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal sent
            while sent < 64 * runtime.settings.max_body_bytes:
                sent += len(chunk)
                yield chunk

        response = await client.post(f"/api/webhooks/{workflow_id}", content=chunks())
        assert response.status_code == 413
        assert sent < 2 * runtime.settings.max_body_bytes
        assert runtime.store.executions == {}  # type: ignore[attr-defined]

    async def test_queue_depth_limit_is_503_with_retry_after(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        runtime.settings.queue_max_depth = 2
        statuses = [
            (await client.post(f"/api/webhooks/{workflow_id}", json={})).status_code
            for _ in range(3)
        ]
        assert statuses == [202, 202, 503]
        response = await client.post(f"/api/webhooks/{workflow_id}", json={})
        assert response.headers["retry-after"].isdigit()
        assert response.json()["error"]["code"] == "queue_full"
