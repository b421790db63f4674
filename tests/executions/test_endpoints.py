from __future__ import annotations

import httpx

from ipaas.executions.models import ExecutionStatus
from ipaas.runtime import Runtime
from tests.conftest import signup


async def make_workflow(client: httpx.AsyncClient, auth: dict[str, str]) -> str:
    r = await client.post(
        "/api/workflows",
        json={
            "name": "w",
            "steps": [{"id": "c", "type": "http_request", "config": {"url": "http://x.test"}}],
        },
        headers=auth,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


class TestList:
    async def test_cursor_pagination_without_gaps_or_overlap(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        wf = await make_workflow(client, auth)
        fired = [
            (await client.post(f"/api/webhooks/{wf}", json={"i": i})).json()["execution_id"]
            for i in range(12)
        ]
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/api/executions", params=params, headers=auth)).json()
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(fired))

    async def test_filters_by_workflow_and_status(
        self, client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
    ) -> None:
        wf1 = await make_workflow(client, auth)
        wf2 = await make_workflow(client, auth)
        a = (await client.post(f"/api/webhooks/{wf1}", json={})).json()["execution_id"]
        b = (await client.post(f"/api/webhooks/{wf2}", json={})).json()["execution_id"]
        await client.post(f"/api/executions/{b}/cancel", headers=auth)
        by_wf = (
            await client.get("/api/executions", params={"workflow_id": wf1}, headers=auth)
        ).json()
        assert [i["id"] for i in by_wf["items"]] == [a]
        by_status = (
            await client.get("/api/executions", params={"status": "cancelled"}, headers=auth)
        ).json()
        assert [i["id"] for i in by_status["items"]] == [b]
        assert runtime.store.executions[a].status is ExecutionStatus.queued  # type: ignore[attr-defined]

    async def test_bad_cursor_and_status_are_4xx(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        r = await client.get("/api/executions", params={"cursor": "%%%"}, headers=auth)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "invalid_cursor"
        r = await client.get("/api/executions", params={"status": "exploded"}, headers=auth)
        assert r.status_code == 422


class TestIsolation:
    async def test_other_tenant_sees_nothing(self, client: httpx.AsyncClient) -> None:
        a = await signup(client, "a@example.com")
        b = await signup(client, "b@example.com")
        a.pop("tenant_id")
        b.pop("tenant_id")
        wf = await make_workflow(client, a)
        ex = (await client.post(f"/api/webhooks/{wf}", json={})).json()["execution_id"]
        assert (await client.get(f"/api/executions/{ex}", headers=b)).status_code == 404
        assert (await client.post(f"/api/executions/{ex}/cancel", headers=b)).status_code == 404
        assert (await client.get("/api/executions", headers=b)).json()["items"] == []
        assert (await client.get(f"/api/executions/{ex}", headers=a)).json()["status"] == "queued"
