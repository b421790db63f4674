"""Template limits in real executions: a hostile template fails its step with a clear error,
and the same worker goes on to run the next execution."""

from __future__ import annotations

import re
import resource
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from ipaas.engine.worker import Worker
from ipaas.runtime import Runtime
from tests.engine.test_templating import HOSTILE
from tests.engine.test_worker import Api
from tests.standins.server import StandinServer


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


def echo_step(url: str, body: str) -> dict[str, Any]:
    return {
        "id": "call",
        "type": "http_request",
        "config": {"method": "POST", "url": f"{url}/echo", "body": body},
    }


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(("source", "message"), HOSTILE)
async def test_a_hostile_template_fails_its_step_and_the_worker_goes_on(
    api: Api, worker: Worker, clean_standin: StandinServer, source: str, message: str
) -> None:
    hostile = await api.workflow([echo_step(api.standin_url, source)])
    fine = await api.workflow([echo_step(api.standin_url, "n={{ trigger.body.n }}")])
    rss_before = _max_rss_mib()
    started = time.monotonic()
    bad = await api.fire(hostile, {"big": "ab" * 500_000, "order": {"id": 1}})
    good = await api.fire(fine, {"n": 2})
    await worker.run_until_empty()
    elapsed = time.monotonic() - started

    failed = await api.execution(bad)
    assert failed["status"] == "failed", failed
    [step] = failed["steps"]
    assert step["status"] == "failed"
    assert step["error"].startswith("config.body: "), step["error"]
    assert re.search(message, step["error"]), step["error"]

    succeeded = await api.execution(good)
    assert succeeded["status"] == "succeeded", succeeded
    assert [r["body"] for r in clean_standin.requests(kind="echo")] == ["n=2"]
    assert elapsed < 3.0
    assert _max_rss_mib() - rss_before < 150
