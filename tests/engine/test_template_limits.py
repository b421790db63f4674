"""Template limits in real executions: a hostile template fails its step with a clear error,
and the same worker goes on to run the next execution; a tenant over its share of render time
waits while others run."""

from __future__ import annotations

import asyncio
import re
import resource
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pydantic
import pytest

from ipaas.config import Settings
from ipaas.engine.templating import TemplateRenderer
from ipaas.engine.worker import Worker
from ipaas.runtime import Runtime
from ipaas.stores.memory import MemoryStore
from tests.conftest import signup
from tests.engine.test_templating import HOSTILE, _Clock
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
    api: Api,
    client: httpx.AsyncClient,
    worker: Worker,
    clean_standin: StandinServer,
    source: str,
    message: str,
) -> None:
    """The next execution is another tenant's: the hostile tenant's own next one waits for
    its render share when the cut render took a burst (0.25 s) or more, which depends on
    the machine's speed (``test_a_tenant_over_its_render_share_waits_and_others_run``)."""
    other = await signup(client, "other@example.com")
    other_api = Api(client, {"Authorization": other["Authorization"]}, clean_standin.url)
    hostile = await api.workflow([echo_step(api.standin_url, source)])
    fine = await other_api.workflow([echo_step(api.standin_url, "n={{ trigger.body.n }}")])
    rss_before = _max_rss_mib()
    started = time.monotonic()
    bad = await api.fire(hostile, {"big": "ab" * 500_000, "order": {"id": 1}})
    good = await other_api.fire(fine, {"n": 2})
    await worker.run_until_empty()
    elapsed = time.monotonic() - started

    failed = await api.execution(bad)
    assert failed["status"] == "failed", failed
    [step] = failed["steps"]
    assert step["status"] == "failed"
    assert step["error"].startswith("config.body: "), step["error"]
    assert re.search(message, step["error"]), step["error"]

    succeeded = await other_api.execution(good)
    assert succeeded["status"] == "succeeded", succeeded
    assert [r["body"] for r in clean_standin.requests(kind="echo")] == ["n=2"]
    assert elapsed < 3.0
    assert _max_rss_mib() - rss_before < 150


async def test_a_tenant_over_its_render_share_waits_and_others_run(
    client: httpx.AsyncClient, runtime: Runtime, worker: Worker, clean_standin: StandinServer
) -> None:
    """A tenant whose renders took their share of the process is deferred (the step records
    ``template_share`` and runs when the share has come back, at no attempt's cost) while
    another tenant's execution runs at once."""
    clock = _Clock()
    runtime.templates = TemplateRenderer(timeout_s=0.3, tenant_share=1.0, clock=clock)
    heavy = await signup(client, "heavy@example.com")
    other = await signup(client, "other@example.com")
    heavy_api = Api(client, {"Authorization": heavy["Authorization"]}, clean_standin.url)
    other_api = Api(client, {"Authorization": other["Authorization"]}, clean_standin.url)
    step = echo_step(clean_standin.url, "n={{ trigger.body.n }}")
    heavy_wf, other_wf = await heavy_api.workflow([step]), await other_api.workflow([step])
    # The heavy tenant's earlier renders took 0.8 s of the loop: its whole bucket (0.3 s)
    # and 0.5 s more, which it pays back over the next 0.5 s.
    runtime.templates.render(heavy["tenant_id"], "{{ spend(0.8) }}", {"spend": clock.spend})

    waiting = await heavy_api.fire(heavy_wf, {"n": 1})
    ran = await other_api.fire(other_wf, {"n": 2})
    await worker.run_until_empty()
    deferred = await heavy_api.execution(waiting)
    assert deferred["status"] == "queued", deferred
    [step_run] = deferred["steps"]
    assert (step_run["error_code"], step_run["attempt"]) == ("template_share", 1)
    assert "IPAAS_TEMPLATE_TENANT_SHARE" in step_run["error"]
    assert step_run["next_attempt_at"] is not None
    assert (await other_api.execution(ran))["status"] == "succeeded"
    assert [r["body"] for r in clean_standin.requests(kind="echo")] == ["n=2"]

    await asyncio.sleep(0.9)  # the whole bucket is back (1 s per second)
    await worker.run_until_empty()
    done = await heavy_api.execution(waiting)
    assert done["status"] == "succeeded", done
    # The template_share record was replaced by the real first attempt: no attempt spent.
    assert [(s["attempt"], s["status"]) for s in done["steps"]] == [(1, "succeeded")]
    assert [r["body"] for r in clean_standin.requests(kind="echo")] == ["n=2", "n=1"]


def test_the_runtime_renders_with_the_settings(settings: Settings) -> None:
    runtime = Runtime.build(
        settings.model_copy(update={"template_timeout_s": 0.2, "template_tenant_share": 0.5}),
        store=MemoryStore(),
    )
    assert (runtime.templates.timeout_s, runtime.templates.tenant_share) == (0.2, 0.5)
    assert runtime.templates.burst_s == 0.2  # never more than one render's timeout
    for bad in ("0", "1.5", "-0.1"):
        with pytest.raises(pydantic.ValidationError, match="template_tenant_share"):
            Settings(template_tenant_share=bad)
