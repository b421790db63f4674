"""The one outbound HTTP client: pooled connections and a timeout on every call.

Every connector sends through ``HttpClient.send``; its transport is the single place where
egress policy (the SSRF guard, ``kit/egress.py``) applies.

The client is httpx (its API is what connectors build requests with) over the aiohttp
transport from ``httpx-aiohttp``: on this project's 2-core reference machine httpx's default
transport (httpcore on anyio) cost ~1.9 ms of CPU per request to a local server and fell to
~360 requests/s with 1,000 in flight, against ~1.1 ms and ~1,350 requests/s for the aiohttp
transport (see docs/benchmarks.md). Cancelling a call closes its connection either way.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
import zlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions
from yarl import URL

from ipaas.kit.egress import EgressPolicy, VettingResolver
from ipaas.observability import tracing

#: Connect quickly or not at all; a slow remote should not hold a worker slot for long.
DEFAULT_CONNECT_TIMEOUT_S = 5.0
#: Enough for chat.postMessage and most APIs; steps may ask for more (``timeout_s``).
DEFAULT_TIMEOUT_S = 30.0
#: Bytes of a remote response body kept in records and errors (as text).
MAX_RESPONSE_BYTES = 256 * 1024
#: A JSON answer up to this size is parsed and kept whole in the step's record, where later
#: steps address its fields; a larger one is kept as text cut to ``MAX_RESPONSE_BYTES``,
#: like any other body. Every step's output is stored with its execution (and kept for
#: ``IPAAS_RETENTION_MAX_EXECUTIONS`` of them): whole 10 MB answers would fill the disk.
MAX_JSON_BYTES = 1024 * 1024
#: A remote answer larger than this fails the call instead of filling a worker's memory.
MAX_READ_BYTES = 10 * 1024 * 1024
#: Read size of a body without Content-Length.
_CHUNK_BYTES = 64 * 1024


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """The certificate check of every outbound call in this process, made once: loading the
    CA bundle takes ~30 ms, which each ``HttpClient`` paid (the tests make one per test).
    An ``SSLContext`` is safe to share between connections and threads."""
    return httpx.create_ssl_context()


def _timeout(timeout_s: float) -> httpx.Timeout:
    return httpx.Timeout(timeout_s, connect=min(DEFAULT_CONNECT_TIMEOUT_S, timeout_s))


class GuardedTransport(AiohttpTransport):
    """The aiohttp transport with the SSRF guard: every request's URL is checked first, and
    the session's resolver hands aiohttp only vetted addresses. Both sit at the transport, so
    a request that reaches the network by any path (a followed redirect too) is checked."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        limits: httpx.Limits,
        resolver: Callable[[], AbstractResolver] | None = None,
    ) -> None:
        # ``client`` is the transport's hook for the session it builds on first use.
        super().__init__(verify=_ssl_context(), limits=limits, client=self._session)
        self.policy = policy
        #: Builds the lookup under the guard (default: aiohttp's); tests pass a fake DNS.
        self._resolver = resolver

    def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            resolver=VettingResolver(
                self.policy, self._resolver() if self._resolver is not None else None
            ),
            keepalive_timeout=self.limits.keepalive_expiry,
            ssl=self.ssl_context,
            limit=self.limits.max_connections or 100,
        )
        # No cookie jar: aiohttp's default one would carry a cookie set by one tenant's
        # remote into another tenant's request to the same host name.
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """The request, and its whole response body read here (at most ``MAX_READ_BYTES``).

        The base transport streams the body through httpx's byte-stream layers, which the
        caller then read back into a new response: about a third of the client's CPU per
        call against a local server (docs/benchmarks.md). Error mapping is the base
        transport's own (``map_aiohttp_exceptions``)."""
        # aiohttp's own URL, parsed once per distinct URL: the guard checks it and aiohttp
        # uses it as it is (a string would be parsed by both, on every call).
        url = _yarl_url(str(request.url))
        self.policy.check_url(url)
        try:
            data: bytes | None = request.content or None
        except httpx.RequestNotRead:  # a streamed body: the base transport sends those
            return await _read_whole(await super().handle_async_request(request), request)
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        timeout = request.extensions.get("timeout", {})
        with map_aiohttp_exceptions():
            async with self.client.request(
                method=request.method,
                url=url,
                headers=request.headers,
                data=data,
                allow_redirects=False,
                auto_decompress=False,
                compress=False,
                timeout=aiohttp.ClientTimeout(
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                    connect=timeout.get("pool"),
                ),
            ) as response:
                declared = response.content_length
                _refuse_declared(declared, request)
                if declared is not None:
                    body = await response.read()
                else:
                    chunks = response.content.iter_chunked(_CHUNK_BYTES)
                    body = await _read_capped(chunks, request)
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        coding = response.headers.get("content-encoding")
        return _decoded_response(
            response.status, response.raw_headers, coding, body, request, extensions
        )


