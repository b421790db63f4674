from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from ipaas.api.app import create_app
from ipaas.config import Settings
from ipaas.executions.models import ExecutionStatus
from ipaas.runtime import Runtime
from ipaas.stores.memory import MemoryStore
from tests.conftest import signup
from tests.webhooks.conftest import executions_of

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

    @pytest.mark.parametrize(
        "body",
        [
            b'{"a": NaN}',
            b'{"a": "\\ud800"}',
            b"[" * 5000 + b"]" * 5000,  # was a RecursionError: a 500
        ],
        ids=["nan", "lone-surrogate", "deep"],
    )
    async def test_json_no_store_can_hold_is_422_and_persists_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str, body: bytes
    ) -> None:
        # json.loads took these; storing or answering them failed later (500s).
        response = await client.post(
            f"/api/webhooks/{workflow_id}",
            content=body,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_json"
        assert error["message"].startswith("Body is not valid JSON: ")
        assert runtime.store.executions == {}  # type: ignore[attr-defined]

    async def test_large_integers_are_kept_exactly(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        response = await client.post(
            f"/api/webhooks/{workflow_id}",
            content=b'{"id": 36893488147419103232}',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 202
        stored = runtime.store.executions[response.json()["execution_id"]]  # type: ignore[attr-defined]
        assert stored.trigger.body == {"id": 36893488147419103232}

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


class TestFastPath:
    """The intake is answered ahead of FastAPI's middleware (``IntakeFastPath``): what those
    layers did for every route, it must do for this one."""

    async def test_request_id_on_answers_and_refusals(
        self, client: httpx.AsyncClient, workflow_id: str
    ) -> None:
        accepted = await client.post(f"/api/webhooks/{workflow_id}", json={})
        assert accepted.status_code == 202
        assert accepted.headers["x-request-id"].startswith("req_")
        assert accepted.headers["content-type"] == "application/json"
        refused = await client.post(
            "/api/webhooks/wf_nope", json={}, headers={"X-Request-ID": "trace-me"}
        )
        assert refused.status_code == 404
        assert refused.headers["x-request-id"] == "trace-me"
        assert refused.json()["error"]["code"] == "workflow_not_found"

    async def test_an_unexpected_error_is_a_json_500(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        async def broken(*_: object, **__: object) -> None:
            raise RuntimeError("boom")

        runtime.store.create_execution = broken  # type: ignore[method-assign]
        response = await client.post(f"/api/webhooks/{workflow_id}", json={})
        assert response.status_code == 500
        assert response.json() == {
            "error": {"code": "internal_error", "message": "Internal server error"}
        }
        assert response.headers["x-request-id"].startswith("req_")

    async def test_the_access_log_names_the_request(
        self, settings: Settings, capsys: pytest.CaptureFixture[str]
    ) -> None:
        settings = settings.model_copy(
            update={
                "log_format": "json",
                "log_level": "info",
                "cors_origins": ["https://console.example.com"],
            }
        )
        async with _client(Runtime.build(settings, store=MemoryStore())) as client:
            url, tenant_id = await _webhook_url(client)
            capsys.readouterr()
            accepted = await client.post(url, json={}, headers={"X-Request-ID": "r1"})
            refused = await client.post(
                url, content=b"{", headers={"Content-Type": "application/json"}
            )
            unknown = await client.post("/api/webhooks/wf_nope", json={})
            # With an Origin (and CORS on) the app's routes answer: the same line.
            routed = await client.post(
                url, json={}, headers={"Origin": "https://console.example.com"}
            )
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if "{" in line]
        access = [line for line in lines if line.get("event") == "request"]
        assert access[0] == {
            "event": "request",
            "request_id": "r1",
            # Whose webhook it was and what it made: the line joins the execution's own.
            "tenant_id": tenant_id,
            "execution_id": accepted.json()["execution_id"],
            "method": "POST",
            "path": url,
            "status": 202,
            "client": "127.0.0.1",  # the ASGI client's peer (tests/api/test_proxies.py)
            "duration_ms": access[0]["duration_ms"],
            "level": "info",
            "timestamp": access[0]["timestamp"],
        }
        # A refusal names the tenant once the workflow is known, and made nothing.
        assert refused.status_code == 422
        assert (access[1]["status"], access[1]["tenant_id"]) == (422, tenant_id)
        assert "execution_id" not in access[1]
        assert unknown.status_code == 404
        assert access[2]["status"] == 404
        assert "tenant_id" not in access[2]
        assert "execution_id" not in access[2]
        assert routed.headers["access-control-allow-origin"] == "https://console.example.com"
        assert (access[3]["status"], access[3]["tenant_id"]) == (202, tenant_id)
        assert access[3]["execution_id"] == routed.json()["execution_id"]
        assert len(access) == 4

    async def test_the_url_with_a_slash_after_it_takes_webhooks(self, runtime: Runtime) -> None:
        """Starlette answered it with a 307, which webhook senders count as a failed
        delivery: a URL pasted with a slash after it lost every event. Now it is the same
        URL, on the fast path and on the routed one (CORS, with an ``Origin``)."""
        runtime.settings.cors_origins = ["https://console.example.com"]
        async with _client(runtime) as client:
            url, _ = await _webhook_url(client)
            plain = await client.post(url + "/", json={"n": 1})
            origin = {"Origin": "https://console.example.com"}
            routed = await client.post(url + "/", json={"n": 2}, headers=origin)
        assert (plain.status_code, routed.status_code) == (202, 202), (plain.text, routed.text)
        assert routed.headers["access-control-allow-origin"] == origin["Origin"]
        made = executions_of(runtime, url.rsplit("/", 1)[1])
        assert sorted(execution.trigger.body["n"] for execution in made) == [1, 2]

    @pytest.mark.parametrize("path", ["/api/webhooks/", "/api/webhooks//", "/api/webhooks/a/b"])
    async def test_other_paths_are_the_apps(self, client: httpx.AsyncClient, path: str) -> None:
        response = await client.post(path, json={})
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"

    async def test_other_methods_are_the_apps(
        self, client: httpx.AsyncClient, workflow_id: str
    ) -> None:
        # GET and HEAD are senders' checks of the URL only (tests/webhooks/test_subscription.py,
        # tests/webhooks/test_url_checks.py).
        for method in ("GET", "PUT"):
            response = await client.request(method, f"/api/webhooks/{workflow_id}")
            assert response.status_code == 405
            assert response.headers["allow"] == "GET, HEAD, OPTIONS, POST"
            assert response.json()["error"]["code"] == "method_not_allowed"

    async def test_cors_requests_get_cors_headers(self, runtime: Runtime) -> None:
        runtime.settings.cors_origins = ["https://console.example.com"]
        async with _client(runtime) as client:
            url, _ = await _webhook_url(client)
            origin = {"Origin": "https://console.example.com"}
            response = await client.post(url, json={}, headers=origin)
            assert response.status_code == 202
            assert response.headers["access-control-allow-origin"] == origin["Origin"]
            assert response.headers["x-request-id"].startswith("req_")
            plain = await client.post(url, json={})
            assert plain.status_code == 202
            assert "access-control-allow-origin" not in plain.headers


@asynccontextmanager
async def _client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime=runtime, workers=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


async def _webhook_url(client: httpx.AsyncClient) -> tuple[str, str]:
    """A new tenant's workflow: its webhook's path, and the tenant's id."""
    auth = await signup(client)
    created = await client.post(
        "/api/workflows",
        json={
            "name": "w",
            "steps": [{"id": "s", "type": "http_request", "config": {"url": "http://x.test"}}],
        },
        headers={"Authorization": auth["Authorization"]},
    )
    return f"/api/webhooks/{created.json()['id']}", auth["tenant_id"]
