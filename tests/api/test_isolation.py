"""Tenant isolation, walked over the OpenAPI document: every operation, called with tenant A's
token and tenant B's ids, answers 404 (never 200, 403 or 409, which would reveal that the id
exists), and no list shows B's rows. A new operation fails ``test_matrix_covers_every_route``
until it is classified here.

B's webhook URL is public by design (the unguessable workflow id is the address), so the
intake route is not in the matrix; running or dry-running B's workflow with A's token is.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from ipaas.runtime import Runtime
from tests.conftest import signup

#: A valid body for each operation that takes one, so validation cannot answer before the
#: tenant check does.
STEP = {"id": "notify", "type": "slack_message", "config": {"text": "hi"}}
WORKFLOW = {"name": "w", "trigger": {"type": "webhook"}, "steps": [STEP]}
BODIES: dict[tuple[str, str], Any] = {
    ("PUT", "/api/workflows/{workflow_id}"): WORKFLOW,
    ("PATCH", "/api/workflows/{workflow_id}"): {"active": False},
    ("PATCH", "/api/credentials/{credential_id}"): {
        "name": "a-owns-it",
        "secret": {"webhook_url": "http://127.0.0.1:9/services/T/B/A"},
    },
    ("POST", "/api/workflows/{workflow_id}/dry-run"): {"mode": "simulate"},
    ("POST", "/api/workflows/{workflow_id}/run"): {"body": {"x": 1}},
    ("PATCH", "/api/members/{user_id}"): {"role": "member"},
}
#: Every operation that names one of B's objects: A must get 404.
BY_ID = {
    ("GET", "/api/credentials/{credential_id}"),
    ("PATCH", "/api/credentials/{credential_id}"),
    ("DELETE", "/api/credentials/{credential_id}"),
    ("POST", "/api/credentials/{credential_id}/oauth2/authorize"),
    ("POST", "/api/credentials/{credential_id}/test"),
    ("GET", "/api/workflows/{workflow_id}"),
    ("PUT", "/api/workflows/{workflow_id}"),
    ("PATCH", "/api/workflows/{workflow_id}"),
    ("DELETE", "/api/workflows/{workflow_id}"),
    ("POST", "/api/workflows/{workflow_id}/dry-run"),
    ("POST", "/api/workflows/{workflow_id}/run"),
    ("GET", "/api/workflows/{workflow_id}/versions"),
    ("GET", "/api/workflows/{workflow_id}/versions/{version}"),
    ("POST", "/api/workflows/{workflow_id}/versions/{version}/restore"),
    ("GET", "/api/executions/{execution_id}"),
    ("POST", "/api/executions/{execution_id}/cancel"),
    ("POST", "/api/executions/{execution_id}/retry"),
    ("POST", "/api/executions/{execution_id}/replay"),
    ("DELETE", "/api/tokens/{token_id}"),
    ("PATCH", "/api/members/{user_id}"),
    ("DELETE", "/api/members/{user_id}"),
}
#: Every list of the caller's rows: none of B's may appear (executions: with every filter).
LISTS = {
    ("GET", "/api/credentials"),
    ("GET", "/api/workflows"),
    ("GET", "/api/executions"),
    ("GET", "/api/tokens"),
    ("GET", "/api/members"),
    ("GET", "/api/circuits"),
    ("GET", "/api/tenant"),
    ("GET", "/api/stats"),
}
#: Operations that name no object of another tenant: public by design (sign-up, login, the
#: webhook intake, health) or acting only on the caller's own tenant (create) or user
#: (password).
NOT_TENANT_ADDRESSED = {
    ("POST", "/api/auth/signup"),
    ("POST", "/api/auth/token"),
    ("POST", "/api/auth/password"),
    ("POST", "/api/webhooks/{workflow_id}"),
    # Senders' checks of the URL: public, as the intake (tests/webhooks/test_subscription.py,
    # tests/webhooks/test_url_checks.py).
    ("GET", "/api/webhooks/{workflow_id}"),
    ("HEAD", "/api/webhooks/{workflow_id}"),
    ("OPTIONS", "/api/webhooks/{workflow_id}"),
    ("POST", "/api/credentials"),
    ("POST", "/api/workflows"),
    ("POST", "/api/workflows/dry-run"),
    ("POST", "/api/tokens"),
    ("POST", "/api/members"),
    # Public: the sealed state names the credential (tests/credentials/test_oauth2.py: a
    # state made for B's credential connects only B's).
    ("GET", "/api/oauth2/callback"),
    # Public: the invitation's token establishes the tenant.
    ("POST", "/api/auth/invite"),
    # Takes a workflow id, but as a filter of the caller's own executions
    # (tests/executions/test_endpoints.py: another tenant's id retries nothing).
    ("POST", "/api/executions/retry"),
    # The same (tests/engine/test_worker.py: another tenant's workflow id cancels nothing).
    ("POST", "/api/executions/cancel"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
}


def _operations(client: httpx.AsyncClient) -> set[tuple[str, str]]:
    app = client._transport.app  # type: ignore[attr-defined]
    return {(m.upper(), p) for p, item in app.openapi()["paths"].items() for m in item}


@pytest.fixture
async def tenants(client: httpx.AsyncClient, runtime: Runtime) -> dict[str, Any]:
    """Tenant A's headers; tenant B's ids: credential, workflow, token, a queued and a
    cancelled execution, a circuit."""
    a = await signup(client, "a@example.com")
    b = await signup(client, "b@example.com")
    a.pop("tenant_id")
    b_tenant = b.pop("tenant_id")
    credential = (
        await client.post(
            "/api/credentials",
            headers=b,
            json={
                "name": "b-slack",
                "type": "slack",
                "secret": {"webhook_url": "http://127.0.0.1:9/services/T/B/X"},
            },
        )
    ).json()["id"]
    step = {**STEP, "credential_id": credential}
    workflow = (
        await client.post("/api/workflows", headers=b, json={**WORKFLOW, "steps": [step]})
    ).json()["id"]
    queued = (await client.post(f"/api/webhooks/{workflow}", json={"b": 1})).json()
    cancelled = (await client.post(f"/api/webhooks/{workflow}", json={"b": 2})).json()
    cancelled = cancelled["execution_id"]
    response = await client.post(f"/api/executions/{cancelled}/cancel", headers=b)
    assert response.json()["status"] == "cancelled", response.text
    token = (await client.post("/api/tokens", headers=b, json={"name": "b"})).json()["id"]
    b_user = (await client.get("/api/members", headers=b)).json()[0]["id"]
    now = datetime.now(UTC)
    await runtime.store.record_circuit_failure(
        b_tenant, "b-only.example", now=now, threshold=1, retry_at=now + timedelta(seconds=30)
    )
    return {
        "a": a,
        "b": b,
        "ids": {
            "credential_id": credential,
            "workflow_id": workflow,
            "execution_id": cancelled,
            "token_id": token,
            "version": 1,  # of B's workflow
            "user_id": b_user,
        },
        "queued": queued["execution_id"],
        "b_values": [
            b_tenant,
            credential,
            workflow,
            queued["execution_id"],
            cancelled,
            token,
            b_user,
        ],
        "b_host": "b-only.example",
    }


async def test_matrix_covers_every_route(client: httpx.AsyncClient) -> None:
    classified = BY_ID | LISTS | NOT_TENANT_ADDRESSED
    assert _operations(client) == classified, (
        "a new route: add it to BY_ID, LISTS or NOT_TENANT_ADDRESSED in this file"
    )


async def test_another_tenants_ids_are_not_found(
    client: httpx.AsyncClient, tenants: dict[str, Any]
) -> None:
    for method, path in sorted(BY_ID):
        ids = tenants["ids"]
        targets = [path.format(**ids)]
        if "{execution_id}" in path:  # a queued one too: cancel applies to it
            targets.append(path.format(execution_id=tenants["queued"]))
        for url in targets:
            response = await client.request(
                method, url, headers=tenants["a"], json=BODIES.get((method, path))
            )
            assert response.status_code == 404, (method, url, response.text)
            for value in tenants["b_values"]:
                assert value not in response.text, (method, url)
    # ...and B's objects are untouched: A's deletes and cancels did nothing.
    b = tenants["b"]
    for path in ("/api/credentials/{credential_id}", "/api/workflows/{workflow_id}"):
        response = await client.get(path.format(**tenants["ids"]), headers=b)
        assert response.status_code == 200, response.text
    credential = await client.get(
        "/api/credentials/{credential_id}".format(**tenants["ids"]), headers=b
    )
    assert credential.json()["name"] == "b-slack"  # A's PATCH changed nothing
    response = await client.get(f"/api/executions/{tenants['queued']}", headers=b)
    assert response.json()["status"] == "queued"
    assert response.json()["cancel_requested"] is False
    tokens = (await client.get("/api/tokens", headers=b)).json()
    assert tenants["ids"]["token_id"] in {t["id"] for t in tokens}
    [member] = (await client.get("/api/members", headers=b)).json()
    assert (member["id"], member["role"]) == (tenants["ids"]["user_id"], "owner")


async def test_no_list_shows_another_tenants_rows(
    client: httpx.AsyncClient, tenants: dict[str, Any]
) -> None:
    a = tenants["a"]
    queries: list[tuple[str, dict[str, str]]] = [(path, {}) for _, path in sorted(LISTS)]
    queries += [
        ("/api/executions", {"workflow_id": tenants["ids"]["workflow_id"]}),
        *[("/api/executions", {"status": s}) for s in ("queued", "cancelled", "running")],
        *[("/api/executions", {"status": s}) for s in ("succeeded", "failed", "timed_out")],
        ("/api/executions", {"workflow_id": tenants["ids"]["workflow_id"], "status": "queued"}),
    ]
    for path, params in queries:
        response = await client.get(path, headers=a, params=params)
        assert response.status_code == 200, (path, params, response.text)
        for value in [*tenants["b_values"], tenants["b_host"]]:
            assert value not in response.text, (path, params, value)
    # The same lists as B do show B's rows: the test looks where they would be.
    b = tenants["b"]
    executions = (await client.get("/api/executions", headers=b)).json()["items"]
    assert len(executions) == 2
    circuits = (await client.get("/api/circuits", headers=b)).json()["items"]
    assert [c["host"] for c in circuits] == [tenants["b_host"]]
    # Figures too: B's finished (cancelled) execution counts in B's stats only.
    assert (await client.get("/api/stats", headers=b)).json()["total"] == 1
    assert (await client.get("/api/stats", headers=a)).json()["total"] == 0
