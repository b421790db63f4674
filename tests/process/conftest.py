"""Real processes for the process tests: ``ipaas serve`` (``ServerProcess``), ``ipaas worker``
(``WorkerProcess``), the lines of ``deploy/Procfile`` (``ProcfileProcess``), the stand-ins
(``python -m tests.standins``), a small synchronous API client to set things up, and the
scale-out services (a PostgreSQL database and a Redis database of the test's own).

Every wait polls a condition against a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
from bench import loadgen
from cryptography.fernet import Fernet
from redis import Redis

from tests.contracts.conftest import postgres_database
from tests.standins.server import StandinProcess, free_port

T = TypeVar("T")

_REPO_ROOT = Path(__file__).resolve().parents[2]
#: Migrations + imports on a cold, busy 2-core box.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
SECRET_KEY = Fernet.generate_key().decode()
PROCFILE = _REPO_ROOT / "deploy" / "Procfile"
POSTGRES_URL = os.environ.get("IPAAS_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("IPAAS_TEST_REDIS_URL")
#: The queue's stream and group names are fixed, so the scale-out tests own a Redis database
#: index (flushed before and after each); pub/sub channels span databases, ids are unique.
PROCESS_REDIS_DB = 14

#: Marks for a test that runs ``ipaas`` processes on PostgreSQL and Redis.
SCALED_OUT_MARKS = [
    pytest.mark.process,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.skipif(
        not (POSTGRES_URL and REDIS_URL),
        reason="needs IPAAS_TEST_POSTGRES_URL and IPAAS_TEST_REDIS_URL",
    ),
]


def _ipaas_command() -> str:
    beside = Path(sys.executable).with_name("ipaas")
    if beside.exists():
        return str(beside)
    found = shutil.which("ipaas")
    if found is None:
        msg = "the ipaas command is not installed (make install)"
        raise RuntimeError(msg)
    return found


def wait_for(
    get: Callable[[], T],
    *,
    until: Callable[[T], object] = bool,
    timeout_s: float,
    what: str,
    interval_s: float = 0.05,
) -> T:
    """Poll ``get()`` until ``until(value)`` holds (by default: the value is truthy); return
    that value. ``TimeoutError`` naming ``what`` (and the last value) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = get()
        if until(value):
            return value
        if time.monotonic() > deadline:
            msg = f"{what}: not reached within {timeout_s}s (last: {value!r})"[:2000]
            raise TimeoutError(msg)
        time.sleep(interval_s)


class ServerProcess:
    """``ipaas serve --port P`` in a subprocess over a data directory of its own.

    The same directory (and so the same SQLite database) survives ``kill()`` / ``start()``,
    which is how the durability and shutdown tests restart "the same server". Each start's
    stderr (the JSON log) goes to ``stderr-<n>.log`` in the directory.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.data_dir = data_dir
        #: Extra ``ipaas serve`` arguments, e.g. ``("--no-workers", "--no-migrate")``.
        self.args = tuple(args)
        self.port = free_port()
        self.db_path = data_dir / "ipaas.db"
        self.env = {
            "IPAAS_DATABASE_URL": f"sqlite+aiosqlite:///{self.db_path}",
            "IPAAS_DATA_DIR": str(data_dir),
            "IPAAS_SECRET_KEY": SECRET_KEY,
            "IPAAS_LOG_FORMAT": "json",
            "IPAAS_LOG_LEVEL": "info",
            "IPAAS_EGRESS_ALLOW": "127.0.0.1/32",
            **(env or {}),
        }
        # Serving HTTPS itself (IPAAS_TLS_CERT_FILE): clients trust that (self-signed) cert.
        cert = self.env.get("IPAAS_TLS_CERT_FILE")
        self.url = f"{'https' if cert else 'http'}://127.0.0.1:{self.port}"
        self.verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=cert) if cert else True
        )
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.stderr_path = data_dir / "stderr-0.log"

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, *, env: Mapping[str, str] | None = None) -> ServerProcess:
        """Start (again) and wait for ``GET /readyz`` to answer 200."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.env.update(env or {})
        self.starts += 1
        self.stderr_path = self.data_dir / f"stderr-{self.starts}.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("IPAAS_")}
        environ.update(self.env)
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                self._argv(),
                cwd=self.data_dir,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        self._wait_ready()
        return self

    def _argv(self) -> list[str]:
        return [_ipaas_command(), *self._command()]

    def _command(self) -> list[str]:
        return ["serve", "--port", str(self.port), *self.args]

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            code = self.process.poll()
            if code is not None:
                msg = f"ipaas serve exited with {code} while starting:\n{self.stderr_text()}"
                raise RuntimeError(msg)
            with contextlib.suppress(httpx.HTTPError):
                ready = httpx.get(f"{self.url}/readyz", timeout=1, verify=self.verify)
                if ready.status_code == 200:
                    return
            if time.monotonic() > deadline:
                self.kill()
                msg = f"ipaas serve not ready within {START_TIMEOUT_S}s:\n{self.stderr_text()}"
                raise TimeoutError(msg)
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Send SIGTERM, or ``sig`` (graceful: stop intake, drain, exit 0); does not wait."""
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, and reap the process."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)

    def wait(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        assert self.process is not None
        return self.process.wait(timeout_s)

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL if it does not exit in time."""
        if not self.running():
            return
        self.terminate()
        try:
            self.wait()
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what it wrote -------------------------------------------------------------------------
    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines of the current (or last) run."""
        events = []
        for line in self.stderr_text().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
        return events

    def assert_no_errors(self) -> None:
        """No ``error``-level log line and no traceback in the current run's stderr."""
        text = self.stderr_text()
        errors = [e for e in self.log_events() if e.get("level") in ("error", "critical")]
        assert not errors, errors[:5]
        assert "Traceback" not in text, text[-4000:]

    def statuses(self) -> dict[str, str]:
        """``execution id -> status`` straight from the SQLite file (read-only; for when the
        server is not running)."""
        uri = f"file:{self.db_path}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            return dict(db.execute("SELECT id, status FROM execution").fetchall())


