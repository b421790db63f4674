from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ipaas.api.app import create_app
from ipaas.config import Settings
from ipaas.engine.worker import Worker
from ipaas.observability.exporter import serve_metrics
from ipaas.observability.metrics import connector_label
from ipaas.runtime import Runtime
from ipaas.stores.memory import MemoryStore
from tests.engine.test_worker import Api, api, worker

__all__ = ["api", "worker"]  # the shared fixtures, re-used here

#: Every metric the issue asks for (families, as the parser names counters: no ``_total``).
FAMILIES = {
    "ipaas_webhooks",
    "ipaas_webhook_duration_seconds",
    "ipaas_webhooks_throttled",
    "ipaas_queue_depth",
    "ipaas_queue_oldest_age_seconds",
    "ipaas_executions_lease_expired",
    "ipaas_executions_finished",
    "ipaas_execution_duration_seconds",
    "ipaas_step_duration_seconds",
    "ipaas_step_retries",
    "ipaas_circuits",
    "ipaas_executions_running",
    "ipaas_reaper_requeued",
    "ipaas_reaper_timed_out",
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


def value(got: dict[Any, float], name: str, **labels: str) -> float:
    return got.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_every_metric_is_exposed(client: httpx.AsyncClient) -> None:
    r = await client.get("/metrics")
    names = {f.name for f in text_string_to_metric_families(r.text)}
    assert names >= FAMILIES


async def test_webhook_to_terminal_status(api: Api, worker: Worker) -> None:
    before = await scrape(api.client)
    cred = await api.slack()
    wf = await api.workflow(
        [{"id": "notify", "type": "slack_message", "credential_id": cred, "config": {"text": "x"}}]
    )
    await api.fire(wf, {"n": 1})
    await api.fire(wf, {"n": 2})
    r = await api.client.post("/api/webhooks/wf_unknown", json={})
    assert r.status_code == 404
    # A fresh app: the store gauges are read at this scrape (nothing cached yet).
    app_gauges = api.client._transport.app.state.metrics_gauges  # type: ignore[attr-defined]
    app_gauges._fresh_until = 0.0
    mid = await scrape(api.client)
    assert value(mid, "ipaas_queue_depth") == 2
    assert value(mid, "ipaas_queue_oldest_age_seconds") >= 0
    await worker.run_until_empty()
    after = await scrape(api.client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("ipaas_webhooks_total", outcome="accepted", status_code="202") == 2
    assert delta("ipaas_webhooks_total", outcome="workflow_not_found", status_code="404") == 1
    assert delta("ipaas_webhook_duration_seconds_count") == 3
    assert delta("ipaas_executions_finished_total", status="succeeded") == 2
    assert delta("ipaas_execution_duration_seconds_count", status="succeeded") == 2
    assert (
        delta("ipaas_step_duration_seconds_count", connector="slack_message", status="succeeded")
        == 2
    )
    assert value(after, "ipaas_executions_running") == 0


async def test_waits_are_not_counted_as_step_attempts(api: Api, worker: Worker) -> None:
    """A run_workflow step waiting for the workflow it started is recorded each time it
    finds that workflow still running: waits, not failed attempts scheduled again."""
    calc = {"id": "calc", "type": "transform", "config": {"value": 1}}
    child = await api.workflow([calc])
    sub = {"id": "sub", "type": "run_workflow", "config": {"workflow_id": child, "wait": True}}
    parent = await api.workflow([sub])
    before = await scrape(api.client)
    execution_id = await api.fire(parent, {})
    for _ in range(100):  # the child runs; the parent waits, then is due again
        await worker.run_until_empty()
        if (await api.execution(execution_id))["status"] == "succeeded":
            break
        await asyncio.sleep(0.05)
    detail = await api.execution(execution_id)
    assert detail["status"] == "succeeded", detail
    assert detail["attempt"] >= 2  # it waited at least once
    after = await scrape(api.client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    run = "run_workflow"
    assert delta("ipaas_step_duration_seconds_count", connector=run, status="succeeded") == 1
    assert delta("ipaas_step_duration_seconds_count", connector=run, status="failed") == 0
    assert delta("ipaas_step_retries_total", connector=run) == 0


def test_step_types_outside_the_registry_share_one_label() -> None:
    # The API refuses unknown types, but a stored version may name one removed since.
    assert connector_label("slack_message") == "slack_message"
    assert connector_label("my_custom_thing") == "unknown"


async def test_throttled_webhooks_are_counted(
    api: Api, runtime: Runtime, client: httpx.AsyncClient
) -> None:
    runtime.settings.queue_max_depth = 1
    wf = await api.workflow([{"id": "s", "type": "http_request", "config": {"url": "http://x"}}])
    before = await scrape(client)
    await api.fire(wf, {})
    r = await client.post(f"/api/webhooks/{wf}", json={})
    assert r.status_code == 503
    after = await scrape(client)
    key = ("ipaas_webhooks_throttled_total", (("reason", "queue_full"),))
    assert after[key] - before.get(key, 0) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_worker_exporter_serves_metrics() -> None:
    port = _free_port()
    stop = asyncio.Event()
    server = asyncio.create_task(serve_metrics(MemoryStore(), "127.0.0.1", port, stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            for _ in range(100):
                try:
                    r = await c.get("/metrics")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.02)
            assert r.status_code == 200
            assert {f.name for f in text_string_to_metric_families(r.text)} >= FAMILIES
            assert (await c.get("/other")).status_code == 404
    finally:
        stop.set()
        await server


async def test_serve_moves_metrics_to_their_own_port(settings: Settings) -> None:
    """The API's port is public (webhooks reach it): with IPAAS_METRICS_PORT, ``ipaas
    serve`` answers ``/metrics`` there, and only there."""
    port = _free_port()
    settings = settings.model_copy(update={"metrics_port": port})
    app = create_app(settings, runtime=Runtime.build(settings, store=MemoryStore()))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ipaas.test") as api:
            moved = await api.get("/metrics")
            assert moved.status_code == 404
            assert moved.json()["error"]["code"] == "not_found"
            assert (await api.get("/healthz")).status_code == 200
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            r = await c.get("/metrics")
            assert r.status_code == 200
            assert {f.name for f in text_string_to_metric_families(r.text)} >= FAMILIES
    with pytest.raises(httpx.ConnectError):  # closed with the app
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            await c.get("/metrics")


async def test_serve_does_not_start_when_its_metrics_port_is_taken(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = settings.model_copy(update={"metrics_port": taken.getsockname()[1]})
        app = create_app(settings, runtime=Runtime.build(settings, store=MemoryStore()))
        with pytest.raises(OSError, match="address already in use"):
            async with app.router.lifespan_context(app):
                pass


async def test_a_failed_start_lets_go_of_the_metrics_port(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(self: Worker) -> None:
        raise RuntimeError("the broker said no")

    monkeypatch.setattr(Worker, "start", refuse)
    port = _free_port()
    settings = settings.model_copy(update={"metrics_port": port})
    app = create_app(settings, runtime=Runtime.build(settings, store=MemoryStore()))
    with pytest.raises(RuntimeError, match="the broker said no"):
        async with app.router.lifespan_context(app):
            pass
    with socket.socket() as again:  # free: the listener was closed
        again.bind(("127.0.0.1", port))
