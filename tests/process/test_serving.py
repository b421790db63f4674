"""Item 12: the server protects itself from slow and oversized clients, closes idle
keep-alive connections, serves HTTPS itself when given a certificate, believes forwarded
headers from trusted proxies only, and shuts down gracefully on SIGTERM (drain running
executions for up to ``IPAAS_SHUTDOWN_GRACE_S``, leave the rest ``queued`` for the next
start, exit 0)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.kit.certs import self_signed
from tests.process.conftest import Api, ServerProcess, Standin, wait_for

pytestmark = pytest.mark.process

HEADER_READ_TIMEOUT_S = 1.0
BODY_READ_TIMEOUT_S = 1.0
#: How late a body's deadline may be acted on (``api/body_deadline.py``: one sweep a second).
BODY_SWEEP_S = 1.0
#: Scheduling noise on a busy 2-core box; far below what an unguarded server would allow.
MARGIN_S = 2.0
BYTE_INTERVAL_S = 0.2


@pytest.fixture
def guarded(
    make_server: Callable[..., ServerProcess], api_for: Callable[[ServerProcess], Api]
) -> tuple[ServerProcess, Api]:
    server = make_server(
        IPAAS_HEADER_READ_TIMEOUT_S=str(HEADER_READ_TIMEOUT_S),
        IPAAS_BODY_READ_TIMEOUT_S=str(BODY_READ_TIMEOUT_S),
    ).start()
    return server, api_for(server)


def _connect(server: ServerProcess) -> socket.socket:
    try:
        return socket.create_connection(("127.0.0.1", server.port), timeout=5)
    except ConnectionRefusedError as exc:
        # Seen once in a full run (test_oversized_header_is_refused, its second connection)
        # and never again: say whether the server was still running, and what it logged.
        msg = (
            f"connection refused on port {server.port}; server running: {server.running()}; "
            f"its log ends:\n{server.stderr_text()[-3000:]}"
        )
        raise AssertionError(msg) from exc


def _read_until_closed(sock: socket.socket, timeout_s: float) -> tuple[bytes, float | None]:
    """Everything the server sends until it closes the connection, and when (monotonic) it
    closed; ``None`` if it was still open after ``timeout_s``."""
    received = b""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return received, time.monotonic()
        if not chunk:
            return received, time.monotonic()
        received += chunk
    return received, None


def test_slow_header_client_is_cut_off(guarded: tuple[ServerProcess, Api]) -> None:
    server, api = guarded
    workflow_id = api.workflow(
        [{"id": "echo", "type": "http_request", "config": {"url": "http://127.0.0.1:9/"}}]
    )
    body = b'{"n": 1}'
    head = (
        f"POST /api/webhooks/{workflow_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    assert len(head) * BYTE_INTERVAL_S > 10 * HEADER_READ_TIMEOUT_S  # it would take ages

    with contextlib.closing(_connect(server)) as sock:
        started = time.monotonic()
        received, closed_at = b"", None
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed_at = time.monotonic()
                break
            chunk, closed_at = _read_until_closed(sock, BYTE_INTERVAL_S)
            received += chunk
            if closed_at is not None:
                break
        with contextlib.suppress(OSError):
            sock.sendall(body)

    assert closed_at is not None, "the slow client was never cut off"
    took = closed_at - started
    print(f"serving: slow-header client cut off after {took:.2f}s")
    assert took < HEADER_READ_TIMEOUT_S + MARGIN_S
    assert not received.startswith(b"HTTP/1.1 2"), received[:200]
    assert api.executions(workflow_id=workflow_id) == []


def _trickle(sock: socket.socket, pieces: list[bytes], interval_s: float) -> tuple[bytes, float]:
    """Send ``pieces`` one per ``interval_s``, reading what comes back; what the server
    sent until it closed the connection, and how long after the first piece it closed."""
    started = time.monotonic()
    received = b""
    for piece in pieces:
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            break
        chunk, closed_at = _read_until_closed(sock, interval_s)
        received += chunk
        if closed_at is not None:
            return received, closed_at - started
    rest, closed_at = _read_until_closed(sock, 5)
    assert closed_at is not None, f"the connection was kept open; got {received + rest!r}"
    return received + rest, closed_at - started


@pytest.mark.parametrize("route", ["webhook", "api"])
def test_slow_body_client_is_cut_off(guarded: tuple[ServerProcess, Api], route: str) -> None:
    """A client that sent its head, then its body one byte at a time, held its connection
    for as long as it went on (found by hand: 30 s and counting); granian bounds the head
    only. Now the body must all be in ``IPAAS_BODY_READ_TIMEOUT_S`` after its first read:
    a JSON 408 and the connection closed, on the intake's fast path and the routed API's
    alike (a chunked body there), and nothing accepted."""
    server, api = guarded
    workflow_id = api.slack_workflow("http://127.0.0.1:9/services/x", "x")
    body = json.dumps({"name": "slow", "padding": "x" * 60}).encode()
    if route == "webhook":
        head = (
            f"POST /api/webhooks/{workflow_id} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        pieces = [bytes([byte]) for byte in body]
    else:
        head = (
            f"POST /api/workflows HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: {api.headers['Authorization']}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        pieces = [b"1\r\n" + bytes([byte]) + b"\r\n" for byte in body] + [b"0\r\n\r\n"]
    assert len(pieces) * BYTE_INTERVAL_S > 3 * (BODY_READ_TIMEOUT_S + BODY_SWEEP_S + MARGIN_S)

    with contextlib.closing(_connect(server)) as sock:
        sock.sendall(head.encode())
        received, took = _trickle(sock, pieces, BYTE_INTERVAL_S)

    print(f"serving: slow-body client ({route}) cut off after {took:.2f}s")
    assert took < BODY_READ_TIMEOUT_S + BODY_SWEEP_S + MARGIN_S
    response_head, _, response_body = received.partition(b"\r\n\r\n")
    assert response_head.startswith(b"HTTP/1.1 408"), received[:300]
    assert b"connection: close" in response_head.lower()
    assert json.loads(response_body)["error"]["code"] == "body_timeout"
    assert api.executions(workflow_id=workflow_id) == []
    names = [w["name"] for w in api.get("/api/workflows").json()]
    assert "slow" not in names


def _webhook_head(workflow_id: str, body: bytes) -> bytes:
    """The head of a webhook carrying ``body``, on a connection closed after it."""
    return (
        f"POST /api/webhooks/{workflow_id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()


def test_a_body_in_pieces_within_the_deadline_is_taken(
    guarded: tuple[ServerProcess, Api],
) -> None:
    server, api = guarded
    workflow_id = api.slack_workflow("http://127.0.0.1:9/services/x", "x")
    body = b'{"order": {"id": 7}}'
    with contextlib.closing(_connect(server)) as sock:
        sock.sendall(_webhook_head(workflow_id, body))
        received, _ = _trickle(sock, [body[:5], body[5:10], body[10:]], BODY_READ_TIMEOUT_S / 4)
    assert received.startswith(b"HTTP/1.1 202"), received[:300]
    assert len(api.executions(workflow_id=workflow_id)) == 1


def test_a_burst_of_new_connections_waits_in_the_listen_queue(
    guarded: tuple[ServerProcess, Api],
) -> None:
    """600 senders connecting at the same instant: the connections the server has not
    accepted yet wait in the kernel's queue. granian's default queue of 128 dropped the
    SYNs of the rest, whose senders then waited a second to send them again (a burst of 600
    took 1.3 s, 0.2 s with a queue of 1024; measured by hand)."""
    server, api = guarded
    workflow_id = api.slack_workflow("http://127.0.0.1:9/services/x", "x")
    body = b'{"n": 1}'
    request = _webhook_head(workflow_id, body) + body

    async def one() -> tuple[float, bytes]:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        connected_s = time.monotonic() - started
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(), 60)
        writer.close()
        return connected_s, answer.split(b"\r\n", 1)[0]

    async def burst() -> list[tuple[float, bytes]]:
        return await asyncio.gather(*(one() for _ in range(600)))

    overflows = _listen_overflows()
    results = asyncio.run(burst())
    dropped = _listen_overflows() - overflows
    slowest = max(connected for connected, _ in results)
    print(f"serving: 600 connections at once, {dropped} dropped, the slowest in {slowest:.2f}s")
    assert Counter(status for _, status in results) == {b"HTTP/1.1 202 Accepted": 600}
    # Counted by the kernel, not timed here: how long a connect takes also depends on how
    # busy this client's event loop is (0.95 s once in a full run, nothing dropped).
    somaxconn = Path("/proc/sys/net/core/somaxconn").read_text().strip()
    assert dropped == 0, f"net.core.somaxconn is {somaxconn}; the server asks for 1024"


def _listen_overflows() -> int:
    """Connections the kernel dropped because a listening socket's queue was full (this
    network namespace's ``TcpExt: ListenOverflows``)."""
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()]
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names[0] == "TcpExt:":
            return int(values[names.index("ListenOverflows")])
    msg = "no TcpExt counters in /proc/net/netstat"
    raise AssertionError(msg)


