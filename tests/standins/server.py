"""Serving the stand-in app over real sockets: in a background thread of the test process
(``StandinServer``) or in a process of its own (``StandinProcess``, ``python -m tests.standins``).
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from granian.constants import Interfaces
from granian.server.embed import Server

from tests.standins.app import create_app
from tests.standins.state import Fault, StandinState

#: How long starting or stopping a stand-in may take before it counts as broken.
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
#: Requests granian hands to Python at once; high so benchmarks measure the app, not this.
BACKLOG = 2048
#: Defaults of the webhook URLs the helpers build: any value works unless it has a trigger word.
SLACK_HOOK = "T0STANDIN1/B0STANDIN1/standinhooksecret"
DISCORD_WEBHOOK_ID = "1200000000000000001"
DISCORD_WEBHOOK_TOKEN = "standin-webhook-token"
_REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def _accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _granian(app: Any, host: str, port: int) -> Server:
    server = Server(
        app,
        address=host,
        port=port,
        # No lifespan: the app has no startup work, and shutdown should not wait on one.
        interface=Interfaces.ASGINL,
        backlog=BACKLOG,
        log_enabled=False,
    )
    # Do not wait forever on a request that is still running when the server stops.
    server.workers_kill_timeout = 2
    return server


async def _wait_listening(host: str, port: int, serving: asyncio.Task[None]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not await _accepts(host, port):
        if serving.done():
            serving.result()  # raises why the server stopped
            msg = "stand-in server stopped before listening"
            raise RuntimeError(msg)
        if time.monotonic() > deadline:
            msg = f"stand-in server not listening on {host}:{port} after {START_TIMEOUT_S}s"
            raise TimeoutError(msg)
        await asyncio.sleep(0.02)


class _Controls:
    """Conveniences shared by the in-process and the out-of-process server."""

    url: str

    @property
    def slack_api_url(self) -> str:
        """For ``Endpoints.slack_api_url``."""
        return f"{self.url}/api"

    @property
    def openweather_url(self) -> str:
        """For ``Endpoints.openweather_url`` or an OpenWeather credential's ``base_url``."""
        return self.url

    def slack_webhook_url(self, hook: str = SLACK_HOOK) -> str:
        return f"{self.url}/services/{hook}"

    def discord_webhook_url(
        self, webhook_id: str = DISCORD_WEBHOOK_ID, token: str = DISCORD_WEBHOOK_TOKEN
    ) -> str:
        return f"{self.url}/api/webhooks/{webhook_id}/{token}"


class StandinServer(_Controls):
    """The stand-in app on ``127.0.0.1`` in a background thread with its own event loop.

    ``with StandinServer() as server: server.url`` -- or ``start()`` / ``stop()``.
    ``state`` is the live recorder; its methods are safe to call from the test's thread.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self.state = StandinState()
        self.app = create_app(self.state)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> StandinServer:
        if self.port == 0:
            self.port = free_port(self.host)
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._run, name="standin-server", daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S) or self._error is not None:
            self.stop()
            msg = f"stand-in server did not start on {self.url}"
            raise RuntimeError(msg) from self._error
        return self

    def stop(self) -> None:
        self.state.closing.set()
        if self._loop is not None and self._server is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                self._loop.call_soon_threadsafe(self._server.stop)
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                msg = "stand-in server thread did not stop"
                raise RuntimeError(msg)
            self._thread = None

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = _granian(self.app, self.host, self.port)
        serving = asyncio.ensure_future(self._server.serve())
        await _wait_listening(self.host, self.port, serving)
        self._started.set()
        await serving

    # What tests usually want, without an HTTP round trip.

    def requests(
        self, kind: str | None = None, path_prefix: str | None = None
    ) -> list[dict[str, Any]]:
        return self.state.requests(kind=kind, path_prefix=path_prefix)

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    def reset(self) -> None:
        self.state.reset()

    def add_fault(self, path_prefix: str = "/", **fields: Any) -> None:
        """Fail (or delay) matching requests; see ``Fault``."""
        self.state.add_fault(Fault(path_prefix=path_prefix, **fields))

    def clear_faults(self) -> None:
        self.state.clear_faults()

    async def wait_until(
        self, condition: Callable[[], bool], *, timeout_s: float = 5.0, what: str = "condition"
    ) -> None:
        """Poll ``condition`` until it holds; ``TimeoutError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                msg = f"stand-in: {what} not reached within {timeout_s}s"
                raise TimeoutError(msg)
            await asyncio.sleep(0.01)


class StandinProcess(_Controls):
    """``python -m tests.standins`` as a child process: for benchmarks and process tests.

    ``with StandinProcess() as standin: standin.url``; inspect it over HTTP
    (``standin.stats()`` calls ``GET /_standin/stats``).
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.url = ""
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> StandinProcess:
        command = [sys.executable, "-m", "tests.standins", "--host", self.host]
        command += ["--port", str(self.port)]
        self._process = subprocess.Popen(
            command, cwd=_REPO_ROOT, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        assert self._process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            ready = selector.select(START_TIMEOUT_S)
        line = self._process.stdout.readline().strip() if ready else ""
        if not line.startswith("http"):
            self.stop()
            msg = f"stand-in process did not print its URL (got {line!r})"
            raise RuntimeError(msg)
        self.url = line
        self.port = httpx.URL(line).port or self.port
        return self

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None

    def __enter__(self) -> StandinProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/_standin/stats", timeout=5)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def reset(self) -> None:
        httpx.post(f"{self.url}/_standin/reset", timeout=5).raise_for_status()


async def serve_forever(host: str, port: int) -> None:
    """Run the stand-in until SIGTERM or SIGINT; print its URL once it listens."""
    state = StandinState()
    server = _granian(create_app(state), host, port)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        state.closing.set()
        server.stop()  # type: ignore[no-untyped-call]

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    serving = asyncio.ensure_future(server.serve())
    await _wait_listening(host, port, serving)
    print(f"http://{host}:{port}", flush=True)  # the parent waits for this line
    await serving
