"""Pure ASGI middlewares (cheaper than BaseHTTPMiddleware on the intake path)."""

from __future__ import annotations

import time
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ipaas.api.body_deadline import BodyDeadline
from ipaas.api.errors import ipaas_error_response
from ipaas.errors import PayloadTooLarge, RequestTimeout
from ipaas.kit.ids import new_id

_log = structlog.get_logger("ipaas.access")


def declared_too_large(scope: Scope, max_bytes: int) -> bool:
    """The request's ``Content-Length`` says more than ``max_bytes``."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value) > max_bytes
            except ValueError:
                return False
    return False


def body_too_large(max_bytes: int) -> PayloadTooLarge:
    """The 413 of a body over ``max_bytes``, as declared or once streamed past it: the rest
    of it is never read, so the connection cannot serve another request."""
    return PayloadTooLarge(f"Body exceeds {max_bytes} bytes", headers={"Connection": "close"})


def limited_receive(
    receive: Receive, max_bytes: int, deadline: BodyDeadline | None = None
) -> Receive:
    """``receive`` that raises ``PayloadTooLarge`` once the body passes ``max_bytes``, and
    ``RequestTimeout`` when the body is not all in within ``deadline`` of its first read
    (once it is, reads wait for a disconnect as long as the app likes)."""
    received = 0
    started: float | None = None
    whole = deadline is None

    async def limited() -> Message:
        nonlocal receive, received, started, whole
        try:
            if whole:
                message = await receive()
            else:
                assert deadline is not None
                if started is None:
                    started = time.monotonic()
                message = await deadline.receive(receive, started)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise body_too_large(max_bytes)
                whole = whole or not message.get("more_body", False)
        except (PayloadTooLarge, RequestTimeout):
            # The body is refused: what reads on hears a disconnect. And the server's own
            # receive is let go of: the error's traceback keeps this closure alive until the
            # cyclic GC runs (FastAPI re-raises it from a frame that holds it), and granian
            # kept the connection open for as long as its receive was (measured: until the
            # client had sent its whole body, 18 s after the 408).
            receive = _disconnected
            raise
        return message

    return limited


async def _disconnected() -> Message:
    return {"type": "http.disconnect"}


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` while they stream in, not after buffering them."""

    def __init__(self, app: ASGIApp, max_bytes: int, deadline: BodyDeadline | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.deadline = deadline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if declared_too_large(scope, self.max_bytes):
            # Refused before the app runs, so rendered here, by the same function.
            response = ipaas_error_response(body_too_large(self.max_bytes))
            await response(scope, receive, send)
            return
        await self.app(scope, limited_receive(receive, self.max_bytes, self.deadline), send)


def request_id(scope: Scope) -> str:
    """The caller's ``X-Request-ID`` (at most 64 characters), else a new id."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            given: str = value.decode("latin-1")[:64]
            if given:
                return given
            break
    return new_id("req")


def log_request(scope: Scope, status: int, started: float, **fields: Any) -> None:
    """The access log line of one request (``fields``: what it made, e.g. an execution).
    ``client`` is the peer's address, or the one a trusted proxy forwarded."""
    client = scope.get("client")
    _log.info(
        "request",
        method=scope["method"],
        path=scope["path"],
        status=status,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
        client=client[0] if client else None,
        **fields,
    )


class RequestIdMiddleware:
    """Every request gets an id (or keeps the caller's ``X-Request-ID``), in logs and reply."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        header = (b"x-request-id", rid.encode("latin-1"))
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            # tenant_id joins the context once a bearer token is authenticated.
            log_request(scope, status, started)
            structlog.contextvars.clear_contextvars()
