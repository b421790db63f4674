"""The stand-ins themselves: controls, duplicate counting, disconnect timing, the CLI."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.standins.server import StandinProcess, StandinServer


@pytest.fixture(scope="module")
def own_standin() -> Iterator[StandinServer]:
    """A stand-in of this module's own. The session's may still receive a call of an
    earlier test's worker, stopped with the call in flight, after this module's reset: the
    counts below took it for their own (a 4th Slack message, once in a clean CI run)."""
    with StandinServer() as server:
        yield server


@pytest.fixture
def clean_standin(own_standin: StandinServer) -> StandinServer:
    own_standin.reset()
    return own_standin


async def test_requests_stats_and_reset(clean_standin: StandinServer) -> None:
    async with httpx.AsyncClient(base_url=clean_standin.url) as client:
        for text in ("a", "b", "a"):
            response = await client.post("/services/T/B/X", json={"text": text})
            assert response.text == "ok"
        assert (await client.post("/services/T/B/X", content=b"{nope")).text == "invalid_payload"

        stats = (await client.get("/_standin/stats")).json()
        assert stats["slack_messages"] == 3
        assert stats["slack_duplicate_texts"] == 1
        assert stats["slack_duplicates"] == {"a": 2}
        assert stats["by_status"] == {"200": 3, "400": 1}
        requests = (await client.get("/_standin/requests?kind=slack_webhook")).json()
        assert [r["body"] for r in requests[:3]] == [{"text": "a"}, {"text": "b"}, {"text": "a"}]
        assert requests[3]["body"] == "{nope"

        assert (await client.post("/_standin/reset")).status_code == 204
        assert (await client.get("/_standin/requests")).json() == []


async def test_fault_counts_down(clean_standin: StandinServer) -> None:
    async with httpx.AsyncClient(base_url=clean_standin.url) as client:
        fault = {"path_prefix": "/api/webhooks/", "status": 503, "count": 2, "retry_after": 3}
        assert (await client.post("/_standin/faults", json=fault)).status_code == 201
        url = clean_standin.discord_webhook_url()
        statuses = [(await client.post(url, json={"content": "x"})).status_code for _ in range(3)]
        assert statuses == [503, 503, 204]
        assert (await client.get("/_standin/faults")).json() == []


async def test_stats_count_requests_in_flight(clean_standin: StandinServer) -> None:
    """A delayed request is in flight from its arrival until it is answered; the durability
    test times its SIGKILL by this."""
    async with httpx.AsyncClient(base_url=clean_standin.url) as client:
        idle = (await client.get("/_standin/stats")).json()
        assert (idle["in_flight"], idle["in_flight_youngest_s"]) == (0, None)
        fault = {"path_prefix": "/services/", "delay_s": 0.5, "count": 1}
        assert (await client.post("/_standin/faults", json=fault)).status_code == 201
        call = asyncio.create_task(client.post("/services/T/B/X", json={"text": "held"}))
        await clean_standin.wait_until(lambda: clean_standin.state.stats()["in_flight"] == 1)
        held = (await client.get("/_standin/stats")).json()
        assert held["slack_messages"] == 0
        assert 0 <= held["in_flight_youngest_s"] < 0.5
        assert (await call).text == "ok"
        done = (await client.get("/_standin/stats")).json()
        assert (done["in_flight"], done["slack_messages"]) == (0, 1)


async def test_slow_records_client_disconnect(clean_standin: StandinServer) -> None:
    async with httpx.AsyncClient() as client:
        call = asyncio.create_task(client.get(f"{clean_standin.url}/slow?seconds=30&id=cancel-me"))
        await clean_standin.wait_until(
            lambda: clean_standin.state.slow_call("cancel-me") is not None
        )
        cancelled_at = time.monotonic()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    await clean_standin.wait_until(
        lambda: (clean_standin.state.slow_call("cancel-me") or {}).get("outcome") == "disconnected"
    )
    seen = clean_standin.state.slow_call("cancel-me")
    assert seen is not None
    assert seen["disconnected_monotonic"] >= cancelled_at
    assert "completed_at" not in seen


async def test_slow_completes(clean_standin: StandinServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{clean_standin.url}/slow?seconds=0.05&id=quick")
    assert response.json() == {"id": "quick", "slept_s": 0.05}
    slow = (await asyncio.to_thread(httpx.get, f"{clean_standin.url}/_standin/slow")).json()
    assert [(c["id"], c["outcome"]) for c in slow] == [("quick", "completed")]


@pytest.mark.process
def test_process_serves_until_terminated() -> None:
    with StandinProcess() as standin:
        assert standin.url.startswith("http://127.0.0.1:")
        response = httpx.post(standin.slack_webhook_url(), json={"text": "from a test"})
        assert response.text == "ok"
        assert standin.stats()["slack_messages"] == 1
        port = standin.port
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/_standin/health")