def test_idle_keep_alive_connection_is_closed(guarded: tuple[ServerProcess, Api]) -> None:
    server, _ = guarded
    with contextlib.closing(_connect(server)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        response = b""
        while b'{"status":"ok"}' not in response:
            chunk = sock.recv(65536)
            assert chunk, response
            response += chunk
        assert response.startswith(b"HTTP/1.1 200"), response
        idle_from = time.monotonic()
        rest, closed_at = _read_until_closed(sock, HEADER_READ_TIMEOUT_S + 3 * MARGIN_S)

    assert rest == b""
    assert closed_at is not None, "the idle connection was kept open"
    idle = closed_at - idle_from
    print(f"serving: idle keep-alive connection closed after {idle:.2f}s")
    assert idle < HEADER_READ_TIMEOUT_S + MARGIN_S


def _get_with_header(server: ServerProcess, size: int) -> bytes:
    """``GET /healthz`` with one ``X-Filler`` header of ``size`` bytes; what came back."""
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: " + b"a" * size + b"\r\n\r\n"
    with contextlib.closing(_connect(server)) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        received, _ = _read_until_closed(sock, 5)
    return received


def test_a_malformed_chunked_webhook_is_a_json_400(guarded: tuple[ServerProcess, Api]) -> None:
    """granian tells the app a body it cannot read (a bad chunk size) as a disconnect; the
    webhook fast path left it unanswered and granian answered a bare 500 (found by hand).
    Now a 400 in the API's JSON shape, as the routed API answers it; nothing accepted."""
    server, api = guarded
    workflow_id = api.slack_workflow("http://127.0.0.1:9/services/x", "x")
    with _connect(server) as sock:
        sock.sendall(
            f"POST /api/webhooks/{workflow_id} HTTP/1.1\r\nHost: x\r\n"
            "Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
            "zz\r\n{}\r\n0\r\n\r\n".encode()
        )
        received, _ = _read_until_closed(sock, 5)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), received[:300]
    assert json.loads(body)["error"]["code"] == "bad_request"
    executions = api.get("/api/executions", params={"workflow_id": workflow_id}).json()
    assert executions["items"] == []


