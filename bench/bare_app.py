"""The baseline for webhook intake: a bare ASGI app that only stores the raw body in SQLite.

``python -m bench.bare_app --port N --db PATH`` serves it with the same embedded granian
configuration as ``ipaas serve`` (same interface, HTTP/1 settings and event loop), so the
ratio of the two intakes shows what the product's own path costs. Every ``POST`` inserts the
body into one table (WAL, ``synchronous=NORMAL``, one commit per request, through aiosqlite's
thread) and answers ``202``; ``GET`` answers ``200`` (readiness).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiosqlite

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_ACCEPTED = b'{"accepted":true}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"17")]


class BareApp:
    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self.db: aiosqlite.Connection | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "POST":
            assert self.db is not None
            await self.db.execute(
                "INSERT INTO event (body, received_at) VALUES (?, ?)", (body, time.time())
            )
            await self.db.commit()
            status = 202
        else:
            status = 200
        await send({"type": "http.response.start", "status": status, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": _ACCEPTED})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.db = await aiosqlite.connect(self.db_path)
                for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"):
                    await self.db.execute(pragma)
                await self.db.execute(
                    "CREATE TABLE IF NOT EXISTS event "
                    "(id INTEGER PRIMARY KEY, body BLOB NOT NULL, received_at REAL NOT NULL)"
                )
                await self.db.commit()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.db is not None:
                    await self.db.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def serve(host: str, port: int, db_path: str) -> None:
    """Serve exactly as ``ipaas serve`` does (``ipaas.cli.serve_app``: embedded granian, ASGI
    with lifespan, the HTTP/1 settings from the default ``Settings``)."""
    from ipaas.cli import serve_app
    from ipaas.config import Settings

    await serve_app(BareApp(db_path), Settings(host=host, port=port))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port, args.db))
    else:
        uvloop.run(serve(args.host, args.port, args.db))


if __name__ == "__main__":
    main()
