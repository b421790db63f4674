"""``GET /metrics`` on a port of its own: ``ipaas worker`` and ``ipaas scheduler``, which
have no API, and ``ipaas serve`` when ``IPAAS_METRICS_PORT`` moves it off the API's port.

A few lines of asyncio rather than ``prometheus_client.start_http_server``: the latter
serves from a thread, where the store-derived gauges (an async query) cannot be read.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from ipaas.observability.metrics import CONTENT_TYPE, StoreGauges, render
from ipaas.stores.base import Store

_log = structlog.get_logger(__name__)

#: A scraper must send its request head within this time.
READ_TIMEOUT_S = 5.0


async def serve_metrics(store: Store, host: str, port: int, stop: asyncio.Event) -> None:
    """Answer every request with the metrics until ``stop`` is set."""
    async with await start_metrics(store, host, port):
        await stop.wait()


async def start_metrics(store: Store, host: str, port: int) -> asyncio.Server:
    """Listen on ``host:port`` (``OSError`` when it cannot) and answer every request with the
    metrics, until the server returned is closed."""
    gauges = StoreGauges()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                request = await reader.readuntil(b"\r\n\r\n")
            if request.split(b" ", 2)[1].split(b"?")[0] != b"/metrics":
                status, body, kind = b"404 Not Found", b"not found\n", b"text/plain"
            else:
                status, body, kind = b"200 OK", await render(store, gauges), CONTENT_TYPE.encode()
            writer.write(
                b"HTTP/1.1 " + status + b"\r\ncontent-type: " + kind
                + b"\r\ncontent-length: " + str(len(body)).encode()
                + b"\r\nconnection: close\r\n\r\n" + body
            )  # fmt: skip
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, IndexError, ConnectionError):
            pass  # a slow, broken or gone client: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port)
    _log.info("metrics_serving", host=host, port=port)
    return server