def test_oversized_header_is_refused(guarded: tuple[ServerProcess, Api]) -> None:
    server, _ = guarded
    # Within IPAAS_MAX_HEADER_BYTES (64 KiB): served.
    assert _get_with_header(server, 16 * 1024).startswith(b"HTTP/1.1 200")
    # Far beyond it: a 4xx or a closed connection, never served.
    received = _get_with_header(server, 200 * 1024)
    status = received.split(b"\r\n", 1)[0]
    print(f"serving: 200 KiB header answered {status!r}")
    assert received == b"" or status[9:10] == b"4", received[:300]


def test_a_trusted_proxys_scheme_reaches_the_app(
    make_server: Callable[..., ServerProcess], api_for: Callable[[ServerProcess], Api]
) -> None:
    """Through granian's real scope (the peer as it reports it), ``IPAAS_FORWARDED_ALLOW_IPS``
    makes a request the proxy took over HTTPS an HTTPS one (docs/operations.md)."""
    server = make_server(IPAAS_FORWARDED_ALLOW_IPS="127.0.0.1").start()
    api = api_for(server)
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    steps = [{"id": "s", "type": "http_request", "config": {"url": "https://example.com/"}}]
    made = api.client.post(
        "/api/workflows",
        json={"name": "proxied", "trigger": {"type": "webhook"}, "steps": steps},
        headers={**api.headers, **forwarded},
    )
    assert made.status_code == 201, made.text
    url = made.json()["webhook_url"]
    assert url == f"https://127.0.0.1:{server.port}/api/webhooks/{made.json()['id']}"
    cookies = api.client.get("/login", headers=forwarded).headers.get_list("set-cookie")
    assert cookies
    assert all("Secure" in c for c in cookies)
    fired = api.client.post(url.replace("https://", "http://"), json={}, headers=forwarded)
    assert fired.status_code == 202, fired.text
    # The same peer without the headers: plain HTTP, as it is.
    plain = api.get(f"/api/workflows/{made.json()['id']}")
    assert plain.json()["webhook_url"].startswith("http://127.0.0.1:")
    assert not any("Secure" in c for c in api.client.get("/login").headers.get_list("set-cookie"))


