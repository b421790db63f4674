"""The one outbound HTTP client: pooled connections and a timeout on every call.

Every connector sends through ``HttpClient.send``; this is the single place where egress
policy (the SSRF guard) applies.
"""

from __future__ import annotations

import httpx

#: Connect quickly or not at all; a slow remote should not hold a worker slot for long.
DEFAULT_CONNECT_TIMEOUT_S = 5.0
#: Enough for chat.postMessage and most APIs; steps may ask for more (``timeout_s``).
DEFAULT_TIMEOUT_S = 30.0
#: Bytes of a remote response body kept in records and errors.
MAX_RESPONSE_BYTES = 256 * 1024


class HttpClient:
    def __init__(
        self,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_connections: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(DEFAULT_CONNECT_TIMEOUT_S, timeout_s)),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
            transport=transport,
            headers={"user-agent": "simple-ipaas/0.3"},
        )

    async def send(
        self, request: httpx.Request, *, timeout_s: float | None = None
    ) -> httpx.Response:
        """Send and read the whole response (bounded by ``timeout_s``).

        Cancelling the calling task aborts the request and closes its connection.
        """
        if timeout_s is not None:
            request.extensions["timeout"] = httpx.Timeout(
                timeout_s, connect=min(DEFAULT_CONNECT_TIMEOUT_S, timeout_s)
            ).as_dict()
        return await self._client.send(request)

    def build_request(self, method: str, url: str, **kwargs: object) -> httpx.Request:
        return self._client.build_request(method, url, **kwargs)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        await self._client.aclose()
