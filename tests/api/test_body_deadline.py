"""The body read deadline (``api/body_deadline.py``) and what the routed API answers for a
body refused while it streams in. Through real sockets: tests/process/test_serving.py."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from ipaas.api.app import create_app
from ipaas.api.body_deadline import BodyDeadline
from ipaas.api.middleware import limited_receive
from ipaas.config import Settings
from ipaas.errors import PayloadTooLarge, RequestTimeout
from ipaas.runtime import Runtime
from ipaas.stores.memory import MemoryStore

TIMEOUT_S = 0.2
SWEEP_S = 0.05


def _deadline() -> BodyDeadline:
    return BodyDeadline(TIMEOUT_S, sweep_every_s=SWEEP_S)


async def _never() -> dict[str, object]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_a_read_past_its_deadline_ends_in_408() -> None:
    deadline = _deadline()
    started = time.monotonic()
    with pytest.raises(RequestTimeout) as raised:
        await deadline.receive(_never, started)
    took = time.monotonic() - started
    assert TIMEOUT_S <= took < TIMEOUT_S + SWEEP_S + 0.2
    assert raised.value.status_code == 408
    assert raised.value.headers == {"Connection": "close"}
    await asyncio.sleep(2 * SWEEP_S)
    assert deadline._sweeper is None  # nothing left to watch: no task left running
    assert not deadline._reading
    assert not deadline._expired


async def test_the_deadline_counts_from_the_bodys_first_read() -> None:
    """Each read of one body gets what is left of the same deadline, not a new one."""
    deadline = _deadline()
    started = time.monotonic() - TIMEOUT_S  # the body began a deadline ago
    with pytest.raises(RequestTimeout):
        await asyncio.wait_for(deadline.receive(_never, started), TIMEOUT_S)


async def test_someone_elses_cancel_stays_a_cancel() -> None:
    deadline = _deadline()
    reading = asyncio.create_task(deadline.receive(_never, time.monotonic()))
    await asyncio.sleep(SWEEP_S / 2)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert not deadline._reading


async def test_a_cancel_beside_the_deadlines_own_stays_a_cancel() -> None:
    """The sweep and a shutdown cancel the same read before it sees either: the shutdown's
    wins. (The shutdown's cancel comes in the sweep's own step: a test that polled for the
    sweep and then cancelled lost the race on a busy machine, the read already over.)"""
    deadline = _deadline()
    swept: list[asyncio.Task[Any]] = []

    class ShutdownToo(set[asyncio.Task[Any]]):
        def add(self, task: asyncio.Task[Any]) -> None:
            super().add(task)
            swept.append(task)
            task.cancel()

    deadline._expired = ShutdownToo()
    reading = asyncio.create_task(deadline.receive(_never, time.monotonic() - TIMEOUT_S))
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert swept == [reading]
    assert not deadline._expired


async def test_reads_in_time_pass_and_a_whole_body_waits_as_long_as_it_likes() -> None:
    """After the last chunk, a read waits for the client's disconnect (Starlette's
    streaming responses do): not a body read, so not bounded."""
    messages = [
        {"type": "http.request", "body": b"a", "more_body": True},
        {"type": "http.request", "body": b"b", "more_body": False},
    ]

    async def receive() -> dict[str, object]:
        if messages:
            await asyncio.sleep(TIMEOUT_S / 4)
            return messages.pop(0)
        await asyncio.sleep(TIMEOUT_S + 3 * SWEEP_S)
        return {"type": "http.disconnect"}

    limited = limited_receive(receive, 100, _deadline())
    assert (await limited())["body"] == b"a"
    assert (await limited())["body"] == b"b"
    assert (await limited())["type"] == "http.disconnect"


class _ServerReceive:
    """A server's ``receive`` (granian's hands out a future, not a coroutine)."""

    def __init__(self, messages: list[dict[str, object]]) -> None:
        self.messages = messages

    def __call__(self) -> asyncio.Future[dict[str, object]]:
        future: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        if self.messages:
            future.set_result(self.messages.pop(0))
        return future  # never done once the messages run out: a client gone quiet


@pytest.mark.parametrize("refusal", ["deadline", "size"])
async def test_a_refused_body_lets_go_of_the_servers_receive(refusal: str) -> None:
    """The refusal's traceback outlives the request (FastAPI re-raises it from a frame that
    holds it, a cycle only the cyclic GC frees), and granian kept the connection open, the
    408 sent, for as long as its receive was held: until the client had sent its whole
    body (found by hand). What reads on after the refusal hears a disconnect."""
    chunk = {"type": "http.request", "body": b"x" * 60, "more_body": True}
    server_receive = _ServerReceive([chunk] * (1 if refusal == "deadline" else 2))
    held = weakref.ref(server_receive)
    limited = limited_receive(server_receive, 100, _deadline())
    del server_receive
    assert (await limited())["body"] == chunk["body"]
    with pytest.raises((RequestTimeout, PayloadTooLarge)) as raised:
        await limited()
    assert raised.value.headers == {"Connection": "close"}
    assert raised.value.__traceback__ is not None  # kept, as FastAPI keeps it
    assert held() is None
    assert (await limited()) == {"type": "http.disconnect"}


async def _chunks(count: int, size: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"x" * size


@pytest.fixture
async def small_bodies(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings.model_copy(update={"max_body_bytes": 1000})
    app = create_app(runtime=Runtime.build(settings, store=MemoryStore()), workers=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.mark.parametrize("path", ["/api/auth/signup", "/api/webhooks/wf_x"])
async def test_a_chunked_body_over_the_cap_is_413_on_every_route(
    small_bodies: httpx.AsyncClient, path: str
) -> None:
    """A body without a ``Content-Length`` that streams past ``IPAAS_MAX_BODY_BYTES`` on a
    routed API route was answered 400 "There was an error parsing the body" (FastAPI wraps
    what a body read raises), where the intake's fast path said 413 (found by hand)."""
    response = await small_bodies.post(
        path, content=_chunks(10, 500), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    assert response.headers["connection"] == "close"


async def test_the_consoles_error_page_keeps_the_errors_headers(
    small_bodies: httpx.AsyncClient,
) -> None:
    """The console answers an error as a page: it dropped the error's own headers, so the
    413 of a form refused part-way did not say ``Connection: close`` (nor would a console
    503 have said ``Retry-After``)."""
    response = await small_bodies.post(
        "/login",
        content=_chunks(10, 500),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["connection"] == "close"