def test_it_serves_https_itself(
    tmp_path: Path,
    make_server: Callable[..., ServerProcess],
    api_for: Callable[[ServerProcess], Api],
) -> None:
    """``IPAAS_TLS_CERT_FILE`` / ``IPAAS_TLS_KEY_FILE``: HTTPS on the port, TLS 1.2 and 1.3,
    the URLs handed out and the console's cookies as HTTPS ones; plain HTTP is not served."""
    cert, key = self_signed(tmp_path)
    server = make_server(IPAAS_TLS_CERT_FILE=str(cert), IPAAS_TLS_KEY_FILE=str(key)).start()
    assert server.url.startswith("https://")
    api = api_for(server)
    steps = [{"id": "s", "type": "http_request", "config": {"url": "https://example.com/"}}]
    made = api.post(
        "/api/workflows", json={"name": "tls", "trigger": {"type": "webhook"}, "steps": steps}
    )
    assert made.status_code == 201, made.text
    url = made.json()["webhook_url"]
    assert url == f"https://127.0.0.1:{server.port}/api/webhooks/{made.json()['id']}"
    cookies = api.client.get("/login").headers.get_list("set-cookie")
    assert cookies
    assert all("Secure" in c for c in cookies)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = ssl.create_default_context(cafile=str(cert))
        context.minimum_version = context.maximum_version = version
        with httpx.Client(verify=context) as sender:
            fired = sender.post(url, json={"tls": version.name})
        assert fired.status_code == 202, (version, fired.text)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=2)


def test_a_dead_log_reader_does_not_stop_the_server(tmp_path: Path, standin: Standin) -> None:
    """stderr is a pipe whose reader died (a log shipper that crashed): every log write
    fails with EPIPE. Lines are lost; requests and deliveries are not. ``IPAAS_LOG_FLUSH_S=0``
    writes each line at once, in the request that logs it."""
    server = ServerProcess(tmp_path, env={"IPAAS_LOG_FLUSH_S": "0"})
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IPAAS_")}
    environ.update(server.env)
    read, write = os.pipe()
    os.close(read)  # nobody reads: every write to the pipe is EPIPE
    try:
        server.process = subprocess.Popen(
            server._argv(),
            cwd=tmp_path,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=write,
            stderr=write,
        )
    finally:
        os.close(write)
    try:
        server._wait_ready()
        api = Api(server.url).signup()
        workflow_id = api.slack_workflow(standin.slack_hook(), "piped {{ trigger.body.n }}")
        for n in range(20):
            fired = api.post(f"/api/webhooks/{workflow_id}", json={"n": n})
            assert fired.status_code == 202, fired.text
        wait_for(
            lambda: standin.stats()["slack_messages"],
            until=lambda sent: sent == 20,
            timeout_s=15,
            what="every delivery with the log pipe broken",
        )
        assert api.get("/healthz").status_code == 200
        api.close()
    finally:
        server.kill()


