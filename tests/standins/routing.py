"""How every stand-in endpoint is wrapped: read the body, apply a forced failure (a knob or
an injected fault), answer, and record what came in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.standins.state import StandinState

#: Answers a request with the API's own body for a forced ``status`` (429, 500...).
ErrorResponse = Callable[[Request, bytes, int, "float | None"], Response]
Handler = Callable[[Request, bytes], Awaitable[Response]]

#: Words that, inside a secret part of a URL (webhook token, appid, channel), force a status:
#: connector tests can then reach every failure through the credential alone.
MAGIC_STATUS = {"ratelimited": 429, "error500": 500, "unavailable": 503}
#: Query parameter / header that force a status on any stand-in route.
STATUS_KNOB = "standin_status"
RETRY_AFTER_KNOB = "standin_retry_after"
#: ``Retry-After`` of a forced 429 or 503 without its own.
DEFAULT_RETRY_AFTER_S = 1.0


def magic_status(value: str) -> int | None:
    lowered = value.lower()
    for word, status in MAGIC_STATUS.items():
        if word in lowered:
            return status
    return None


def retry_after_header(seconds: float | None) -> dict[str, str]:
    value = DEFAULT_RETRY_AFTER_S if seconds is None else seconds
    return {"retry-after": str(int(value)) if value == int(value) else str(value)}


def _knob(request: Request, name: str) -> str | None:
    return request.query_params.get(name) or request.headers.get(f"x-{name.replace('_', '-')}")


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def recorded(
    state: StandinState,
    kind: str,
    path: str,
    handler: Handler,
    error: ErrorResponse,
    methods: list[str] | None = None,
) -> Route:
    """A route whose every request is recorded and may be forced to fail."""

    async def endpoint(request: Request) -> Response:
        ticket = state.begin()
        try:
            return await answer(request)
        finally:
            state.end(ticket)

    async def answer(request: Request) -> Response:
        received_at, received_monotonic = time.time(), time.monotonic()
        body = await request.body()
        status = _knob(request, STATUS_KNOB)
        retry_after = _float(_knob(request, RETRY_AFTER_KNOB))
        fault = state.take_fault(request.url.path)
        if fault is not None:
            if fault.delay_s > 0:
                await asyncio.sleep(fault.delay_s)
            if fault.status is not None:
                status, retry_after = str(fault.status), fault.retry_after
        if status is not None and status.isdigit():
            response = error(request, body, int(status), retry_after)
        else:
            response = await handler(request, body)
        state.record(
            kind=kind,
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers=dict(request.headers.items()),
            body=body,
            status=response.status_code,
            received_at=received_at,
            received_monotonic=received_monotonic,
        )
        return response

    return Route(path, endpoint, methods=methods or ["POST"])
