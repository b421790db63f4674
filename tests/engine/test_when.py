"""A step's ``when``: the step runs only when its condition holds, else it is recorded
``skipped`` and the next step runs (two steps with opposite conditions make an if/else)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ipaas.runtime import Runtime
from tests.engine.test_for_each import Flow as LoopFlow
from tests.standins.server import StandinServer


class Flow(LoopFlow):
    def post(self, step_id: str, text: str, **step: Any) -> dict[str, Any]:
        """A step posting ``text`` to its own Slack stand-in hook (``/<step_id>``)."""
        return {
            "id": step_id,
            "type": "http_request",
            "config": {
                "method": "POST",
                "url": f"{self.url}/services/T1/B1/{step_id}",
                "json": {"text": text},
            },
            "retry": {"initial_delay_s": 0.01},
            **step,
        }

    async def saved(self, steps: list[dict[str, Any]]) -> str:
        created = await self.workflow(steps)
        assert created.status_code == 201, created.text
        return str(created.json()["id"])


@pytest.fixture
async def flow(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime, clean_standin: StandinServer
) -> Flow:
    return Flow(client, auth, runtime, clean_standin.url)


def posted(standin: StandinServer) -> list[tuple[str, str]]:
    return [(r["path"].rsplit("/", 1)[1], r["body"]["text"]) for r in standin.requests()]


def records(detail: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["step_id"], s["status"]) for s in detail["steps"]]


async def test_two_opposite_conditions_make_an_if_else(
    flow: Flow, clean_standin: StandinServer
) -> None:
    workflow_id = await flow.saved(
        [
            flow.post(
                "big", "big {{ trigger.body.amount }}", when="{{ trigger.body.amount > 100 }}"
            ),
            flow.post(
                "small", "small {{ trigger.body.amount }}", when="{{ trigger.body.amount <= 100 }}"
            ),
            flow.post("after", "{{ steps.big.status }}/{{ steps.small.status }}"),
        ]
    )
    large = await flow.run(workflow_id, {"amount": 150})
    assert large["status"] == "succeeded", large
    assert records(large) == [("big", "succeeded"), ("small", "skipped"), ("after", "succeeded")]
    skipped = large["steps"][1]
    assert (skipped["input"], skipped["output"], skipped["error"]) == ({"when": False}, None, None)
    modest = await flow.run(workflow_id, {"amount": 50})
    assert records(modest) == [("big", "skipped"), ("small", "succeeded"), ("after", "succeeded")]
    assert posted(clean_standin) == [
        ("big", "big 150"),
        ("after", "succeeded/skipped"),
        ("small", "small 50"),
        ("after", "skipped/succeeded"),
    ]


async def test_a_missing_field_or_a_literal_false_skips_and_a_last_skip_succeeds(
    flow: Flow, clean_standin: StandinServer
) -> None:
    workflow_id = await flow.saved(
        [
            flow.post("first", "first", when=False),
            flow.post("last", "last", when="{{ trigger.body.paid }}"),
        ]
    )
    detail = await flow.run(workflow_id, {"id": 1})
    assert detail["status"] == "succeeded", detail
    assert records(detail) == [("first", "skipped"), ("last", "skipped")]
    assert detail["steps"][1]["input"] == {"when": None}
    assert posted(clean_standin) == []
    paid = await flow.run(workflow_id, {"paid": "true"})  # a form's text counts too
    assert records(paid) == [("first", "skipped"), ("last", "succeeded")]


async def test_a_condition_that_is_not_a_boolean_fails_the_step(
    flow: Flow, clean_standin: StandinServer
) -> None:
    workflow_id = await flow.saved(
        [flow.post("first", "first", when="{{ trigger.body.flag }}"), flow.post("then", "then")]
    )
    detail = await flow.run(workflow_id, {"flag": "yes"})
    assert detail["status"] == "failed"
    assert records(detail) == [("first", "failed")]
    assert detail["steps"][0]["error"].startswith("when: the condition must be true or false")
    assert posted(clean_standin) == []


async def test_a_loop_is_skipped_whole_or_runs_every_item(
    flow: Flow, clean_standin: StandinServer
) -> None:
    workflow_id = await flow.saved(
        [
            flow.post(
                "each",
                "{{ item }}",
                for_each="{{ trigger.body.items }}",
                when="{{ trigger.body.items | length > 1 }}",
            )
        ]
    )
    one = await flow.run(workflow_id, {"items": ["a"]})
    assert records(one) == [("each", "skipped")]
    two = await flow.run(workflow_id, {"items": ["a", "b"]})
    assert records(two) == [("each[0]", "succeeded"), ("each[1]", "succeeded")]
    assert posted(clean_standin) == [("each", "a"), ("each", "b")]


async def test_a_retry_after_a_skip_does_not_skip_again(
    flow: Flow, clean_standin: StandinServer
) -> None:
    """The skip is a completed record: the retry of the step after it reuses it."""
    workflow_id = await flow.saved(
        [flow.post("maybe", "maybe", when="{{ false }}"), flow.post("then", "then")]
    )
    httpx.post(
        f"{clean_standin.url}/_standin/faults",
        json={"path_prefix": "/services/T1/B1/then", "status": 503, "count": 1},
    ).raise_for_status()
    detail = await flow.run(workflow_id, {})
    assert detail["status"] == "succeeded", detail
    assert records(detail) == [("maybe", "skipped"), ("then", "failed"), ("then", "succeeded")]


async def test_a_dry_run_shows_the_skip(flow: Flow, clean_standin: StandinServer) -> None:
    r = await flow.client.post(
        "/api/workflows/dry-run",
        json={
            "name": "branch",
            "steps": [
                flow.post("maybe", "maybe", when="{{ trigger.body.go }}"),
                flow.post("b", "b"),
            ],
            "trigger_sample": {"body": {"go": False}},
            "mode": "simulate",
        },
        headers=flow.auth,
    )
    assert r.status_code == 200, r.text
    assert [(s["step_id"], s["status"]) for s in r.json()["steps"]] == [
        ("maybe", "skipped"),
        ("b", "simulated"),
    ]
    assert posted(clean_standin) == []


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("yes", "when is true, false, or a template"),
        ("{{ trigger.body.x ==  }}", "template syntax error"),
        ("{{ steps.later.output }}", "later"),
        ("{{ item.paid }}", "item"),
        (5, "valid string"),
        (1, "valid boolean"),
    ],
)
async def test_a_bad_when_is_a_422_at_the_field(flow: Flow, when: Any, message: str) -> None:
    r = await flow.workflow([flow.post("first", "x", when=when), flow.post("later", "y")])
    assert r.status_code == 422, r.text
    details = r.json()["error"]["details"]
    assert any(d["loc"][3] == "when" and message in d["msg"] for d in details), details