def _wait_running(api: Api, workflow_id: str) -> str:
    running = wait_for(
        lambda: api.executions(workflow_id=workflow_id, status="running"),
        timeout_s=10,
        what="an execution running",
    )
    assert len(running) == 1, running
    return str(running[0]["id"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_drains_running_and_keeps_the_rest_queued(
    make_server: Callable[..., ServerProcess],
    api_for: Callable[[ServerProcess], Api],
    standin: Standin,
    sig: signal.Signals,
) -> None:
    """SIGHUP too (a closed terminal, a log rotation's signal): it ended the server at once,
    exit status 129, with the running execution left to be run again after its lease."""
    server = make_server(IPAAS_WORKERS="1").start()
    api = api_for(server)
    workflow_id = api.slack_workflow(standin.slack_hook(), "drain {{ trigger.body.n }}")
    standin.add_fault("/services/", delay_s=2.0, count=None)
    fired = [api.fire(workflow_id, {"n": n}) for n in range(4)]
    running = _wait_running(api, workflow_id)

    signalled = time.monotonic()
    server.terminate(sig)
    assert server.wait(15) == 0, server.stderr_text()[-3000:]
    took = time.monotonic() - signalled
    print(f"serving: {sig.name} with one 2 s delivery running -> exit 0 after {took:.2f}s")
    server.assert_no_errors()

    statuses = server.statuses()
    assert statuses[running] == "succeeded"
    assert Counter(statuses[e] for e in fired if e != running) == {"queued": 3}
    assert standin.stats()["slack_messages"] == 1

    standin.reset()  # no more delays
    server.start()
    wait_for(
        lambda: api.executions(workflow_id=workflow_id),
        until=lambda items: all(e["status"] == "succeeded" for e in items),
        timeout_s=15,
        what="the queued executions finish after restart",
    )
    stats = standin.stats()
    assert stats["slack_messages"] == 3
    assert stats["slack_duplicate_texts"] == 0
    server.assert_no_errors()


def test_sigterm_after_grace_hands_the_execution_back(
    make_server: Callable[..., ServerProcess],
    api_for: Callable[[ServerProcess], Api],
    standin: Standin,
) -> None:
    grace_s = 1.0
    server = make_server(IPAAS_SHUTDOWN_GRACE_S=str(grace_s)).start()
    api = api_for(server)
    workflow_id = api.workflow(
        [
            {
                "id": "slow",
                "type": "http_request",
                "config": {"url": f"{standin.url}/slow", "query": {"seconds": "30"}},
            }
        ]
    )
    execution_id = api.fire(workflow_id, {"n": 1})
    assert _wait_running(api, workflow_id) == execution_id

    signalled = time.monotonic()
    server.terminate()
    assert server.wait(15) == 0, server.stderr_text()[-3000:]
    took = time.monotonic() - signalled
    print(f"serving: SIGTERM with a 30 s step, grace {grace_s:.0f}s -> exit 0 after {took:.2f}s")
    assert took < grace_s + MARGIN_S
    server.assert_no_errors()
    assert server.statuses() == {execution_id: "queued"}

    # The next start picks it up again (attempt 2); cancel it rather than wait 30 s.
    server.start()
    execution = wait_for(
        lambda: api.execution(execution_id),
        until=lambda e: e["status"] == "running",
        timeout_s=10,
        what="re-claimed after restart",
    )
    assert execution["attempt"] == 2
    assert api.post(f"/api/executions/{execution_id}/cancel").status_code == 200
    wait_for(
        lambda: api.execution(execution_id)["status"],
        until=lambda status: status == "cancelled",
        timeout_s=10,
        what="cancelled",
    )
