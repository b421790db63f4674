"""The ``token`` scheme: a header holding the workflow's secret itself, as GitLab sends it
(``X-Gitlab-Token``, the default) and as senders that offer only a shared token do
(``Authorization: Bearer ...`` with ``prefix``). Before, such a sender could be taken only
unauthenticated: ``hmac_sha256`` checks a signature of the body, which they do not send."""

from __future__ import annotations

import httpx
import pytest

from ipaas.runtime import Runtime
from tests.webhooks.conftest import NewWorkflow, executions_of
from tests.webhooks.test_signatures import assert_refused, credential

TOKEN = "glpat-SENTINEL-0123456789"
#: As GitLab sends a push event (its docs, "Webhook events").
PUSH = {"object_kind": "push", "ref": "refs/heads/main", "checkout_sha": "da1560886d4f"}


async def token_workflow(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    new_workflow: NewWorkflow,
    **fields: str,
) -> str:
    cred = await credential(client, auth, {"secret": TOKEN, "previous_secret": "old-token-1"})
    return await new_workflow(
        {"type": "webhook", "auth": {"scheme": "token", "credential_id": cred, **fields}}
    )


async def test_gitlabs_token_is_taken_and_masked(
    client: httpx.AsyncClient, auth: dict[str, str], new_workflow: NewWorkflow, runtime: Runtime
) -> None:
    workflow_id = await token_workflow(client, auth, new_workflow)
    headers = {"X-Gitlab-Token": TOKEN, "X-Gitlab-Event": "Push Hook"}
    response = await client.post(f"/api/webhooks/{workflow_id}", json=PUSH, headers=headers)
    assert response.status_code == 202, response.text
    # The one being rotated out works too.
    headers["X-Gitlab-Token"] = "old-token-1"
    response = await client.post(f"/api/webhooks/{workflow_id}", json=PUSH, headers=headers)
    assert response.status_code == 202, response.text
    stored = executions_of(runtime, workflow_id)
    assert [e.trigger.headers["x-gitlab-token"] for e in stored] == ["***", "***"]
    detail = await client.get(f"/api/executions/{stored[0].id}", headers=auth)
    assert TOKEN not in detail.text


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "signature_missing"),
        ({"X-Gitlab-Token": "glpat-guessed"}, "signature_invalid"),
        ({"X-Gitlab-Token": TOKEN + " "}, "signature_invalid"),
        ({"X-Gitlab-Token": TOKEN[:-1]}, "signature_invalid"),
    ],
)
async def test_anything_but_the_token_is_refused(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    new_workflow: NewWorkflow,
    runtime: Runtime,
    headers: dict[str, str],
    code: str,
) -> None:
    workflow_id = await token_workflow(client, auth, new_workflow)
    response = await client.post(f"/api/webhooks/{workflow_id}", json=PUSH, headers=headers)
    assert_refused(response, runtime, workflow_id, code)


async def test_a_bearer_token_in_another_header(
    client: httpx.AsyncClient, auth: dict[str, str], new_workflow: NewWorkflow, runtime: Runtime
) -> None:
    workflow_id = await token_workflow(
        client, auth, new_workflow, header="X-Alert-Auth", prefix="Bearer "
    )
    url = f"/api/webhooks/{workflow_id}"
    response = await client.post(url, json={}, headers={"X-Alert-Auth": f"Bearer {TOKEN}"})
    assert response.status_code == 202, response.text
    (stored,) = executions_of(runtime, workflow_id)
    # A header the workflow names is masked like the known ones: it holds the secret.
    assert stored.trigger.headers["x-alert-auth"] == "***"
    response = await client.post(url, json={}, headers={"X-Alert-Auth": TOKEN})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("scheme", "fields", "says"),
    [
        ("token", {"encoding": "hex"}, "encoding: only for the hmac_sha256 scheme"),
        (
            "slack",
            {"header": "X-Token"},
            "header: only for the hmac_sha256, token and stripe schemes",
        ),
    ],
)
async def test_fields_a_scheme_does_not_take_are_refused(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    scheme: str,
    fields: dict[str, str],
    says: str,
) -> None:
    cred = await credential(client, auth, {"secret": TOKEN})
    trigger = {"type": "webhook", "auth": {"scheme": scheme, "credential_id": cred, **fields}}
    response = await client.post(
        "/api/workflows",
        json={
            "name": "x",
            "trigger": trigger,
            "steps": [{"id": "a", "type": "http_request", "config": {"url": "http://x.test"}}],
        },
        headers=auth,
    )
    assert response.status_code == 422, response.text
    assert says in response.text
