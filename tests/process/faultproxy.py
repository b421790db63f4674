"""A TCP proxy in front of a service (PostgreSQL, Redis) that a test can take down and bring
back, without touching the service itself (other suites on the machine keep using it).

``cut()`` is what a stopped server looks like from its clients: every open connection is
closed at once and new ones are refused (nothing listens on the port). ``restore()`` listens
on the same port again. The proxy runs its own event loop on a thread, so the synchronous
process tests can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from types import TracebackType

from tests.standins.server import free_port

_CHUNK = 64 * 1024


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()
        #: Connections accepted since the start (a test can check traffic went through).
        self.accepted = 0

    def start(self) -> FaultProxy:
        self._thread.start()
        self.restore()
        return self

    def close(self) -> None:
        self.cut()
        asyncio.run_coroutine_threadsafe(self._cancel_handlers(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def up(self) -> bool:
        return self._server is not None

    def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    def restore(self) -> None:
        """Listen again on the same port."""
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    @staticmethod
    async def _cancel_handlers() -> None:
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        # Known at once, so a cut while the upstream connection opens resets it too; closed
        # in ``finally`` whatever happens, a cancelled handler included (``close``): a
        # transport left open warns when collected, which fails a test that ran fine.
        self._transports.add(client_w.transport)
        server_w: asyncio.StreamWriter | None = None
        try:
            try:
                server_r, server_w = await asyncio.open_connection(*self.target)
            except OSError:
                return
            if client_w.transport.is_closing():  # cut while the upstream connection opened
                return
            for writer in (client_w, server_w):
                with contextlib.suppress(OSError):
                    writer.get_extra_info("socket").setsockopt(
                        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
                    )
            self._transports.add(server_w.transport)
            await asyncio.gather(
                self._pump(client_r, server_w),
                self._pump(server_r, client_w),
                return_exceptions=True,
            )
        finally:
            writers = (client_w,) if server_w is None else (client_w, server_w)
            for writer in writers:
                self._transports.discard(writer.transport)
                writer.transport.abort()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()
