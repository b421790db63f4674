"""``for_each`` steps: one call per item, each recorded on its own, so a retry runs only the
items not done; later steps see the outputs as a list."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from ipaas.config import Settings
from ipaas.engine.steps import MAX_LOOP_ITEMS
from ipaas.engine.worker import Worker
from ipaas.errors import StoreUnavailable
from ipaas.runtime import Runtime
from tests.standins.server import StandinServer

LINES = [{"sku": "apple"}, {"sku": "pear"}, {"sku": "plum"}]


@pytest.fixture
def settings(settings: Settings, each_store: str) -> Settings:
    return settings.model_copy(update={"database_url": each_store})


class Flow:
    def __init__(
        self, client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime, url: str
    ) -> None:
        self.client, self.auth, self.runtime, self.url = client, auth, runtime, url

    async def workflow(self, steps: list[dict[str, Any]]) -> httpx.Response:
        return await self.client.post(
            "/api/workflows", json={"name": "loop", "steps": steps}, headers=self.auth
        )

    async def run(self, workflow_id: str, body: Any) -> dict[str, Any]:
        fired = await self.client.post(f"/api/webhooks/{workflow_id}", json=body)
        assert fired.status_code == 202, fired.text
        execution_id = fired.json()["execution_id"]
        worker = Worker(self.runtime)
        try:
            for _ in range(200):
                await worker.run_until_empty()
                detail = (
                    await self.client.get(f"/api/executions/{execution_id}", headers=self.auth)
                ).json()
                if detail["status"] not in ("queued", "running"):
                    return dict(detail)
                await asyncio.sleep(0.02)
        finally:
            await worker.stop(grace_s=0)
        raise AssertionError(f"execution {execution_id} did not end: {detail}")

    def post_each(self, **step: Any) -> dict[str, Any]:
        """A step posting each item to its own Slack stand-in hook (``x<index>``)."""
        return {
            "id": "post",
            "type": "http_request",
            "for_each": "{{ trigger.body.lines }}",
            "config": {
                "method": "POST",
                "url": self.url + "/services/T1/B1/x{{ index }}",
                "json": {"text": "{{ index }}: {{ item.sku }}"},
            },
            "retry": {"initial_delay_s": 0.01},
            **step,
        }


@pytest.fixture
async def flow(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime, clean_standin: StandinServer
) -> Flow:
    return Flow(client, auth, runtime, clean_standin.url)


def delivered(standin: StandinServer) -> list[tuple[str, int]]:
    return [(r["path"], r["status"]) for r in standin.requests(kind="slack_webhook")]


async def test_each_item_is_a_call_and_later_steps_see_the_list(
    flow: Flow, clean_standin: StandinServer
) -> None:
    summary = {
        "id": "summary",
        "type": "http_request",
        "config": {
            "method": "POST",
            "url": flow.url + "/services/T1/B1/summary",
            "json": {"text": "{{ steps.post.output | map(attribute='body') | join(',') }}"},
        },
    }
    created = await flow.workflow([flow.post_each(), summary])
    assert created.status_code == 201, created.text
    detail = await flow.run(created.json()["id"], {"lines": LINES})
    assert detail["status"] == "succeeded", detail
    assert delivered(clean_standin) == [
        ("/services/T1/B1/x0", 200),
        ("/services/T1/B1/x1", 200),
        ("/services/T1/B1/x2", 200),
        ("/services/T1/B1/summary", 200),
    ]
    texts = [r["body"]["text"] for r in clean_standin.requests(kind="slack_webhook")]
    assert texts == ["0: apple", "1: pear", "2: plum", "ok,ok,ok"]
    assert [s["step_id"] for s in detail["steps"]] == ["post[0]", "post[1]", "post[2]", "summary"]
    assert detail["steps"][1]["input"]["json"] == {"text": "1: pear"}


async def test_a_retry_runs_only_the_items_not_done(
    flow: Flow, clean_standin: StandinServer
) -> None:
    """The second item's call fails once (503): the execution waits and comes back to it;
    the first item is not posted again, the third runs after the second succeeds."""
    created = await flow.workflow([flow.post_each()])
    httpx.post(
        f"{clean_standin.url}/_standin/faults",
        json={"path_prefix": "/services/T1/B1/x1", "status": 503, "count": 1},
    ).raise_for_status()
    detail = await flow.run(created.json()["id"], {"lines": LINES})
    assert detail["status"] == "succeeded", detail
    assert delivered(clean_standin) == [
        ("/services/T1/B1/x0", 200),
        ("/services/T1/B1/x1", 503),
        ("/services/T1/B1/x1", 200),
        ("/services/T1/B1/x2", 200),
    ]
    runs = [(s["step_id"], s["attempt"], s["status"]) for s in detail["steps"]]
    assert runs == [
        ("post[0]", 1, "succeeded"),
        ("post[1]", 1, "failed"),
        ("post[1]", 2, "succeeded"),
        ("post[2]", 1, "succeeded"),
    ]


@pytest.mark.parametrize(
    ("body", "ok", "words"),
    [
        ({}, True, None),  # a missing list is none: nothing to post
        ({"lines": []}, True, None),
        ({"lines": {"sku": "x"}}, False, "for_each must give a list, not dict"),
        ({"lines": "apple"}, False, "for_each must give a list, not text"),
        (
            {"lines": [{"sku": "x"}] * (MAX_LOOP_ITEMS + 1)},
            False,
            f"for_each gave {MAX_LOOP_ITEMS + 1} items; a step runs at most {MAX_LOOP_ITEMS}",
        ),
    ],
)
async def test_what_for_each_gives(
    flow: Flow, clean_standin: StandinServer, body: Any, ok: bool, words: str | None
) -> None:
    created = await flow.workflow([flow.post_each()])
    detail = await flow.run(created.json()["id"], body)
    assert delivered(clean_standin) == []
    if ok:
        assert detail["status"] == "succeeded", detail
        assert detail["steps"] == []
    else:
        assert detail["status"] == "failed", detail
        (step,) = detail["steps"]
        assert step["step_id"] == "post"
        assert words in step["error"]


async def test_a_simulated_dry_run_shows_each_request(flow: Flow) -> None:
    r = await flow.client.post(
        "/api/workflows/dry-run",
        json={
            "name": "loop",
            "steps": [flow.post_each()],
            "trigger_sample": {"body": {"lines": LINES[:2]}},
            "mode": "simulate",
        },
        headers=flow.auth,
    )
    assert r.status_code == 200, r.text
    steps = r.json()["steps"]
    assert [s["step_id"] for s in steps] == ["post[0]", "post[1]"]
    assert [s["request"]["body"] for s in steps] == [{"text": "0: apple"}, {"text": "1: pear"}]


@pytest.mark.parametrize(
    ("steps", "loc", "words"),
    [
        (
            [{"id": "f", "type": "filter", "for_each": "{{ trigger.body.x }}", "config": {}}],
            ["body", "steps", 0, "for_each"],
            "a filter step does not loop",
        ),
        (
            [
                {
                    "id": "a" * 60,
                    "type": "http_request",
                    "for_each": [1, 2],
                    "config": {"url": "http://x.test/{{ item }}"},
                }
            ],
            ["body", "steps", 0, "id"],
            "at most 59 characters",
        ),
        (
            [{"id": "s", "type": "http_request", "config": {"url": "http://x.test/{{ item }}"}}],
            ["body", "steps", 0, "url"],
            "(item and index: in a for_each step)",
        ),
        (
            [
                {
                    "id": "s",
                    "type": "http_request",
                    "for_each": "{{ steps.later.output }}",
                    "config": {"url": "http://x.test/"},
                },
                {"id": "later", "type": "http_request", "config": {"url": "http://x.test/"}},
            ],
            ["body", "steps", 0, "for_each"],
            "steps.later runs after this step",
        ),
        (
            [
                {
                    "id": "s",
                    "type": "http_request",
                    "for_each": "{{ trigger.body.x ",
                    "config": {"url": "http://x.test/"},
                }
            ],
            ["body", "steps", 0, "for_each"],
            "template syntax error",
        ),
        (
            [
                {
                    "id": "s",
                    "type": "http_request",
                    "for_each": "trigger.body.items",
                    "config": {"url": "http://x.test/"},
                }
            ],
            ["body", "steps", 0, "for_each"],
            "a template that gives one",
        ),
    ],
)
async def test_refused_when_saved(
    flow: Flow, steps: list[dict[str, Any]], loc: list[Any], words: str
) -> None:
    r = await flow.workflow(steps)
    assert r.status_code == 422, r.text
    details = r.json()["error"]["details"]
    assert any(d["loc"] == loc and words in d["msg"] for d in details), details


# -- items at once (``concurrency``) ---------------------------------------------------------


def hold_each_call(standin: StandinServer, seconds: float) -> None:
    """Every Slack hook call is answered ``seconds`` after it arrives (faults added before
    this one match first)."""
    standin.add_fault("/services/T1/B1/", status=None, delay_s=seconds, count=None)


def in_flight_max(standin: StandinServer) -> int:
    return int(standin.state.stats()["in_flight_max"])


@pytest.mark.parametrize(("concurrency", "at_most"), [(None, 1), (3, 3), (10, 7)])
async def test_items_run_up_to_concurrency_at_once_and_keep_their_order(
    flow: Flow, clean_standin: StandinServer, concurrency: int | None, at_most: int
) -> None:
    lines = [{"sku": f"s{n}"} for n in range(7)]
    summary = {
        "id": "summary",
        "type": "transform",
        "config": {"value": "{{ steps.post.output | map(attribute='status_code') | list }}"},
    }
    created = await flow.workflow([flow.post_each(concurrency=concurrency), summary])
    assert created.status_code == 201, created.text
    hold_each_call(clean_standin, 0.15)
    detail = await flow.run(created.json()["id"], {"lines": lines})
    assert detail["status"] == "succeeded", detail
    assert in_flight_max(clean_standin) == at_most
    assert sorted(delivered(clean_standin)) == [(f"/services/T1/B1/x{n}", 200) for n in range(7)]
    records = {s["step_id"]: s for s in detail["steps"]}
    assert sorted(records) == sorted([f"post[{n}]" for n in range(7)] + ["summary"])
    for n in range(7):
        assert records[f"post[{n}]"]["status"] == "succeeded"
        assert records[f"post[{n}]"]["input"]["json"] == {"text": f"{n}: s{n}"}
    assert records["summary"]["output"] == [200] * 7


async def test_a_retry_among_items_at_once_runs_only_that_item_again(
    flow: Flow, clean_standin: StandinServer
) -> None:
    """x1 fails once (503): no item starts after that; those in flight end and are
    recorded; the execution waits, and then runs only the items not done."""
    created = await flow.workflow([flow.post_each(concurrency=3)])
    clean_standin.add_fault("/services/T1/B1/x1", status=503, count=1)
    hold_each_call(clean_standin, 0.1)
    lines = [{"sku": f"s{n}"} for n in range(6)]
    detail = await flow.run(created.json()["id"], {"lines": lines})
    assert detail["status"] == "succeeded", detail
    calls = delivered(clean_standin)
    assert sorted(calls) == sorted(
        [(f"/services/T1/B1/x{n}", 200) for n in range(6)] + [("/services/T1/B1/x1", 503)]
    )
    runs = sorted((s["step_id"], s["attempt"], s["status"]) for s in detail["steps"])
    assert runs == sorted(
        [(f"post[{n}]", 1, "succeeded") for n in range(6) if n != 1]
        + [("post[1]", 1, "failed"), ("post[1]", 2, "succeeded")]
    )
    assert in_flight_max(clean_standin) <= 3


async def test_a_failure_among_items_at_once_fails_the_execution_after_those_in_flight(
    flow: Flow, clean_standin: StandinServer
) -> None:
    """x1 is refused (400: not retried) while x0 and x2 are in flight: they end and are
    recorded, no item starts after the failure, and the execution fails with x1's error."""
    created = await flow.workflow([flow.post_each(concurrency=3)])
    clean_standin.add_fault("/services/T1/B1/x1", status=400, count=1)
    hold_each_call(clean_standin, 0.3)
    lines = [{"sku": f"s{n}"} for n in range(6)]
    detail = await flow.run(created.json()["id"], {"lines": lines})
    assert detail["status"] == "failed", detail
    assert "400" in detail["error"]
    runs = sorted((s["step_id"], s["status"]) for s in detail["steps"])
    assert runs == [("post[0]", "succeeded"), ("post[1]", "failed"), ("post[2]", "succeeded")]
    assert sorted(delivered(clean_standin)) == [
        ("/services/T1/B1/x0", 200),
        ("/services/T1/B1/x1", 400),
        ("/services/T1/B1/x2", 200),
    ]


