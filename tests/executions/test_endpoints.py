from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

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

    async def test_since_and_until_bound_every_page(
        self, client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
    ) -> None:
        wf = await make_workflow(client, auth)
        t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
        fired = []
        for minutes in range(8):
            r = await client.post(f"/api/webhooks/{wf}", json={"m": minutes})
            execution_id = r.json()["execution_id"]
            runtime.store.executions[execution_id].created_at = t0 + timedelta(minutes=minutes)  # type: ignore[attr-defined]
            fired.append(execution_id)
        window = {
            "since": (t0 + timedelta(minutes=2)).isoformat(),
            "until": (t0 + timedelta(minutes=6)).isoformat(),
        }
        seen: list[str] = []
        cursor = None
        while True:
            params = {**window, "limit": 3, **({"cursor": cursor} if cursor else {})}
            r = await client.get("/api/executions", params=params, headers=auth)
            assert r.status_code == 200, r.text
            seen += [item["id"] for item in r.json()["items"]]
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
        assert seen == fired[5:1:-1]  # minutes 5, 4, 3, 2: until is exclusive
        for bad in ({"since": "1764590400"}, {"until": "yesterday"}, {"since": "2026-12-01"}):
            r = await client.get("/api/executions", params=bad, headers=auth)
            assert r.status_code == 422, (bad, r.text)
            assert "date-time with its zone" in r.text or "timezone" in r.text
        # A window with nothing in it is a mistake (the two swapped), not an empty page.
        for until in (window["since"], (t0 + timedelta(minutes=1)).isoformat()):
            swapped = {"since": window["since"], "until": until}
            r = await client.get("/api/executions", params=swapped, headers=auth)
            assert r.status_code == 422, r.text
            (detail,) = r.json()["error"]["details"]
            assert detail["loc"] == ["query", "until"]
            assert "must be later than since" in detail["msg"]

    async def test_q_finds_the_executions_whose_trigger_holds_it(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        """Support's question: which execution was order 1042's? In the body, a header or
        the query; other tenants' never."""
        wf = await make_workflow(client, auth)
        fired = {}
        for name, body, query in (
            ("order", {"order": {"id": "ORD-1042"}, "email": "ada@example.com"}, ""),
            ("other", {"order": {"id": "ORD-7"}}, ""),
            ("query", {}, "?ref=ord-1042"),
        ):
            r = await client.post(f"/api/webhooks/{wf}{query}", json=body)
            fired[name] = r.json()["execution_id"]
        other = await signup(client, "eve@example.com")
        other.pop("tenant_id")
        r = await client.post(
            f"/api/webhooks/{await make_workflow(client, other)}", json={"id": "ORD-1042"}
        )
        assert r.status_code == 202

        async def found(**params: str) -> list[str]:
            r = await client.get("/api/executions", params=params, headers=auth)
            assert r.status_code == 200, r.text
            return [item["id"] for item in r.json()["items"]]

        assert await found(q="ord-1042") == [fired["query"], fired["order"]]
        assert await found(q="ORD-1042", limit="1") == [fired["query"]]
        assert await found(q="Ada@Example") == [fired["order"]]
        assert await found(q="ORD-1042", workflow_id="wf_none") == []
        for short in ("", "ab"):
            r = await client.get("/api/executions", params={"q": short}, headers=auth)
            assert r.status_code == 422, r.text

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


class TestRetryMany:
    """``POST /api/executions/retry``: after a destination's outage, every run that failed
    on it, without one call per execution."""

    T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    async def runs(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        workflow_id: str,
        outcomes: list[tuple[ExecutionStatus, int]],
    ) -> list[str]:
        """Executions of ``workflow_id`` that ended in each status, created that many minutes
        after ``T0``."""
        ids = []
        for status, minutes in outcomes:
            r = await client.post(f"/api/webhooks/{workflow_id}", json={"m": minutes})
            execution_id = str(r.json()["execution_id"])
            stored = runtime.store.executions[execution_id]  # type: ignore[attr-defined]
            stored.status = status
            stored.created_at = self.T0 + timedelta(minutes=minutes)
            stored.error = None if status is ExecutionStatus.succeeded else "slack said 503"
            ids.append(execution_id)
        return ids

    async def test_the_failed_ones_in_the_window_are_queued_again(
        self, client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
    ) -> None:
        wf, other = await make_workflow(client, auth), await make_workflow(client, auth)
        failed, timed_out, cancelled, succeeded, too_early, too_late = await self.runs(
            client,
            runtime,
            wf,
            [
                (ExecutionStatus.failed, 10),
                (ExecutionStatus.timed_out, 5),
                (ExecutionStatus.cancelled, 12),
                (ExecutionStatus.succeeded, 15),
                (ExecutionStatus.failed, -1),
                (ExecutionStatus.failed, 60),
            ],
        )
        (other_failed,) = await self.runs(client, runtime, other, [(ExecutionStatus.failed, 20)])
        body = {
            "since": self.T0.isoformat(),
            "until": (self.T0 + timedelta(minutes=60)).isoformat(),
            "workflow_id": wf,
        }

        # The window's ends swapped: refused, rather than "nothing failed" ({"retried": []}).
        swapped = body | {"since": body["until"], "until": body["since"]}
        r = await client.post("/api/executions/retry", json=swapped, headers=auth)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"][0]["loc"] == ["body", "until"]

        r = await client.post("/api/executions/retry", json=body, headers=auth)

        assert r.status_code == 202, r.text
        assert r.json() == {"retried": [timed_out, failed], "more": False}  # oldest first
        status = {
            ex_id: runtime.store.executions[ex_id].status  # type: ignore[attr-defined]
            for ex_id in (failed, timed_out, cancelled, succeeded, too_early, too_late)
        }
        assert status == {
            failed: ExecutionStatus.queued,
            timed_out: ExecutionStatus.queued,
            cancelled: ExecutionStatus.cancelled,  # not asked for
            succeeded: ExecutionStatus.succeeded,
            too_early: ExecutionStatus.failed,
            too_late: ExecutionStatus.failed,  # until is exclusive
        }
        assert runtime.store.executions[failed].error is None  # type: ignore[attr-defined]
        assert runtime.store.executions[other_failed].status is ExecutionStatus.failed  # type: ignore[attr-defined]
        # Every workflow, cancelled ones too, from T0 on (a status named twice counts once).
        everything = {
            "since": self.T0.isoformat(),
            "statuses": ["failed", "cancelled", "failed"],
            "limit": 3,
        }
        r = await client.post("/api/executions/retry", json=everything, headers=auth)
        assert r.json() == {"retried": [cancelled, other_failed, too_late], "more": False}

    async def test_limit_and_more_go_on_call_after_call(
        self, client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
    ) -> None:
        wf = await make_workflow(client, auth)
        ids = await self.runs(client, runtime, wf, [(ExecutionStatus.failed, m) for m in range(5)])
        body = {"since": self.T0.isoformat(), "limit": 2}
        batches = []
        for _ in range(4):
            r = await client.post("/api/executions/retry", json=body, headers=auth)
            assert r.status_code == 202, r.text
            batches.append((r.json()["retried"], r.json()["more"]))
        # The newest first, each batch queued oldest first; then nothing is left.
        assert batches == [
            (ids[3:5], True),
            (ids[1:3], True),
            (ids[0:1], False),
            ([], False),
        ]

    async def test_a_deleted_workflows_executions_are_not_run_again(
        self, client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
    ) -> None:
        """Deleting a workflow stops its executions (the delete cancels them), as a user who
        deleted it to stop it expects; a retry, one or many, ran its steps again."""
        gone, kept = await make_workflow(client, auth), await make_workflow(client, auth)
        of_gone = await self.runs(
            client, runtime, gone, [(ExecutionStatus.failed, m) for m in (1, 2)]
        )
        (of_kept,) = await self.runs(client, runtime, kept, [(ExecutionStatus.failed, 3)])
        r = await client.delete(f"/api/workflows/{gone}", headers=auth)
        assert r.status_code == 204, r.text

        r = await client.post(f"/api/executions/{of_gone[0]}/retry", headers=auth)
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "workflow_not_found"
        # Left out before the limit: with them counted, ``more`` stayed true call after call.
        body = {"since": self.T0.isoformat(), "limit": 1}
        r = await client.post("/api/executions/retry", json=body, headers=auth)
        assert r.json() == {"retried": [of_kept], "more": False}
        for execution_id in of_gone:
            assert runtime.store.executions[execution_id].status is ExecutionStatus.failed  # type: ignore[attr-defined]

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"since": "2026-12-01T12:00:00"},  # no zone
            {"since": 1764590400},  # seconds: the schema says a date-time string
            {"since": "2026-12-01T12:00:00Z", "statuses": ["succeeded"]},
            {"since": "2026-12-01T12:00:00Z", "statuses": []},
            {"since": "2026-12-01T12:00:00Z", "limit": 1001},
            {"since": "2026-12-01T12:00:00Z", "stauts": ["failed"]},
        ],
        ids=["no-since", "naive", "seconds", "succeeded", "no-status", "limit", "typo"],
    )
    async def test_bad_requests_are_422_and_retry_nothing(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        runtime: Runtime,
        body: dict[str, object],
    ) -> None:
        wf = await make_workflow(client, auth)
        (failed,) = await self.runs(client, runtime, wf, [(ExecutionStatus.failed, 1)])
        r = await client.post("/api/executions/retry", json=body, headers=auth)
        assert r.status_code == 422, r.text
        assert runtime.store.executions[failed].status is ExecutionStatus.failed  # type: ignore[attr-defined]

    async def test_another_tenants_workflow_retries_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        a = await signup(client, "a@example.com")
        b = await signup(client, "b@example.com")
        a.pop("tenant_id")
        b.pop("tenant_id")
        wf = await make_workflow(client, a)
        (failed,) = await self.runs(client, runtime, wf, [(ExecutionStatus.failed, 1)])
        body = {"since": self.T0.isoformat(), "workflow_id": wf}
        r = await client.post("/api/executions/retry", json=body, headers=b)
        assert r.json() == {"retried": [], "more": False}
        assert runtime.store.executions[failed].status is ExecutionStatus.failed  # type: ignore[attr-defined]
        r = await client.post("/api/executions/retry", json=body, headers=a)
        assert r.json()["retried"] == [failed]
