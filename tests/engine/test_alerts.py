"""Failure alerts end to end: a workflow's failure runs its error workflow, which posts to the
Slack stand-in over real HTTP; the API's ``error_workflow_id`` setting and its refusals."""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import timedelta
from typing import Any

import httpx
import pytest

from ipaas.engine import alerts
from ipaas.engine.alerts import alert_pass
from ipaas.engine.worker import Worker
from ipaas.kit.clock import utcnow
from ipaas.runtime import Runtime
from tests.conftest import signup
from tests.engine.test_retries import Api, wait_for
from tests.standins.server import StandinServer

ALERT_TEXT = (
    "{{ trigger.body.workflow.name }} {{ trigger.body.execution.status }}: "
    "{{ trigger.body.failed_step.id }} {{ trigger.body.failed_step.status_code }}"
)


class Alerts(Api):
    async def slack_credential(self) -> str:
        r = await self.client.post(
            "/api/credentials",
            json={
                "name": "alerts",
                "type": "slack",
                "secret": {"webhook_url": self.standin.slack_webhook_url()},
            },
            headers=self.auth,
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def error_workflow(self, text: str = ALERT_TEXT, **fields: Any) -> str:
        step = {
            "id": "tell",
            "type": "slack_message",
            "credential_id": await self.slack_credential(),
            "config": {"text": text},
        }
        r = await self.client.post(
            "/api/workflows",
            json={"name": "On failure", "steps": [step], **fields},
            headers=self.auth,
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def watched(self, name: str, step: dict[str, Any], error_workflow_id: str | None) -> str:
        """A one-step workflow whose failures run ``error_workflow_id``."""
        r = await self.client.post(
            "/api/workflows",
            json={"name": name, "steps": [step], "error_workflow_id": error_workflow_id},
            headers=self.auth,
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def failing(self, error_workflow_id: str | None, path: str = "/echo/bad") -> str:
        self.standin.add_fault(path, status=400, count=100)
        return await self.watched("Orders to ERP", self.call("post_order", path), error_workflow_id)

    async def runs(self, workflow_id: str) -> list[dict[str, Any]]:
        r = await self.client.get(
            "/api/executions", params={"workflow_id": workflow_id}, headers=self.auth
        )
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    def slack_texts(self) -> list[str]:
        return [r["body"]["text"] for r in self.standin.requests(kind="slack_webhook")]


@pytest.fixture
async def api(
    client: httpx.AsyncClient, auth: dict[str, str], clean_standin: StandinServer
) -> Alerts:
    return Alerts(client, auth, clean_standin)


async def settled_alert(api: Alerts, error_workflow_id: str) -> dict[str, Any]:
    async def one() -> bool:
        runs = await api.runs(error_workflow_id)
        return len(runs) == 1

    await wait_for(one, what="one alert execution")
    [run] = await api.runs(error_workflow_id)
    return await api.settled(run["id"])


class TestAFailureRunsTheErrorWorkflow:
    async def test_the_alert_reaches_slack_with_the_failure(
        self, api: Alerts, worker: Worker
    ) -> None:
        target = await api.error_workflow()
        wf = await api.failing(target)
        failed = await api.settled(await api.fire(wf))
        assert failed["status"] == "failed"
        alert = await settled_alert(api, target)
        assert alert["status"] == "succeeded"
        assert api.slack_texts() == ["Orders to ERP failed: post_order 400"]
        body = alert["trigger"]["body"]
        assert alert["trigger"]["type"] == "error"
        assert body["execution"] | {"created_at": None, "started_at": None} == {
            "id": failed["id"],
            "status": "failed",
            "error": failed["error"],
            "attempt": 1,
            "trigger_type": "webhook",
            "created_at": None,
            "started_at": None,
            "finished_at": body["execution"]["finished_at"],
            "api_path": f"/api/executions/{failed['id']}",
            "console_path": f"/executions/{failed['id']}",
            # Absolute only where IPAAS_PUBLIC_URL says where the server is (below).
            "api_url": None,
            "console_url": None,
        }
        assert body["execution"]["finished_at"] is not None
        assert body["workflow"] == {"id": wf, "name": "Orders to ERP", "version": 1}
        assert body["failed_step"] | {"error": None} == {
            "id": "post_order",
            "type": "http_request",
            "attempt": 1,
            "error": None,
            "error_code": None,
            "status_code": 400,
        }
        assert "400" in body["failed_step"]["error"]

    async def test_with_a_public_url_the_alert_links_the_failure(
        self, api: Alerts, runtime: Runtime, worker: Worker
    ) -> None:
        runtime.settings.public_url = "https://ipaas.example.com"
        target = await api.error_workflow(
            "{{ trigger.body.workflow.name }} failed: {{ trigger.body.execution.console_url }}"
        )
        failed = await api.settled(await api.fire(await api.failing(target)))
        alert = await settled_alert(api, target)
        link = f"https://ipaas.example.com/executions/{failed['id']}"
        assert api.slack_texts() == [f"Orders to ERP failed: {link}"]
        execution = alert["trigger"]["body"]["execution"]
        assert execution["console_url"] == link
        assert execution["api_url"] == f"https://ipaas.example.com/api/executions/{failed['id']}"

    async def test_a_timeout_alerts_too(
        self, api: Alerts, runtime: Runtime, worker: Worker
    ) -> None:
        runtime.settings.execution_timeout_s = 0.3
        target = await api.error_workflow()
        api.standin.add_fault("/echo/slow", delay_s=5, count=100)
        wf = await api.watched("Slow", api.call("wait", "/echo/slow"), target)
        failed = await api.settled(await api.fire(wf))
        assert failed["status"] == "timed_out"
        alert = await settled_alert(api, target)
        assert alert["trigger"]["body"]["execution"]["status"] == "timed_out"
        # The failed step's error is null for a timeout: nothing, not Python's "None".
        assert api.slack_texts() == ["Slow timed_out: wait "]

    async def test_success_and_cancel_alert_nobody(
        self, api: Alerts, runtime: Runtime, worker: Worker
    ) -> None:
        target = await api.error_workflow()
        fine = await api.watched("Fine", api.call("ok", "/echo/ok"), target)
        ok = await api.settled(await api.fire(fine))
        assert ok["status"] == "succeeded"
        api.standin.add_fault("/echo/slow", delay_s=5, count=100)
        slow = await api.watched("Slow", api.call("wait", "/echo/slow"), target)
        running = await api.fire(slow)

        async def started() -> bool:
            return (await api.execution(running))["status"] == "running"

        await wait_for(started, what="the slow execution running")
        r = await api.client.post(f"/api/executions/{running}/cancel", headers=api.auth)
        assert r.status_code == 200, r.text
        assert (await api.settled(running))["status"] == "cancelled"
        await alert_pass(runtime)
        assert await api.runs(target) == []

    async def test_an_alert_that_fails_alerts_nobody(
        self, api: Alerts, runtime: Runtime, worker: Worker
    ) -> None:
        """A's error workflow B fails and names A: one run each, no loop."""
        api.standin.add_fault("/services/", status=404, count=100)  # Slack: no_service
        b = await api.error_workflow()
        a = await api.failing(b)
        r = await api.client.patch(
            f"/api/workflows/{b}", json={"error_workflow_id": a}, headers=api.auth
        )
        assert r.status_code == 200, r.text
        await api.settled(await api.fire(a))
        alert = await settled_alert(api, b)
        assert alert["status"] == "failed"
        for _ in range(3):
            await alert_pass(runtime)
        assert len(await api.runs(a)) == 1
        assert len(await api.runs(b)) == 1

    async def test_a_paused_error_workflow_is_skipped_and_logged(
        self,
        api: Alerts,
        runtime: Runtime,
        worker: Worker,
        logs: list[MutableMapping[str, Any]],
    ) -> None:
        target = await api.error_workflow(active=False)
        wf = await api.failing(target)
        failed = await api.settled(await api.fire(wf))

        async def logged() -> bool:
            return any(e["event"] == "failure_alert_skipped" for e in logs)

        await wait_for(logged, what="failure_alert_skipped")
        [line] = [e for e in logs if e["event"] == "failure_alert_skipped"]
        assert (line["reason"], line["failed_execution_id"]) == (
            "error_workflow_inactive",
            failed["id"],
        )
        assert await runtime.store.pending_alerts(limit=10) == []  # settled, not retried
        assert await api.runs(target) == []

    async def test_a_failure_recorded_before_a_crash_alerts_after_it(
        self, api: Alerts, runtime: Runtime
    ) -> None:
        """The failure is marked by the write that records it: a process that died before
        its alert pass leaves it to the next pass, in whatever process."""
        target = await api.error_workflow()
        wf = await api.failing(target)
        execution_id = await api.fire(wf)
        # A worker without its background loops (no alert pass): it runs and stops.
        await Worker(runtime).run_until_empty()
        assert (await api.execution(execution_id))["status"] == "failed"
        assert await api.runs(target) == []
        assert await alert_pass(runtime) == 1
        assert await alert_pass(runtime) == 0
        [run] = await api.runs(target)
        assert run["status"] == "queued"


DIGEST_TEXT = (
    "{{ trigger.body.workflow.name }}: {{ trigger.body.failures.count }} failure(s) since "
    "{{ trigger.body.failures.since or 'the last alert' }}, latest {{ trigger.body.execution.id }}"
)


class TestPacing:
    """A destination that is down fails every execution: its channel gets the first failure
    at once, then one digest an interval, not a message per failure."""

    async def fail(self, api: Alerts, runtime: Runtime, wf: str, n: int) -> list[str]:
        """Fire ``n`` webhooks that fail, one after another: each finishes before the next
        is fired, so the last id is the latest failure (run at once, they could finish in
        any order)."""
        ids = []
        for _ in range(n):
            ids.append(await api.fire(wf))
            await Worker(runtime).run_until_empty()
        return ids

    async def test_a_storm_makes_one_alert_then_one_digest_with_the_count(
        self, api: Alerts, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        target = await api.error_workflow(text=DIGEST_TEXT)
        wf = await api.failing(target)
        [first] = await self.fail(api, runtime, wf, 1)
        assert await alert_pass(runtime) == 1
        rest = await self.fail(api, runtime, wf, 4)
        assert [await alert_pass(runtime) for _ in range(3)] == [0, 0, 0]  # held
        start = utcnow()
        monkeypatch.setattr(alerts, "utcnow", lambda: start + timedelta(seconds=59))
        assert await alert_pass(runtime) == 0
        monkeypatch.setattr(alerts, "utcnow", lambda: start + timedelta(seconds=61))
        assert await alert_pass(runtime) == 1
        assert await alert_pass(runtime) == 0
        await Worker(runtime).run_until_empty()
        [digest, alert] = await api.runs(target)  # newest first
        assert (alert["status"], digest["status"]) == ("succeeded", "succeeded")
        texts = api.slack_texts()
        assert texts[0] == f"Orders to ERP: 1 failure(s) since the last alert, latest {first}"
        body = (await api.execution(digest["id"]))["trigger"]["body"]
        assert body["execution"]["id"] == rest[-1]
        assert body["failures"]["count"] == 4
        assert texts[1] == (
            f"Orders to ERP: 4 failure(s) since {body['failures']['since']}, latest {rest[-1]}"
        )
        assert len(texts) == 2

    async def test_each_workflow_is_paced_on_its_own(self, api: Alerts, runtime: Runtime) -> None:
        target = await api.error_workflow()
        erp = await api.failing(target)
        crm = await api.watched("Leads to CRM", api.call("post_lead", "/echo/bad"), target)
        for wf in (erp, crm, erp, crm):
            await self.fail(api, runtime, wf, 1)
        assert await alert_pass(runtime) == 2
        windows = await runtime.store.due_alert_digests(
            last_before=utcnow() + timedelta(days=1), limit=10
        )
        assert sorted((w.workflow_id, w.held) for w in windows) == sorted([(erp, 1), (crm, 1)])

    async def test_a_digest_for_an_error_workflow_paused_since_is_dropped_and_logged(
        self,
        api: Alerts,
        runtime: Runtime,
        monkeypatch: pytest.MonkeyPatch,
        logs: list[MutableMapping[str, Any]],
    ) -> None:
        target = await api.error_workflow()
        wf = await api.failing(target)
        await self.fail(api, runtime, wf, 3)
        assert await alert_pass(runtime) == 1
        r = await api.client.patch(
            f"/api/workflows/{target}", json={"active": False}, headers=api.auth
        )
        assert r.status_code == 200, r.text
        later = utcnow() + timedelta(seconds=61)
        monkeypatch.setattr(alerts, "utcnow", lambda: later)
        assert await alert_pass(runtime) == 0
        [line] = [e for e in logs if e["event"] == "failure_alert_skipped"]
        assert (line["reason"], line["failures"]) == ("error_workflow_inactive", 2)
        assert await runtime.store.due_alert_digests(last_before=later, limit=10) == []
        assert len(await api.runs(target)) == 1


async def test_an_alert_that_cannot_be_built_is_logged_and_settled_without_one(
    api: Alerts,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    logs: list[MutableMapping[str, Any]],
) -> None:
    """A bug in building one alert must not hold back every later one."""
    target = await api.error_workflow()
    wf = await api.failing(target)
    failed = await api.fire(wf)
    await Worker(runtime).run_until_empty()

    async def broken(*_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(runtime.store, "list_step_runs", broken)
    assert await alert_pass(runtime) == 0
    [line] = [e for e in logs if e["event"] == "failure_alert_failed"]
    assert line["failed_execution_id"] == failed
    assert await runtime.store.pending_alerts(limit=10) == []
    assert await api.runs(target) == []


async def test_a_pass_settles_a_bounded_number_of_batches(
    api: Alerts, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storm of failures is worked off over passes (a second apart), never in one loop
    that holds the event loop."""
    monkeypatch.setattr(alerts, "ALERT_BATCH", 2)
    monkeypatch.setattr(alerts, "MAX_BATCHES", 3)
    runtime.settings.alert_interval_s = 0  # one alert per failure
    target = await api.error_workflow()
    wf = await api.failing(target)
    for _ in range(10):
        await api.fire(wf)
    await Worker(runtime).run_until_empty()
    assert [await alert_pass(runtime) for _ in range(3)] == [6, 4, 0]
    assert len(await api.runs(target)) == 10


async def test_a_pass_reads_each_workflow_once(
    api: Alerts, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten failures of one workflow: it and its error workflow are read once, not ten
    times each."""
    runtime.settings.alert_interval_s = 0  # one alert per failure
    target = await api.error_workflow()
    wf = await api.failing(target)
    for _ in range(10):
        await api.fire(wf)
    await Worker(runtime).run_until_empty()
    reads: list[str] = []
    get_workflow = runtime.store.get_workflow

    async def counted(tenant_id: str, workflow_id: str) -> Any:
        reads.append(workflow_id)
        return await get_workflow(tenant_id, workflow_id)

    monkeypatch.setattr(runtime.store, "get_workflow", counted)
    assert await alert_pass(runtime) == 10
    assert sorted(reads) == sorted([wf, target])


class TestTheSetting:
    async def test_read_patched_cleared_and_no_new_version(self, api: Alerts) -> None:
        target = await api.error_workflow()
        wf = await api.failing(None)
        r = await api.client.get(f"/api/workflows/{wf}", headers=api.auth)
        assert r.json()["error_workflow_id"] is None
        r = await api.client.patch(
            f"/api/workflows/{wf}", json={"error_workflow_id": target}, headers=api.auth
        )
        assert (r.json()["error_workflow_id"], r.json()["version"]) == (target, 1)
        r = await api.client.patch(f"/api/workflows/{wf}", json={"name": "x"}, headers=api.auth)
        assert r.json()["error_workflow_id"] == target  # left out: kept
        r = await api.client.patch(
            f"/api/workflows/{wf}", json={"error_workflow_id": None}, headers=api.auth
        )
        assert r.json()["error_workflow_id"] is None
        whole = {k: r.json()[k] for k in ("name", "steps")} | {"error_workflow_id": target}
        r = await api.client.put(f"/api/workflows/{wf}", json=whole, headers=api.auth)
        assert r.json()["error_workflow_id"] == target
        del whole["error_workflow_id"]
        r = await api.client.put(f"/api/workflows/{wf}", json=whole, headers=api.auth)
        assert r.json()["error_workflow_id"] is None  # PUT replaces the whole workflow

    @pytest.mark.parametrize(
        ("value", "kind"),
        [("wf_nope", "workflow_not_found"), ("self", "value_error"), ("", "string_too_short")],
    )
    async def test_refused_and_nothing_changed(self, api: Alerts, value: str, kind: str) -> None:
        wf = await api.failing(None)
        value = wf if value == "self" else value
        r = await api.client.patch(
            f"/api/workflows/{wf}", json={"error_workflow_id": value}, headers=api.auth
        )
        assert r.status_code == 422, r.text
        [detail] = r.json()["error"]["details"]
        assert (detail["loc"], detail["type"]) == (["body", "error_workflow_id"], kind)
        r = await api.client.get(f"/api/workflows/{wf}", headers=api.auth)
        assert (r.json()["error_workflow_id"], r.json()["version"]) == (None, 1)

    async def test_on_create_an_unknown_id_is_refused(self, api: Alerts) -> None:
        r = await api.client.post(
            "/api/workflows",
            json={"name": "w", "steps": [api.call("s", "/echo")], "error_workflow_id": "wf_x"},
            headers=api.auth,
        )
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"][0]["loc"] == ["body", "error_workflow_id"]
        r = await api.client.get("/api/workflows", headers=api.auth)
        assert r.json() == []

    async def test_reported_beside_the_steps_errors(self, api: Alerts) -> None:
        step = {"id": "s", "type": "http_request", "config": {"method": "TELEPORT"}}
        r = await api.client.post(
            "/api/workflows",
            json={"name": "w", "steps": [step], "error_workflow_id": "wf_x"},
            headers=api.auth,
        )
        assert r.status_code == 422, r.text
        locs = [d["loc"] for d in r.json()["error"]["details"]]
        assert locs[0] == ["body", "error_workflow_id"]
        assert any(loc[:3] == ["body", "steps", 0] for loc in locs[1:]), locs

    async def test_another_tenants_workflow_is_not_found(
        self, api: Alerts, client: httpx.AsyncClient
    ) -> None:
        other = await signup(client, "grace@example.com")
        other.pop("tenant_id", None)
        theirs = await Alerts(client, other, api.standin).error_workflow()
        wf = await api.failing(None)
        r = await api.client.patch(
            f"/api/workflows/{wf}", json={"error_workflow_id": theirs}, headers=api.auth
        )
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"][0]["type"] == "workflow_not_found"


class TestDeletingAnErrorWorkflow:
    async def test_refused_while_a_workflow_names_it_then_allowed(self, api: Alerts) -> None:
        target = await api.error_workflow()
        wf = await api.failing(target)
        refused = await api.client.delete(f"/api/workflows/{target}", headers=api.auth)
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "workflow_in_use"
        assert f"'Orders to ERP' ({wf})" in error["message"]
        assert error["details"] == {"workflows": [{"id": wf, "name": "Orders to ERP"}]}
        assert (await api.client.get(f"/api/workflows/{target}", headers=api.auth)).is_success
        r = await api.client.patch(
            f"/api/workflows/{wf}", json={"error_workflow_id": None}, headers=api.auth
        )
        assert r.status_code == 200, r.text
        gone = await api.client.delete(f"/api/workflows/{target}", headers=api.auth)
        assert gone.status_code == 204, gone.text
