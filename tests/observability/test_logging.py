from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from ipaas.api.app import create_app
from ipaas.config import Settings
from ipaas.engine.worker import Worker
from ipaas.observability.logging import LOG_BUFFER_CHARS, BufferedLogger, LineBuffer
from ipaas.runtime import Runtime
from ipaas.stores.memory import MemoryStore
from tests.conftest import signup
from tests.standins.server import StandinServer

SENTINEL = "SENTINELsecretXYZ"


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_json_logs_carry_ids_and_never_secrets(
    settings: Settings, clean_standin: StandinServer, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings.model_copy(update={"log_format": "json", "log_level": "info"})
    runtime = Runtime.build(settings, store=MemoryStore())
    app = create_app(runtime=runtime, workers=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            auth = await signup(client)
            tenant_id = auth.pop("tenant_id")
            cred = await client.post(
                "/api/credentials",
                json={
                    "name": "s",
                    "type": "slack",
                    "secret": {
                        "webhook_url": clean_standin.slack_webhook_url(f"T0/B0/unknown{SENTINEL}")
                    },
                },
                headers=auth,
            )
            wf = await client.post(
                "/api/workflows",
                json={
                    "name": "w",
                    "steps": [
                        {
                            "id": "n",
                            "type": "slack_message",
                            "credential_id": cred.json()["id"],
                            "config": {"text": "hi"},
                        }
                    ],
                },
                headers={**auth, "X-Request-ID": "req-from-caller"},
            )
            ex = await client.post(f"/api/webhooks/{wf.json()['id']}", json={"a": 1})
            await Worker(runtime).run_until_empty()
            detail = await client.get(f"/api/executions/{ex.json()['execution_id']}", headers=auth)
    assert detail.json()["status"] == "failed"
    out = capsys.readouterr()
    logged = lines(out.err + out.out)
    assert SENTINEL not in out.err + out.out
    requests = [e for e in logged if e["event"] == "request"]
    create = next(e for e in requests if e["path"] == "/api/workflows")
    assert create["request_id"] == "req-from-caller"
    assert create["tenant_id"] == tenant_id
    assert create["status"] == 201
    assert all(e["request_id"] for e in requests)
    finished = [e for e in logged if e["event"] == "execution_finished"]
    assert finished[0]["execution_id"] == ex.json()["execution_id"]
    assert finished[0]["tenant_id"] == tenant_id
    assert finished[0]["status"] == "failed"


class TestLineBuffer:
    """Info lines are batched (``IPAAS_LOG_FLUSH_S``); warnings are written at once."""

    def test_info_lines_wait_for_the_tick_in_order(self) -> None:
        out = io.StringIO()
        buffer = LineBuffer(out, flush_s=0.05)
        try:
            logger = BufferedLogger(buffer)
            for n in range(3):
                logger.info(f"line {n}")
            assert out.getvalue() == ""
            deadline = time.monotonic() + 5
            while not out.getvalue() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert out.getvalue() == "line 0\nline 1\nline 2\n"
        finally:
            buffer.close()

    def test_a_warning_writes_everything_before_it_at_once(self) -> None:
        out = io.StringIO()
        buffer = LineBuffer(out, flush_s=60)
        try:
            logger = BufferedLogger(buffer)
            logger.info("first")
            logger.warning("second")
            assert out.getvalue() == "first\nsecond\n"
            logger.error("third")
            assert out.getvalue().endswith("third\n")
        finally:
            buffer.close()

    def test_a_full_buffer_is_written_at_once(self) -> None:
        out = io.StringIO()
        buffer = LineBuffer(out, flush_s=60)
        try:
            line = "x" * 1000
            for _ in range(LOG_BUFFER_CHARS // 1000 + 1):
                BufferedLogger(buffer).info(line)
            assert len(out.getvalue()) > LOG_BUFFER_CHARS
        finally:
            buffer.close()

    def test_zero_writes_every_line_at_once(self) -> None:
        out = io.StringIO()
        BufferedLogger(LineBuffer(out, flush_s=0)).info("now")
        assert out.getvalue() == "now\n"

    @pytest.mark.parametrize("failure", [BrokenPipeError(32, "Broken pipe"), "closed"])
    def test_a_stream_that_fails_loses_lines_not_the_work(self, failure: object) -> None:
        """Whatever reads the logs died (a broken pipe), or the stream was closed: a
        warning, written at once, must not raise into the code that logged it."""

        class Failing(io.StringIO):
            broken = True

            def write(self, text: str) -> int:
                if self.broken:
                    if failure == "closed":
                        raise ValueError("I/O operation on closed file.")
                    raise failure  # type: ignore[misc]
                return super().write(text)

        out = Failing()
        buffer = LineBuffer(out, flush_s=60)
        try:
            logger = BufferedLogger(buffer)
            logger.info("kept")
            logger.warning("written at once")  # raised before
            assert buffer.dropped == 2
            out.broken = False  # the stream works again: later lines are written
            logger.error("after")
            assert out.getvalue() == "after\n"
        finally:
            buffer.close()

    def test_kept_lines_are_written_when_the_process_exits(self) -> None:
        script = (
            "from ipaas.config import Settings\n"
            "from ipaas.observability.logging import configure_logging\n"
            "import structlog\n"
            "configure_logging(Settings(env='test', log_flush_s=10))\n"
            "structlog.get_logger().info('kept_until_exit')\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert [line["event"] for line in lines(done.stderr)] == ["kept_until_exit"]
