"""Generic endpoints: ``/echo`` (any method; answers what it received; ``?pad=N`` adds N
bytes to the answer; ``?as_text=1`` answers the body it received as it came, as text) and
``/slow``."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.standins.routing import recorded, retry_after_header
from tests.standins.state import StandinState, parse_body

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
#: A ``/slow`` call never sleeps longer, so a forgotten one cannot hold a test run.
MAX_SLOW_S = 300.0
#: The most ``/echo?pad=N`` adds to its answer.
MAX_PAD_BYTES = 16 * 1024 * 1024
#: How often a sleeping ``/slow`` call checks whether the server is stopping.
_CLOSING_POLL_S = 0.05


def _echo(request: Request, body: bytes, status: int = 200) -> Response:
    if request.query_params.get("as_text"):
        return Response(body, status, media_type="text/plain; charset=utf-8")
    query: dict[str, Any] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        query[key] = values[0] if len(values) == 1 else values
    form = None
    if "application/x-www-form-urlencoded" in request.headers.get("content-type", ""):
        form = {k: v[0] if len(v) == 1 else v for k, v in parse_qs(body.decode()).items()}
    content = {
        "method": request.method,
        "path": request.url.path,
        "query": query,
        "headers": dict(request.headers.items()),
        "body": body.decode("utf-8", "replace"),
        "json": parse_body(body) if "json" in request.headers.get("content-type", "") else None,
        "form": form,
    }
    with contextlib.suppress(ValueError):
        if pad := min(int(request.query_params.get("pad", "0")), MAX_PAD_BYTES):
            content["pad"] = "x" * pad
    if request.method == "HEAD":
        return Response(status_code=status, headers={"x-echo-method": "HEAD"})
    return JSONResponse(content, status)


def _echo_forced(request: Request, body: bytes, status: int, retry_after: float | None) -> Response:
    response = _echo(request, body, status)
    if status in (429, 503):
        response.headers.update(retry_after_header(retry_after))
    return response


class Slow:
    """``/slow?seconds=N[&id=X]``: answers after N seconds, recording when it started, when
    it saw the client disconnect (ASGI ``http.disconnect``) and when it completed, so a test
    can measure cancel latency from the server's side (``GET /_standin/slow``)."""

    def __init__(self, state: StandinState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        call_id = request.query_params.get("id") or uuid.uuid4().hex
        try:
            seconds = min(float(request.query_params.get("seconds", "1")), MAX_SLOW_S)
        except ValueError:
            seconds = 1.0
        self.state.slow_event(call_id, "started", seconds=seconds, path=request.url.path)
        received_at, received_monotonic = time.time(), time.monotonic()
        body = await request.body()
        self.state.record(
            kind="slow",
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers=dict(request.headers.items()),
            body=body,
            status=200,
            received_at=received_at,
            received_monotonic=received_monotonic,
        )
        # With the body read, the next ASGI message is the client going away.
        disconnect = asyncio.ensure_future(receive())
        sleep = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait([disconnect, sleep], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (disconnect, sleep):
                task.cancel()
        if disconnect.done() and not disconnect.cancelled():
            self.state.slow_event(call_id, "disconnected")
            return
        self.state.slow_event(call_id, "completed")
        response = JSONResponse({"id": call_id, "slept_s": seconds})
        with contextlib.suppress(OSError):  # the client left just now
            await response(scope, receive, send)

    async def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.state.closing.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, _CLOSING_POLL_S))


def _plain_forced(
    request: Request, body: bytes, status: int, retry_after: float | None
) -> Response:
    return PlainTextResponse(f"forced {status}", status)


def routes(state: StandinState) -> list[Route]:
    async def echo(request: Request, body: bytes) -> Response:
        return _echo(request, body)

    return [
        recorded(state, "echo", "/echo", echo, _echo_forced, ALL_METHODS),
        recorded(state, "echo", "/echo/{rest:path}", echo, _echo_forced, ALL_METHODS),
        Route("/slow", Slow(state), methods=["GET", "POST"]),
    ]


def fallback_route(state: StandinState) -> Route:
    """Records requests to unknown paths too (``kind="unknown"``), so a test that hit the
    wrong URL can see it; must come last."""

    async def not_found(request: Request, body: bytes) -> Response:
        return PlainTextResponse("Not Found", 404)

    return recorded(state, "unknown", "/{path:path}", not_found, _plain_forced, ALL_METHODS)
