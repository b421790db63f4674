"""Meta's subscription check on a webhook URL (WhatsApp, Messenger, Instagram): a GET with
``hub.mode=subscribe``, ``hub.verify_token`` and ``hub.challenge``, answered with the
challenge when the token is the workflow's; before, every GET was a 405, and Meta would
not send a workflow any event."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import httpx
import pytest

from ipaas.runtime import Runtime
from tests.conftest import signup
from tests.webhooks.conftest import NewWorkflow, executions_of
from tests.webhooks.test_signatures import credential, signed_workflow

APP_SECRET = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
VERIFY_TOKEN = "meatyhamhock"
#: As Meta sends it ("Getting started with webhooks", verification requests).
CHECK = {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": VERIFY_TOKEN}


@pytest.fixture
async def workflow_id(
    client: httpx.AsyncClient, auth: dict[str, str], new_workflow: NewWorkflow
) -> str:
    # Meta signs events as GitHub does: X-Hub-Signature-256: sha256=<hex>, hmac_sha256's
    # defaults.
    secret = {"secret": APP_SECRET, "verify_token": VERIFY_TOKEN}
    return await signed_workflow(client, auth, new_workflow, "hmac_sha256", secret)


async def test_the_check_is_answered_with_its_challenge_and_events_follow(
    client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
) -> None:
    for url in (f"/api/webhooks/{workflow_id}", f"/api/webhooks/{workflow_id}/"):
        response = await client.get(url, params=CHECK)
        assert response.status_code == 200, response.text
        assert response.text == "1158201444"
        assert response.headers["content-type"].startswith("text/plain")
        assert response.headers["x-content-type-options"] == "nosniff"
    assert executions_of(runtime, workflow_id) == []
    # Then an event, signed with the app secret.
    body = b'{"object": "whatsapp_business_account", "entry": []}'
    digest = hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"content-type": "application/json", "x-hub-signature-256": f"sha256={digest}"}
    response = await client.post(f"/api/webhooks/{workflow_id}", content=body, headers=headers)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"hub.verify_token": "guessed"}, 403, "verify_token_mismatch"),
        ({"hub.verify_token": None}, 403, "verify_token_mismatch"),
        ({"hub.mode": "unsubscribe"}, 422, "invalid_subscription"),
        ({"hub.challenge": None}, 422, "invalid_subscription"),
        ({"hub.challenge": ""}, 422, "invalid_subscription"),
        ({"hub.challenge": "9" * 257}, 422, "invalid_subscription"),
        # A GET that is no check at all, as every GET was before.
        ({"hub.mode": None}, 405, "method_not_allowed"),
    ],
)
async def test_a_wrong_check_is_refused(
    client: httpx.AsyncClient,
    runtime: Runtime,
    workflow_id: str,
    change: dict[str, Any],
    status: int,
    code: str,
) -> None:
    params = {k: v for k, v in (CHECK | change).items() if v is not None}
    response = await client.get(f"/api/webhooks/{workflow_id}", params=params)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert "1158201444" not in response.text
    assert executions_of(runtime, workflow_id) == []


async def test_a_challenge_given_twice_is_refused(
    client: httpx.AsyncClient, workflow_id: str
) -> None:
    query = "hub.mode=subscribe&hub.verify_token=meatyhamhock&hub.challenge=1&hub.challenge=2"
    response = await client.get(f"/api/webhooks/{workflow_id}?{query}")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_subscription"


async def test_a_workflow_without_a_verify_token_takes_no_check(
    client: httpx.AsyncClient, auth: dict[str, str], new_workflow: NewWorkflow
) -> None:
    signed = await signed_workflow(
        client, auth, new_workflow, "hmac_sha256", {"secret": APP_SECRET}
    )
    unsigned = await new_workflow()
    for workflow_id in (signed, unsigned):
        response = await client.get(f"/api/webhooks/{workflow_id}", params=CHECK)
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "verify_token_not_set"


async def test_unknown_inactive_or_another_kind_of_workflow_is_404(
    client: httpx.AsyncClient, auth: dict[str, str], workflow_id: str
) -> None:
    assert (await client.get("/api/webhooks/wf_nope", params=CHECK)).status_code == 404
    await client.patch(f"/api/workflows/{workflow_id}", json={"active": False}, headers=auth)
    response = await client.get(f"/api/webhooks/{workflow_id}", params=CHECK)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "workflow_not_found"


async def test_another_tenants_token_does_not_answer(
    client: httpx.AsyncClient, workflow_id: str
) -> None:
    other = await signup(client, "grace@example.com")
    await credential(client, other, {"secret": APP_SECRET, "verify_token": "their-token"})
    params = CHECK | {"hub.verify_token": "their-token"}
    response = await client.get(f"/api/webhooks/{workflow_id}", params=params)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "verify_token_mismatch"


async def test_the_verify_token_is_write_only(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    cred = await credential(client, auth, {"secret": APP_SECRET, "verify_token": VERIFY_TOKEN})
    shown = await client.get(f"/api/credentials/{cred}", headers=auth)
    assert shown.status_code == 200
    assert VERIFY_TOKEN not in shown.text