class HttpClient:
    """Requests go straight to the transport, not through ``httpx.AsyncClient.send``: no
    redirects are followed and auth is per request anyway, and the client's cookie jar would
    carry a cookie set by one tenant's remote into another tenant's request to that host.
    (It is also ~30 % less CPU per call.) The client object only builds requests.

    ``egress`` is the SSRF policy (default: public addresses only). A ``transport`` given
    instead (tests' ``httpx.MockTransport``) is used as is, without the guard.
    """

    def __init__(
        self,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_connections: int = 100,
        egress: EgressPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self.egress = egress if egress is not None else EgressPolicy()
        self._transport = (
            transport if transport is not None else GuardedTransport(self.egress, limits=limits)
        )
        self._client = httpx.AsyncClient(
            timeout=_timeout(timeout_s),
            limits=limits,
            transport=self._transport,
            headers={"user-agent": "simple-ipaas/0.3"},
        )

    async def send(
        self, request: httpx.Request, *, timeout_s: float | None = None
    ) -> httpx.Response:
        """Send and read the whole response within ``timeout_s`` (the client's default if
        unset), end to end: a server that drips its answer cannot hold the call longer.
        Bodies over ``MAX_READ_BYTES`` are refused. A destination the egress policy refuses
        raises ``EgressRefused`` before any connection is made.

        Cancelling the calling task aborts the request and closes its connection.
        """
        if not tracing.enabled():
            return await self._send(request, timeout_s)
        url = request.url
        with tracing.client_span(request.method, url.host, url.port) as span:
            tracing.inject(request.headers)
            response = await self._send(request, timeout_s)
            if span is not None:
                span.set_attribute("http.response.status_code", response.status_code)
            return response

    async def _send(self, request: httpx.Request, timeout_s: float | None) -> httpx.Response:
        total = timeout_s if timeout_s is not None else self.timeout_s
        request.extensions["timeout"] = _timeout(total).as_dict()
        try:
            async with asyncio.timeout(total):
                return await self._exchange(request)
        except TimeoutError as exc:
            msg = f"no complete response within {total:g} s"
            raise httpx.TimeoutException(msg, request=request) from exc
        except httpx.TimeoutException as exc:
            # The transport maps every aiohttp connection error, a refused one included, to
            # ConnectTimeout; only a real timeout may read as one.
            cause = exc.__cause__
            if isinstance(cause, aiohttp.ClientConnectorError) and not isinstance(
                cause, TimeoutError
            ):
                raise httpx.ConnectError(str(cause), request=request) from cause
            if isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(
                cause, TimeoutError
            ):
                detail = str(cause) or type(cause).__name__
                raise httpx.ReadError(detail, request=request) from cause
            raise
        except aiohttp.ClientError as exc:  # what the transport does not map itself
            raise httpx.TransportError(f"{type(exc).__name__}: {exc}") from exc

    async def _exchange(self, request: httpx.Request) -> httpx.Response:
        response = await self._transport.handle_async_request(request)
        if isinstance(self._transport, GuardedTransport):
            return response  # read whole, and capped, by the transport
        return await _read_whole(response, request)

    def build_request(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> httpx.Request:
        """``httpx.AsyncClient.build_request`` (the client's default headers, then
        ``headers``; its timeout; no cookies), without parsing a URL again on every call:
        webhook and API URLs repeat, and httpx's URL parser was the largest part of
        building a request in a profile of make bench."""
        merged = httpx.Headers(self._client.headers)
        if headers:
            try:
                merged.update(headers)
            except UnicodeEncodeError:
                ascii_only = False  # raised below, out of this block: the error holds the value
            else:
                ascii_only = True
            if not ascii_only:
                raise _not_ascii(headers)
        return httpx.Request(
            method,
            _parsed_url(url),
            headers=merged,
            extensions={"timeout": self._client.timeout.as_dict()},
            **kwargs,
        )

    async def aclose(self) -> None:
        await self._client.aclose()  # closes the transport's connections too


#: What may not appear in a header name or value: it would start another header. The HTTP
#: client refuses to send one; validating it up front makes a dry run in simulate mode say
#: so as a real run would, and a credential refuse it when stored.
_LINE_BREAKS = re.compile(r"[\r\n\x00]")
_PERCENT_ENCODE = "percent-encode other characters (the urlencode filter)"
#: An HTTP field name (RFC 9110, 5.1: a token). aiohttp sends any name as given: found by
#: hand, ``X V`` went out as is (the server answered 400, the step said only that), and so
#: did ``Transfer-Encoding:chunked``, which a server reads as a header of another name.
_FIELD_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_FIELD_NAME_CHARS = "letters, digits and !#$%&'*+-.^_`|~"
#: Headers that frame the message or change the protocol: the HTTP client sets them from
#: the body and the connection (RFC 9110, 7.6.1 and 8.6; RFC 9112, 6.1). Found by hand:
#: ``Content-Length: 5`` sent the first 5 bytes of a 17-byte JSON body (the remote read
#: ``{"hel`` and answered 200), and ``Transfer-Encoding: chunked`` made the remote's 500.
_CLIENTS_OWN = frozenset({"content-length", "transfer-encoding", "upgrade", "te", "trailer"})


def check_header_lines(headers: dict[str, str] | None) -> dict[str, str] | None:
    """``headers``, or ``ValueError`` naming the first that cannot be sent: one with a line
    break or NUL, with a character that is not ASCII (httpx sends header names and values
    as ASCII; before this check, such a value failed each call with "'ascii' codec can't
    encode character"), whose name is not an HTTP field name, or that frames the message
    (``Content-Length``, ``Transfer-Encoding``: the client's to set)."""
    for name, value in (headers or {}).items():
        if _LINE_BREAKS.search(name) or _LINE_BREAKS.search(value):
            msg = f"header {name.strip()!r} contains a line break or NUL"
            raise ValueError(msg)
        if not (name.isascii() and value.isascii()):
            msg = f"header {name.strip()!r} is not ASCII text; {_PERCENT_ENCODE}"
            raise ValueError(msg)
        _check_name(name)
    return headers


def _check_name(name: str) -> None:
    if not _FIELD_NAME.fullmatch(name):
        msg = f"header name {name!r} is not an HTTP field name ({_FIELD_NAME_CHARS} only)"
        raise ValueError(msg)
    if name.lower() in _CLIENTS_OWN:
        msg = (
            f"header {name!r} is set by the HTTP client from the body and the connection; "
            "leave it out"
        )
        raise ValueError(msg)


def ascii_headers(headers: Mapping[str, str] | None) -> httpx.Headers:
    """``headers`` as httpx sends them, or ``ValueError`` naming the first that is not
    ASCII (one from a credential stored before ``check_header_lines`` refused it). Not
    chained to the codec's error, which holds the whole value: it may be a secret."""
    for name in headers or {}:
        _check_name(name)  # stored before check_header_lines refused it
    try:
        return httpx.Headers(headers)
    except UnicodeEncodeError:
        pass
    raise _not_ascii(headers or {})


def _not_ascii(headers: Mapping[str, str]) -> ValueError:
    name = next(n for n, v in headers.items() if not (n.isascii() and v.isascii()))
    return ValueError(f"header {name!r} is not ASCII text")


def check_header_token(value: str | None) -> str | None:
    """A token sent in a header (``Authorization: Bearer ...``): one line of ASCII text.
    The message does not repeat the token."""
    if value is not None and (_LINE_BREAKS.search(value) or not value.isascii()):
        msg = "must be one line of ASCII text"
        raise ValueError(msg)
    if value is not None and any(c.isspace() for c in value):
        # Found by hand: a token pasted as "Bearer xyz" was sent as "Bearer Bearer xyz".
        msg = "must be the token alone, without spaces (and without 'Bearer ')"
        raise ValueError(msg)
    return value


async def _read_whole(response: httpx.Response, request: httpx.Request) -> httpx.Response:
    """A streamed response read into a new one, refused past ``MAX_READ_BYTES``."""
    try:
        _refuse_declared(int(response.headers.get("content-length") or 0), request)
        body = await _read_capped(response.aiter_raw(), request)
    finally:
        await response.aclose()
    coding = response.headers.get("content-encoding")
    return _decoded_response(
        response.status_code, response.headers, coding, body, request, response.extensions
    )


def _decoded_response(
    status: int,
    headers: httpx.Headers | Sequence[tuple[bytes, bytes]],
    coding: str | None,
    raw: bytes,
    request: httpx.Request,
    extensions: dict[str, Any],
) -> httpx.Response:
    """A response over ``raw`` decoded as its ``Content-Encoding`` (``coding``) says,
    refused once the decoded body passes ``MAX_READ_BYTES``: httpx decoded it whole, so a
    2 MB gzip answer of zeros took 4 GB of a worker's memory and 12 s of its event loop (a
    gzip bomb). The headers stay as the remote sent them."""
    if not coding:
        return httpx.Response(
            status, headers=headers, content=raw, request=request, extensions=extensions
        )
    content = raw
    names = [name.strip().lower() for name in coding.split(",")]
    for name in reversed(names):  # the last one applied is undone first
        if name in ("gzip", "x-gzip"):
            content = _inflate(content, zlib.MAX_WBITS | 16, request)
        elif name == "deflate":  # zlib-wrapped, or raw as some servers send it
            try:
                content = _inflate(content, zlib.MAX_WBITS, request)
            except httpx.DecodingError:
                content = _inflate(content, -zlib.MAX_WBITS, request)
        # identity, and codings httpx does not decode either, are left as they are
    sent = httpx.Headers(headers)
    plain = [(k, v) for k, v in sent.multi_items() if k != "content-encoding"]
    response = httpx.Response(
        status, headers=plain, content=content, request=request, extensions=extensions
    )
    response.headers = sent  # as the remote sent them (the body is read, and decoded)
    return response


def _inflate(data: bytes, wbits: int, request: httpx.Request) -> bytes:
    """``data`` decompressed (one gzip member, as httpx does), at most ``MAX_READ_BYTES``."""
    decompressor = zlib.decompressobj(wbits)
    try:
        out = decompressor.decompress(data, MAX_READ_BYTES + 1)
        if len(out) <= MAX_READ_BYTES:
            out += decompressor.flush()
    except zlib.error as exc:
        raise httpx.DecodingError(str(exc), request=request) from exc
    if len(out) > MAX_READ_BYTES:
        raise _too_large(request, decompressed=True)
    return out


@functools.lru_cache(maxsize=1024)
def _yarl_url(url: str) -> URL:
    return URL(url)  # as aiohttp would parse the string (``ClientSession._build_url``)


@functools.lru_cache(maxsize=1024)
def _parsed_url(url: str) -> httpx.URL:
    return httpx.URL(url)  # immutable: requests may share one


def _refuse_declared(declared: int | None, request: httpx.Request) -> None:
    """Refuse a body whose Content-Length is over ``MAX_READ_BYTES`` before reading it."""
    if declared is not None and declared > MAX_READ_BYTES:
        raise _too_large(request)


async def _read_capped(chunks: AsyncIterator[bytes], request: httpx.Request) -> bytes:
    """The chunks joined, refused as soon as they pass ``MAX_READ_BYTES``."""
    raw = bytearray()
    async for chunk in chunks:
        raw += chunk
        if len(raw) > MAX_READ_BYTES:
            raise _too_large(request)
    return bytes(raw)


def _too_large(request: httpx.Request, *, decompressed: bool = False) -> httpx.TransportError:
    once = " once decompressed" if decompressed else ""
    return httpx.TransportError(
        f"response body over {MAX_READ_BYTES} bytes{once} refused", request=request
    )


def describe_error(exc: httpx.HTTPError) -> str:
    """``ConnectError: Cannot connect to host ...``: the kind of failure and its detail."""
    detail = str(exc) or (str(exc.__cause__) if exc.__cause__ else "")
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