async def test_a_cancel_stops_every_call_in_flight(
    flow: Flow, runtime: Runtime, clean_standin: StandinServer
) -> None:
    step = flow.post_each(concurrency=3)
    step["config"] = {"method": "GET", "url": flow.url + "/slow?seconds=30&id=c{{ index }}"}
    created = await flow.workflow([step])
    worker = Worker(runtime)
    await worker.start()
    try:
        fired = await flow.client.post(
            f"/api/webhooks/{created.json()['id']}", json={"lines": LINES + LINES}
        )
        execution_id = fired.json()["execution_id"]
        await clean_standin.wait_until(
            lambda: len(clean_standin.state.slow_calls()) == 3, what="three calls in flight"
        )
        r = await flow.client.post(f"/api/executions/{execution_id}/cancel", headers=flow.auth)
        assert r.status_code in (200, 202), r.text
        path = f"/api/executions/{execution_id}"
        for _ in range(100):
            detail = (await flow.client.get(path, headers=flow.auth)).json()
            if detail["status"] == "cancelled":
                break
            await asyncio.sleep(0.02)
    finally:
        await worker.stop(grace_s=0)
    assert detail["status"] == "cancelled", detail
    runs = sorted((s["step_id"], s["status"]) for s in detail["steps"])
    assert runs == [(f"post[{n}]", "cancelled") for n in range(3)]
    await clean_standin.wait_until(
        lambda: all(c["outcome"] == "disconnected" for c in clean_standin.state.slow_calls()),
        what="every call in flight stopped",
    )
    assert sorted(c["id"] for c in clean_standin.state.slow_calls()) == ["c0", "c1", "c2"]


