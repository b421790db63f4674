from __future__ import annotations

import asyncio
import gzip
import time
import tracemalloc
import zlib

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


class RawServer:
    """A tiny real HTTP/1.1 server whose answers a test scripts byte for byte."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.heads: list[bytes] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while self.answers:
                    head = await reader.readuntil(b"\r\n\r\n")
                    self.heads.append(head)
                    writer.write(self.answers.pop(0))
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


def answer(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


async def test_no_cookie_is_carried_between_requests(http_client: HttpClient) -> None:
    async with RawServer(
        [answer(b"a", "Set-Cookie: session=tenant-a-secret; Path=/"), answer(b"b")]
    ) as server:
        for _ in range(2):
            await http_client.send(http_client.build_request("GET", f"{server.url}/x"))
    assert len(server.heads) == 2
    assert b"tenant-a-secret" not in server.heads[1]
    assert b"cookie" not in server.heads[1].lower()


async def test_gzip_bodies_are_decoded(http_client: HttpClient) -> None:
    async with RawServer([answer(gzip.compress(b'{"ok": true}'), "Content-Encoding: gzip")]) as s:
        response = await http_client.send(http_client.build_request("GET", s.url))
    assert response.json() == {"ok": True}


async def test_the_codings_httpx_decodes_are_decoded_the_headers_kept(
    http_client: HttpClient,
) -> None:
    body = b'{"ok": true}'
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    cases = [
        ("gzip", gzip.compress(body)),
        ("deflate", zlib.compress(body)),
        ("deflate", raw_deflate.compress(body) + raw_deflate.flush()),  # as some servers do
        ("gzip, deflate", zlib.compress(gzip.compress(body))),  # the last applied comes off first
        ("identity", body),
        ("br", b"left as sent"),  # not a coding httpx decodes here either
    ]
    async with RawServer([answer(raw, f"Content-Encoding: {c}") for c, raw in cases]) as s:
        for coding, raw in cases:
            response = await http_client.send(http_client.build_request("GET", s.url))
            assert response.content == (b"left as sent" if coding == "br" else body)
            # As the remote sent them: a step's output shows them.
            assert response.headers["content-encoding"] == coding
            assert response.headers["content-length"] == str(len(raw))
    async with RawServer([answer(b"not gzip", "Content-Encoding: gzip")]) as s:
        with pytest.raises(httpx.DecodingError, match="incorrect header check"):
            await http_client.send(http_client.build_request("GET", s.url))


async def test_a_compressed_answer_is_refused_past_the_cap_once_decompressed(
    http_client: HttpClient,
) -> None:
    """A gzip bomb: httpx decompressed a whole body, so 2 MB of gzip from one remote (any
    tenant's ``http_request`` URL) took 4 GB of the server's memory and 12 s of its event
    loop, every tenant's. Now decompressing stops at ``MAX_READ_BYTES``."""
    from ipaas.kit.http import MAX_READ_BYTES

    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = b"\0" * (1 << 20)
    bomb = b"".join(compressor.compress(zeros) for _ in range(200)) + compressor.flush()
    assert len(bomb) < 1 << 20  # 200 MiB of zeros in ~200 KiB
    tracemalloc.start()
    try:
        async with RawServer([answer(bomb, "Content-Encoding: gzip")]) as s:
            with pytest.raises(httpx.TransportError, match="bytes once decompressed refused"):
                await http_client.send(http_client.build_request("GET", s.url))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * MAX_READ_BYTES  # before: the 200 MiB, whole


async def test_oversized_bodies_are_refused(http_client: HttpClient) -> None:
    from ipaas.kit.http import MAX_READ_BYTES

    big = b"x" * (MAX_READ_BYTES + 1)
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(big):x}\r\n".encode()
        + big
        + b"\r\n0\r\n\r\n"
    )
    for scripted in (answer(big), chunked):
        async with RawServer([scripted]) as server:
            with pytest.raises(httpx.TransportError, match="refused"):
                await http_client.send(http_client.build_request("GET", server.url))


def test_build_request_merges_headers_like_httpx(http_client: HttpClient) -> None:
    url = "https://hooks.example.com/services/T0/B0/x?a=1"
    first = http_client.build_request("POST", url, content=b"{}", headers={"Accept": "text/x"})
    second = http_client.build_request("POST", url, json={"k": "v"})
    assert first.headers["user-agent"].startswith("simple-ipaas/")
    assert first.headers["accept"] == "text/x"  # the call's own header wins
    assert second.headers["accept"] == "*/*"  # and does not leak into the next request
    assert second.headers["content-type"] == "application/json"
    assert second.content == b'{"k":"v"}'
    assert str(second.url) == url
    assert first.headers["host"] == "hooks.example.com"
    assert "timeout" in first.extensions