class WorkerProcess(ServerProcess):
    """``ipaas worker`` (scale-out mode) with the same lifecycle and log helpers. It serves no
    HTTP, so ``start`` only checks that it did not exit at once; tests wait for its work."""

    def _command(self) -> list[str]:
        return ["worker", *self.args]

    def _wait_ready(self) -> None:
        _check_alive(self)


def _check_alive(process: ServerProcess, wait_s: float = 0.5) -> None:
    """For processes that serve no HTTP: they did not exit (within ``wait_s``)."""
    assert process.process is not None
    try:
        code = process.process.wait(wait_s)
    except subprocess.TimeoutExpired:
        return
    msg = f"{process._argv()} exited with {code} while starting:\n{process.stderr_text()}"
    raise RuntimeError(msg)


def procfile() -> dict[str, str]:
    """``deploy/Procfile``: process type -> command line."""
    lines = {}
    for line in PROCFILE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            kind, _, command = line.partition(":")
            lines[kind.strip()] = command.strip()
    return lines


def _procfile_env(env: Mapping[str, str]) -> dict[str, str]:
    # The installed ``ipaas`` on PATH, as on a host where the package is installed.
    path = f"{Path(_ipaas_command()).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {"IPAAS_HOST": "127.0.0.1", **env, "PATH": path}


class ProcfileProcess(ServerProcess):
    """One process type of ``deploy/Procfile``, started the way a Procfile runner (honcho,
    foreman) starts it: the line through ``sh``, with ``PORT`` set. The ``api`` type is ready
    once ``/readyz`` answers; the others once they did not exit at once."""

    def __init__(self, kind: str, data_dir: Path, *, env: Mapping[str, str] | None = None) -> None:
        super().__init__(data_dir, env=env)
        self.kind = kind
        self.line = procfile()[kind]
        self.env.update(_procfile_env({"PORT": str(self.port)}))

    def _argv(self) -> list[str]:
        # ``exec``: signals reach ipaas itself, not the shell.
        return ["sh", "-c", f"exec {self.line}"]

    def _wait_ready(self) -> None:
        if self.kind == "api":
            super()._wait_ready()
        elif self.kind in _STARTED_EVENTS:
            event = _STARTED_EVENTS[self.kind]

            def started() -> bool:
                _check_alive(self, 0)  # raises if it exited meanwhile
                return any(e.get("event") == event for e in self.log_events())

            wait_for(started, timeout_s=START_TIMEOUT_S, what=f"{self.kind} logs {event}")
        else:
            _check_alive(self)


