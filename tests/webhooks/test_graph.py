"""Microsoft Graph's change notifications (``microsoft_graph`` scheme): each notification's
``clientState`` is the secret the subscription was created with. Graph signs nothing else,
so before this its notifications could be taken only unauthenticated."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ipaas.runtime import Runtime
from tests.webhooks.conftest import NewWorkflow, executions_of
from tests.webhooks.test_signatures import assert_refused, signed_workflow
from tests.webhooks.test_url_checks import GRAPH_TOKEN, assert_text

CLIENT_STATE = "secretClientValue-0123456789"


def notification(client_state: str | None = CLIENT_STATE, **fields: Any) -> dict[str, Any]:
    """One as Graph documents it (a new message in a mailbox)."""
    item = {
        "subscriptionId": "7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
        "subscriptionExpirationDateTime": "2026-12-10T18:23:45.9356913Z",
        "changeType": "created",
        "resource": "Users/{user-id}/Messages/{message-id}",
        "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
        **fields,
    }
    if client_state is not None:
        item["clientState"] = client_state
    return item


@pytest.fixture
async def workflow_id(
    client: httpx.AsyncClient, auth: dict[str, str], new_workflow: NewWorkflow
) -> str:
    secret = {"secret": CLIENT_STATE, "previous_secret": "previous-client-state"}
    return await signed_workflow(client, auth, new_workflow, "microsoft_graph", secret)


async def test_the_subscription_is_validated_then_its_notifications_taken(
    client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
) -> None:
    url = f"/api/webhooks/{workflow_id}"
    assert_text(await client.post(url, params={"validationToken": GRAPH_TOKEN}), GRAPH_TOKEN)
    batch = {"value": [notification(), notification("previous-client-state")]}
    response = await client.post(url, json=batch)
    assert response.status_code == 202, response.text
    (stored,) = executions_of(runtime, workflow_id)
    assert stored.trigger.body["value"][0]["changeType"] == "created"
    # The clientState is the workflow's secret: not stored, not shown to members.
    assert [n["clientState"] for n in stored.trigger.body["value"]] == ["***", "***"]
    assert CLIENT_STATE not in repr(stored.trigger)
    # A lifecycle notification carries the same clientState.
    lifecycle = notification(lifecycleEvent="reauthorizationRequired")
    response = await client.post(url, json={"value": [lifecycle]})
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"value": [notification("guessed")]}, "signature_invalid"),
        # One of a batch is not the subscription's: the batch is refused whole.
        ({"value": [notification(), notification("guessed")]}, "signature_invalid"),
        ({"value": [notification(None)]}, "signature_missing"),
        ({"value": []}, "signature_missing"),
        ({"value": ["not an object"]}, "signature_missing"),
        ({"notifications": [notification()]}, "signature_missing"),
        ([notification()], "signature_missing"),
    ],
)
async def test_anything_else_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, workflow_id: str, body: Any, code: str
) -> None:
    response = await client.post(f"/api/webhooks/{workflow_id}", json=body)
    assert_refused(response, runtime, workflow_id, code)


async def test_a_body_that_is_not_json_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
) -> None:
    response = await client.post(
        f"/api/webhooks/{workflow_id}",
        content=b"clientState=secretClientValue-0123456789",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_refused(response, runtime, workflow_id, "signature_missing")
