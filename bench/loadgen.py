"""A minimal HTTP/1.1 keep-alive load generator on raw asyncio streams.

httpx tops out at a few hundred requests/s on this machine, which would measure the client
rather than the server. This client sends pre-built request bytes over ``concurrency``
persistent connections and parses only the status line, ``Content-Length`` and the body.

``run(host, port, make_request, total, concurrency)`` sends ``total`` requests
(``make_request(i)`` builds request ``i`` at send time, so it may carry the send time) and
returns one ``Result`` per request, in request order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: Status recorded when the connection failed before a response arrived.
NO_RESPONSE = 0
_HEAD_END = b"\r\n\r\n"
_MAX_HEAD_BYTES = 64 * 1024


@dataclass(slots=True)
class Result:
    status: int
    body: bytes
    #: ``time.time()`` when the request's first byte was written.
    sent_at: float
    latency_s: float
    error: str | None = None

    def json(self) -> object:
        return json.loads(self.body)


def build_request(
    method: str,
    path: str,
    *,
    host: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """The bytes of one HTTP/1.1 request that keeps its connection open."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def json_post(path: str, payload: object, *, host: str) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return build_request(
        "POST", path, host=host, body=body, headers={"Content-Type": "application/json"}
    )


class ProtocolError(Exception):
    pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the server keeps the connection open."""
    head = await reader.readuntil(_HEAD_END)
    if len(head) > _MAX_HEAD_BYTES:
        msg = "response head too large"
        raise ProtocolError(msg)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        msg = f"bad status line {lines[0]!r}"
        raise ProtocolError(msg)
    status = int(parts[1])
    length = 0
    keep_alive = parts[0] == "HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            msg = "chunked responses are not supported"
            raise ProtocolError(msg)
        elif name == "connection":
            keep_alive = value.strip().lower() != "close"
    body = await reader.readexactly(length) if length else b""
    return status, body, keep_alive


async def _connection(
    host: str,
    port: int,
    make_request: Callable[[int], bytes],
    next_index: Callable[[], int | None],
    results: list[Result | None],
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while (index := next_index()) is not None:
            request = make_request(index)
            sent_at, started = time.time(), time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                writer.write(request)
                status, body, keep_alive = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ProtocolError, ValueError) as exc:
                results[index] = Result(
                    NO_RESPONSE, b"", sent_at, time.perf_counter() - started, repr(exc)
                )
                keep_alive = False
            else:
                results[index] = Result(status, body, sent_at, time.perf_counter() - started)
            if not keep_alive and writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def run(
    host: str,
    port: int,
    make_request: Callable[[int], bytes],
    total: int,
    concurrency: int,
) -> list[Result]:
    """Send ``total`` requests over ``concurrency`` keep-alive connections."""
    results: list[Result | None] = [None] * total
    counter = iter(range(total))

    def next_index() -> int | None:
        return next(counter, None)

    await asyncio.gather(
        *(
            _connection(host, port, make_request, next_index, results)
            for _ in range(min(concurrency, total))
        )
    )
    return [r for r in results if r is not None]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) by nearest rank; ``nan`` for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]