async def test_a_store_gone_past_the_lease_leaves_no_call_in_flight(
    flow: Flow, runtime: Runtime, clean_standin: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first item ends; its record cannot be written until the lease is over, so the
    execution is abandoned to the reaper: the two calls still in flight are stopped, not
    left running unowned (their items are not done, and run again when it is resumed)."""
    monkeypatch.setattr(runtime.settings, "lease_s", 0.3)

    async def unavailable(*_: Any) -> None:
        raise StoreUnavailable("database unavailable")

    monkeypatch.setattr(runtime.store, "record_step", unavailable)
    step = flow.post_each(concurrency=3)
    url = flow.url + "/slow?seconds={{ item.s }}&id=c{{ index }}"
    step["config"] = {"method": "GET", "url": url}
    created = await flow.workflow([step])
    worker = Worker(runtime)
    await worker.start()
    try:
        fired = await flow.client.post(
            f"/api/webhooks/{created.json()['id']}", json={"lines": [{"s": 0}, {"s": 30}] * 2}
        )
        assert fired.status_code == 202, fired.text
        await clean_standin.wait_until(
            lambda: (
                {c["id"]: c["outcome"] for c in clean_standin.state.slow_calls()}
                == {"c0": "completed", "c1": "disconnected", "c2": "completed"}
            ),
            timeout_s=5.0,
            what="the call still in flight stopped",
        )
        # c3 never started: no item starts once one cannot be recorded.
    finally:
        await worker.stop(grace_s=0)


@pytest.mark.parametrize(
    ("step", "loc", "words"),
    [
        ({"concurrency": 3}, ["body", "steps", 0, "concurrency"], "for a for_each step"),
        (
            {"for_each": "{{ trigger.body.x }}", "concurrency": 11},
            ["body", "steps", 0, "concurrency"],
            "less than or equal to 10",
        ),
        (
            {"for_each": "{{ trigger.body.x }}", "concurrency": 0},
            ["body", "steps", 0, "concurrency"],
            "greater than or equal to 1",
        ),
        (
            {"for_each": "{{ trigger.body.x }}", "concurrency": "3"},
            ["body", "steps", 0, "concurrency"],
            "valid integer",
        ),
    ],
)
async def test_a_bad_concurrency_is_a_422_at_the_field(
    flow: Flow, step: dict[str, Any], loc: list[Any], words: str
) -> None:
    r = await flow.workflow(
        [{"id": "s", "type": "http_request", "config": {"url": "http://x.test/"}, **step}]
    )
    assert r.status_code == 422, r.text
    details = r.json()["error"]["details"]
    assert any(d["loc"] == loc and words in d["msg"] for d in details), details