#: What a Procfile process that serves no HTTP logs once it is up.
_STARTED_EVENTS = {"worker": "worker_started", "scheduler": "scheduler_started"}


def run_procfile(kind: str, *, env: Mapping[str, str], cwd: Path) -> None:
    """Run a one-shot Procfile line (``release``) to completion; raise if it fails."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IPAAS_")}
    environ.update(_procfile_env(env))
    result = subprocess.run(
        ["sh", "-c", f"exec {procfile()[kind]}"],
        cwd=cwd,
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-4000:]


def run_ipaas(*args: str, env: Mapping[str, str], cwd: Path) -> None:
    """Run a one-shot ``ipaas`` command (``migrate``, ...) to completion; raise if it fails."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IPAAS_")}
    environ.update(env)
    result = subprocess.run(
        [_ipaas_command(), *args],
        cwd=cwd,
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-4000:]


class Api:
    """A synchronous client for the setup calls and the reads a test makes."""

    def __init__(self, url: str, *, verify: ssl.SSLContext | bool = True) -> None:
        self.url = url
        self.client = httpx.Client(base_url=url, timeout=10, verify=verify)
        self.headers: dict[str, str] = {}

    def close(self) -> None:
        self.client.close()

    def signup(self, email: str = "ops@example.com") -> Api:
        response = self.client.post(
            "/api/auth/signup",
            json={"email": email, "password": "correct horse battery", "tenant_name": "Ops"},
        )
        assert response.status_code == 201, response.text
        self.headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        return self

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, headers=self.headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, headers=self.headers, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.patch(path, headers=self.headers, **kwargs)

    def credential(self, type_: str, secret: dict[str, Any]) -> str:
        response = self.post(
            "/api/credentials", json={"name": f"{type_}-cred", "type": type_, "secret": secret}
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def workflow(self, steps: list[dict[str, Any]], name: str = "process test") -> str:
        response = self.post(
            "/api/workflows", json={"name": name, "trigger": {"type": "webhook"}, "steps": steps}
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def slack_workflow(self, webhook_url: str, text: str) -> str:
        credential = self.credential("slack", {"webhook_url": webhook_url})
        return self.workflow(
            [
                {
                    "id": "notify",
                    "type": "slack_message",
                    "credential_id": credential,
                    "config": {"text": text},
                }
            ]
        )

    def fire(self, workflow_id: str, body: Any) -> str:
        """Fire one webhook; the execution id of its ``202``."""
        response = self.client.post(f"/api/webhooks/{workflow_id}", json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["execution_id"])

    def execution(self, execution_id: str) -> dict[str, Any]:
        response = self.get(f"/api/executions/{execution_id}")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def executions(self, **filters: str) -> list[dict[str, Any]]:
        """Every execution matching ``filters``, following the cursor to the end."""
        items: list[dict[str, Any]] = []
        params: dict[str, str | int] = {**filters, "limit": 200}
        while True:
            response = self.get("/api/executions", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            items += page["items"]
            if not page["next_cursor"]:
                return items
            params["cursor"] = page["next_cursor"]

    def status_counts(self, workflow_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.executions(workflow_id=workflow_id):
            counts[item["status"]] = counts.get(item["status"], 0) + 1
        return counts


class Standin:
    """The stand-in process and its ``/_standin`` controls over HTTP."""

    def __init__(self, process: StandinProcess) -> None:
        self.process = process
        self.url = process.url
        self.client = httpx.Client(base_url=process.url, timeout=10)

    def slack_hook(self) -> str:
        return f"{self.url}/services/T000/B000/XXXX"

    def reset(self) -> None:
        self.client.post("/_standin/reset").raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = self.client.get("/_standin/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def add_fault(self, path_prefix: str, **fields: Any) -> None:
        """Delay (``delay_s``) or fail (``status``) the next ``count`` matching requests
        (``count=None``: until reset)."""
        response = self.client.post("/_standin/faults", json={"path_prefix": path_prefix, **fields})
        assert response.status_code == 201, response.text

    def requests(self, kind: str | None = None) -> list[dict[str, Any]]:
        params = {"kind": kind} if kind else {}
        response = self.client.get("/_standin/requests", params=params)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def slow_call(self, call_id: str) -> dict[str, Any] | None:
        response = self.client.get("/_standin/slow")
        response.raise_for_status()
        for call in response.json():
            if call["id"] == call_id:
                return dict(call)
        return None


def fire_concurrently(
    server: ServerProcess, workflow_id: str, bodies: list[Any], *, concurrency: int = 50
) -> list[loadgen.Result]:
    """POST every body to the workflow's webhook over ``concurrency`` keep-alive connections
    at once (raw asyncio HTTP client: httpx alone would be the bottleneck here)."""
    host = f"127.0.0.1:{server.port}"
    path = f"/api/webhooks/{workflow_id}"
    requests = [loadgen.json_post(path, body, host=host) for body in bodies]
    return asyncio.run(
        loadgen.run("127.0.0.1", server.port, requests.__getitem__, len(requests), concurrency)
    )


@pytest.fixture(scope="session")
def standin_process() -> Iterator[StandinProcess]:
    with StandinProcess() as process:
        yield process


@pytest.fixture
def standin(standin_process: StandinProcess) -> Iterator[Standin]:
    """The session's stand-in process, reset (requests, counters, faults) for this test."""
    handle = Standin(standin_process)
    handle.reset()
    yield handle
    handle.reset()
    handle.client.close()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``make_server(IPAAS_WORKERS="1", ...)``: a ``ServerProcess`` (not yet started) over
    ``tmp_path``; every one made is stopped after the test."""
    servers: list[ServerProcess] = []

    def make(**env: str) -> ServerProcess:
        data_dir = tmp_path / f"server-{len(servers)}"
        data_dir.mkdir()
        server = ServerProcess(data_dir, env=env)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def api_for() -> Iterator[Callable[[ServerProcess], Api]]:
    """``api_for(server)``: a signed-up ``Api`` client for a started server."""
    clients: list[Api] = []

    def make(server: ServerProcess) -> Api:
        api = Api(server.url, verify=server.verify).signup()
        clients.append(api)
        return api

    yield make
    for api in clients:
        api.close()


# -- scale-out services ------------------------------------------------------------------------
@pytest.fixture
def database_url() -> Iterator[str]:
    """A new PostgreSQL database of this test's own (not migrated), dropped afterwards."""
    with postgres_database() as url:
        yield url


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The test Redis on the process tests' database index, empty before and after."""
    assert REDIS_URL is not None
    url = urlsplit(REDIS_URL)._replace(path=f"/{PROCESS_REDIS_DB}").geturl()
    with Redis.from_url(url) as redis:
        redis.flushdb()
    try:
        yield url
    finally:
        with Redis.from_url(url) as redis:
            redis.flushdb()


class Fleet:
    """Scale-out processes started from ``deploy/Procfile`` over one data directory: each
    ``start(kind)`` gets a directory of its own; ``stop_all`` stops every one still running."""

    def __init__(self, root: Path, env: Mapping[str, str]) -> None:
        self.root = root
        self.env = {"IPAAS_SECRET_KEY": SECRET_KEY, **env}
        self.processes: list[ProcfileProcess] = []

    def migrate(self) -> None:
        run_procfile("release", env=self.env, cwd=self.root)

    def start(self, kind: str, **env: str) -> ProcfileProcess:
        data_dir = self.root / f"{kind}-{len(self.processes)}"
        data_dir.mkdir()
        process = ProcfileProcess(kind, data_dir, env={**self.env, **env})
        self.processes.append(process)
        process.start()
        return process

    def running(self, kind: str) -> list[ProcfileProcess]:
        return [p for p in self.processes if p.kind == kind and p.running()]

    def kill_one(self, kind: str, rng: random.Random) -> ProcfileProcess:
        victim = rng.choice(self.running(kind))
        victim.kill()
        return victim

    def stop_all(self) -> None:
        for process in self.processes:
            process.stop()

    def error_events(self) -> list[dict[str, Any]]:
        """``error``-level log lines of every process's current run."""
        return [
            e
            for p in self.processes
            for e in p.log_events()
            if e.get("level") in ("error", "critical")
        ]


@pytest.fixture
def fleet() -> Iterator[list[Fleet]]:
    """The fleets a test starts (it appends each); every process still running is stopped
    afterwards."""
    fleets: list[Fleet] = []
    yield fleets
    for f in fleets:
        f.stop_all()
