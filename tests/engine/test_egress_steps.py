"""The SSRF guard in real executions: a step to a refused address fails with a clear,
non-retryable error, and the destination receives nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ipaas.config import Settings
from ipaas.engine.worker import Worker
from ipaas.runtime import Runtime
from tests.conftest import TEST_KEY
from tests.engine.test_worker import Api
from tests.standins.server import StandinServer


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The usual test settings, but loopback is not allowed: the stand-in is "internal"."""
    return Settings(
        env="test",
        database_url="memory://",
        secret_key=TEST_KEY,
        data_dir=tmp_path,
        log_format="console",
        log_level="warning",
        poll_interval_s=0.05,
    )


@pytest.fixture
async def api(
    client: httpx.AsyncClient, auth: dict[str, str], clean_standin: StandinServer
) -> AsyncIterator[Api]:
    return Api(client, auth, clean_standin.url)


@pytest.fixture
async def worker(runtime: Runtime) -> AsyncIterator[Worker]:
    worker = Worker(runtime)
    yield worker
    await worker.stop(grace_s=0)


def http_step(url: str) -> dict[str, Any]:
    return {"id": "call", "type": "http_request", "config": {"method": "POST", "url": url}}


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.1", "127.1 resolves to 127.0.0.1 (loopback)"),
        ("127.0.0.1", "127.0.0.1 is not a public address (loopback)"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1 is not a public address (loopback"),
        ("localhost", "localhost resolves to 127.0.0.1 (loopback)"),
        ("0x7f.0.0.1", "0x7f.0.0.1 resolves to 127.0.0.1 (loopback)"),
    ],
)
async def test_a_step_to_loopback_fails_clearly_and_sends_nothing(
    api: Api, worker: Worker, clean_standin: StandinServer, host: str, reason: str
) -> None:
    wf = await api.workflow([http_step(f"http://{host}:{clean_standin.port}/echo")])
    ex = await api.fire(wf, {"n": 1})
    await worker.run_until_empty()
    detail = await api.execution(ex)
    assert detail["status"] == "failed", detail
    [step] = detail["steps"]
    assert step["status"] == "failed"
    assert step["attempt"] == 1
    assert step["error"].startswith(f"egress_refused: {reason}"), step["error"]
    assert "IPAAS_EGRESS_ALLOW" in step["error"]
    assert clean_standin.requests() == []


async def test_a_credential_url_is_guarded_too(
    api: Api, worker: Worker, clean_standin: StandinServer
) -> None:
    """A Slack webhook URL from a credential goes through the same client."""
    cred = await api.credential(
        "slack", {"webhook_url": f"http://localhost:{clean_standin.port}/services/T/B/x"}
    )
    wf = await api.workflow(
        [{"id": "notify", "type": "slack_message", "credential_id": cred, "config": {"text": "hi"}}]
    )
    ex = await api.fire(wf, {})
    await worker.run_until_empty()
    [step] = (await api.execution(ex))["steps"]
    assert step["error"].startswith("egress_refused: localhost resolves to"), step["error"]
    assert clean_standin.requests() == []


async def test_a_metadata_url_fails_without_a_connection_attempt(api: Api, worker: Worker) -> None:
    wf = await api.workflow([http_step("http://169.254.169.254/latest/meta-data/iam/")])
    ex = await api.fire(wf, {})
    await worker.run_until_empty()
    [step] = (await api.execution(ex))["steps"]
    assert step["error"].startswith(
        "egress_refused: 169.254.169.254 is not a public address (cloud metadata)"
    )
