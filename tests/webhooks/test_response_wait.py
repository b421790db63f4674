"""A webhook answered with its execution's result (``response.wait_s``): the intake waits
for the execution, then renders ``response.body`` over the steps' outputs; a failure is a
502, an execution still running then the usual 202."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from ipaas.engine.worker import Worker
from ipaas.errors import StoreUnavailable
from ipaas.runtime import Runtime
from ipaas.webhooks import results
from tests.standins.server import StandinServer

CALC = {
    "id": "calc",
    "type": "transform",
    "config": {"value": {"total": "{{ trigger.body.lines | sum(attribute='qty') }}"}},
}
LINES = {"lines": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 3}]}


@pytest.fixture
async def worker(runtime: Runtime) -> AsyncIterator[Worker]:
    worker = Worker(runtime)
    await worker.start()
    yield worker
    await worker.stop(grace_s=0)


async def create(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    steps: list[dict[str, Any]],
    response: dict[str, Any],
) -> httpx.Response:
    return await client.post(
        "/api/workflows",
        json={
            "name": "answer",
            "trigger": {"type": "webhook", "response": response},
            "steps": steps,
        },
        headers=auth,
    )


async def workflow(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    steps: list[dict[str, Any]],
    response: dict[str, Any],
) -> str:
    created = await create(client, auth, steps, response)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


@pytest.mark.usefixtures("worker")
class TestWaited:
    async def test_one_expression_answers_its_json(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        wf = await workflow(client, auth, [CALC], {"wait_s": 5, "body": "{{ steps.calc.output }}"})
        r = await client.post(f"/api/webhooks/{wf}", json=LINES)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {"total": 5}
        detail = await client.get(f"/api/executions/{r.headers['x-execution-id']}", headers=auth)
        assert detail.json()["status"] == "succeeded"

    async def test_text_with_its_status_and_type_and_a_loop_s_list(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        labels = {
            "id": "labels",
            "type": "transform",
            "for_each": "{{ trigger.body.lines }}",
            "config": {"value": "{{ item.sku | upper }}"},
        }
        wf = await workflow(
            client,
            auth,
            [CALC, labels],
            {
                "wait_s": 5,
                "status": 201,
                "content_type": "text/markdown; charset=utf-8",
                "body": "*{{ steps.calc.output.total }}* for {{ steps.labels.output | join(',') }}",
            },
        )
        r = await client.post(f"/api/webhooks/{wf}", json=LINES)
        assert r.status_code == 201, r.text
        assert r.headers["content-type"] == "text/markdown; charset=utf-8"
        assert r.text == "*5* for A,B"

    async def test_what_a_remote_answered_a_step(
        self, client: httpx.AsyncClient, auth: dict[str, str], clean_standin: StandinServer
    ) -> None:
        """A slash command's reply from what a step fetched: a form body in, the reply out."""
        weather = {
            "id": "weather",
            "type": "http_request",
            "config": {
                "url": clean_standin.url + "/data/2.5/weather",
                "query": {"q": "{{ trigger.body.text }}", "appid": "good-key"},
            },
        }
        body = (
            '{"text": "{{ steps.weather.output.body.name }}: '
            '{{ steps.weather.output.body.main.temp }}"}'
        )
        wf = await workflow(
            client, auth, [weather], {"wait_s": 3, "body": body, "content_type": "application/json"}
        )
        r = await client.post(f"/api/webhooks/{wf}", data={"command": "/weather", "text": "Berlin"})
        assert r.status_code == 200, r.text
        assert r.json()["text"].startswith("Berlin: ")

    async def test_a_failed_execution_is_a_502_naming_it(
        self, client: httpx.AsyncClient, auth: dict[str, str], clean_standin: StandinServer
    ) -> None:
        post = {
            "id": "post",
            "type": "http_request",
            "retry": {"max_attempts": 1},
            "config": {
                "method": "POST",
                "url": clean_standin.url + "/services/T1/B1/x",
                "json": {},
            },
        }
        wf = await workflow(client, auth, [post], {"wait_s": 5, "body": "done"})
        r = await client.post(f"/api/webhooks/{wf}", json={})
        assert r.status_code == 502, r.text
        error = r.json()["error"]
        assert error["code"] == "execution_failed"
        assert error["details"]["status"] == "failed"
        assert "no_text" in error["message"]
        detail = await client.get(
            f"/api/executions/{error['details']['execution_id']}", headers=auth
        )
        assert detail.json()["status"] == "failed"

    async def test_still_running_at_the_end_of_the_wait_is_the_usual_202(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        wait = {"id": "wait", "type": "delay", "config": {"seconds": 60}}
        wf = await workflow(client, auth, [wait, CALC], {"wait_s": 0.3, "body": "done"})
        started = time.monotonic()
        r = await client.post(f"/api/webhooks/{wf}", json=LINES)
        assert 0.3 <= time.monotonic() - started < 2
        assert r.status_code == 202, r.text
        assert r.json()["status_url"] == f"/api/executions/{r.json()['execution_id']}"

    async def test_a_repeat_with_the_same_key_gets_the_same_answer(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        wf = await workflow(client, auth, [CALC], {"wait_s": 5, "body": "{{ execution.id }}"})
        first = await client.post(
            f"/api/webhooks/{wf}", json=LINES, headers={"Idempotency-Key": "k1"}
        )
        again = await client.post(
            f"/api/webhooks/{wf}", json=LINES, headers={"Idempotency-Key": "k1"}
        )
        assert (first.status_code, again.status_code) == (200, 200)
        assert first.text == again.text == first.headers["x-execution-id"]

    async def test_a_repeat_not_ended_in_time_is_answered_as_a_duplicate(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        """As a repeat of a trigger that does not wait: 200 with ``duplicate``, not a 202
        that would read as a new event."""
        wait = {"id": "wait", "type": "delay", "config": {"seconds": 60}}
        wf = await workflow(client, auth, [wait, CALC], {"wait_s": 0.2, "body": "done"})
        key = {"Idempotency-Key": "k2"}
        first = await client.post(f"/api/webhooks/{wf}", json=LINES, headers=key)
        again = await client.post(f"/api/webhooks/{wf}", json=LINES, headers=key)
        assert (first.status_code, again.status_code) == (202, 200), again.text
        execution_id = first.json()["execution_id"]
        assert again.json() == {
            "execution_id": execution_id,
            "status_url": f"/api/executions/{execution_id}",
            "duplicate": True,
        }


@pytest.mark.usefixtures("worker")
async def test_beyond_the_answers_that_may_wait_a_webhook_gets_its_202_at_once(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One answer may wait (``IPAAS_WEBHOOK_MAX_WAITING`` 1 here): while it waits for a
    delay, a second webhook is answered 202 at once, and the first still gets the 202 when
    its wait ends; the slot is free again afterwards."""
    monkeypatch.setattr(runtime.settings, "webhook_max_waiting", 1)
    wait = {"id": "wait", "type": "delay", "config": {"seconds": 60}}
    slow = await workflow(client, auth, [wait, CALC], {"wait_s": 1, "body": "done"})
    quick = await workflow(client, auth, [CALC], {"wait_s": 5, "body": "{{ steps.calc.output }}"})
    first = asyncio.create_task(client.post(f"/api/webhooks/{slow}", json=LINES))
    while results._waiting == 0:  # the first answer waits
        await asyncio.sleep(0.01)
    started = time.monotonic()
    second = await client.post(f"/api/webhooks/{quick}", json=LINES)
    assert time.monotonic() - started < 0.5
    assert second.status_code == 202, second.text
    assert (await first).status_code == 202
    assert results._waiting == 0
    third = await client.post(f"/api/webhooks/{quick}", json=LINES)
    assert (third.status_code, third.json()) == (200, {"total": 5})


@pytest.mark.usefixtures("worker")
async def test_with_no_answer_allowed_to_wait_every_webhook_gets_its_202_at_once(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime.settings, "webhook_max_waiting", 0)
    wf = await workflow(client, auth, [CALC], {"wait_s": 5, "body": "{{ steps.calc.output }}"})
    r = await client.post(f"/api/webhooks/{wf}", json=LINES)
    assert r.status_code == 202, r.text
    assert set(r.json()) == {"execution_id", "status_url"}


async def test_a_database_gone_during_the_wait_is_the_usual_202(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The execution is committed before the wait: a store outage while reading it back is
    answered as accepted, not with a 503 that would have the sender post it again."""
    wf = await workflow(client, auth, [CALC], {"wait_s": 5, "body": "done"})

    async def unavailable(*_: Any) -> None:
        raise StoreUnavailable("database unavailable")

    monkeypatch.setattr(runtime.store, "get_execution", unavailable)
    r = await client.post(f"/api/webhooks/{wf}", json=LINES)
    assert r.status_code == 202, r.text
    monkeypatch.undo()
    detail = await client.get(f"/api/executions/{r.json()['execution_id']}", headers=auth)
    assert detail.json()["status"] == "queued"  # no worker in this test: it waits for one


@pytest.mark.parametrize(
    ("response", "loc", "message"),
    [
        ({"wait_s": 0, "body": "x"}, ["trigger", "response", "wait_s"], "greater than 0"),
        ({"wait_s": 31, "body": "x"}, ["trigger", "response", "wait_s"], "less than or equal"),
        (
            {"wait_s": 5, "redirect": "https://example.com/"},
            ["trigger", "response"],
            "does not wait",
        ),
        ({"wait_s": 5, "body": "{{ steps.nope.output }}"}, ["trigger", "response", "body"], "nope"),
        (
            {"wait_s": 5, "body": "{{ steps.calc.output ) }}"},
            ["trigger", "response", "body"],
            "syntax",
        ),
    ],
)
async def test_a_bad_waiting_answer_is_a_422_at_the_field(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    response: dict[str, Any],
    loc: list[str],
    message: str,
) -> None:
    r = await create(client, auth, [CALC], response)
    assert r.status_code == 422, r.text
    details = r.json()["error"]["details"]
    assert any(d["loc"][1 : 1 + len(loc)] == loc and message in d["msg"] for d in details), details
