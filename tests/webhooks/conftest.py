from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from ipaas.runtime import Runtime

NewWorkflow = Callable[..., Awaitable[str]]


@pytest.fixture
def new_workflow(client: httpx.AsyncClient, auth: dict[str, str]) -> NewWorkflow:
    """``await new_workflow(trigger={...}, headers=other_auth)``: a webhook workflow's id."""

    async def create(
        trigger: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> str:
        response = await client.post(
            "/api/workflows",
            json={
                "name": "echo",
                "trigger": trigger or {"type": "webhook"},
                "steps": [
                    {"id": "call", "type": "http_request", "config": {"url": "http://x.test"}}
                ],
            },
            headers=headers or auth,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    return create


def executions_of(runtime: Runtime, workflow_id: str) -> list[Any]:
    """Every execution the (memory) store holds for the workflow."""
    executions = runtime.store.executions.values()  # type: ignore[attr-defined]
    return [ex for ex in executions if ex.workflow_id == workflow_id]
