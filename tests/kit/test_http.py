from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from ipaas.kit.http import HttpClient
from tests.standins.server import StandinServer, free_port


async def test_timeout_bounds_the_whole_call(
    http_client: HttpClient, clean_standin: StandinServer
) -> None:
    request = http_client.build_request("GET", f"{clean_standin.url}/slow?seconds=5")
    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        await http_client.send(request, timeout_s=0.3)
    assert time.monotonic() - started < 1.5


async def test_refused_connection_is_a_connect_error_not_a_timeout(
    http_client: HttpClient,
) -> None:
    request = http_client.build_request("GET", f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(httpx.ConnectError) as caught:
        await http_client.send(request)
    assert not isinstance(caught.value, httpx.TimeoutException)


async def test_cancelling_closes_the_connection(
    http_client: HttpClient, clean_standin: StandinServer
) -> None:
    request = http_client.build_request("GET", f"{clean_standin.url}/slow?seconds=10&id=c1")
    call = asyncio.create_task(http_client.send(request))
    await clean_standin.wait_until(lambda: clean_standin.state.slow_call("c1") is not None)
    cancelled_at = time.monotonic()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    def disconnected() -> bool:
        seen = clean_standin.state.slow_call("c1")
        return seen is not None and "disconnected_monotonic" in seen

    await clean_standin.wait_until(disconnected)
    seen = clean_standin.state.slow_call("c1")
    assert seen is not None
    # Same machine, so CLOCK_MONOTONIC is shared: the server saw the close within 100 ms.
    assert seen["disconnected_monotonic"] - cancelled_at < 0.1
