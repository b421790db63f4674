"""``for_each`` steps: one call per item, each recorded on its own, so a retry runs only the
items not done; later steps see the outputs as a list."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from ipaas.engine.steps import MAX_LOOP_ITEMS
from ipaas.engine.worker import Worker
from ipaas.runtime import Runtime
from tests.standins.server import StandinServer

LINES = [{"sku": "apple"}, {"sku": "pear"}, {"sku": "plum"}]


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
