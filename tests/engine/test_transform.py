"""Transform steps: the output is the rendered ``value``, for later steps to read; with
``for_each`` they map a list."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ipaas.runtime import Runtime
from tests.engine.test_when import Flow, posted, records
from tests.standins.server import StandinServer


@pytest.fixture
async def flow(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime, clean_standin: StandinServer
) -> Flow:
    return Flow(client, auth, runtime, clean_standin.url)


ORDER = {
    "first": "Ada",
    "last": "Lovelace",
    "lines": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 3}],
}


async def test_later_steps_read_the_shaped_value(flow: Flow, clean_standin: StandinServer) -> None:
    workflow_id = await flow.saved(
        [
            {
                "id": "calc",
                "type": "transform",
                "config": {
                    "value": {
                        "total": "{{ trigger.body.lines | sum(attribute='qty') }}",
                        "who": "{{ trigger.body.first }} {{ trigger.body.last }}",
                        "skus": "{{ trigger.body.lines | map(attribute='sku') | list }}",
                        "fixed": [1, None, True],
                    }
                },
            },
            flow.post("post", "{{ steps.calc.output.who }}: {{ steps.calc.output.total * 10 }}"),
        ]
    )
    detail = await flow.run(workflow_id, ORDER)
    assert detail["status"] == "succeeded", detail
    assert detail["steps"][0]["output"] == {
        "total": 5,
        "who": "Ada Lovelace",
        "skus": ["a", "b"],
        "fixed": [1, None, True],
    }
    assert posted(clean_standin) == [("post", "Ada Lovelace: 50")]


async def test_with_for_each_it_maps_a_list(flow: Flow, clean_standin: StandinServer) -> None:
    workflow_id = await flow.saved(
        [
            {
                "id": "labels",
                "type": "transform",
                "for_each": "{{ trigger.body.lines }}",
                "config": {"value": "{{ item.qty }} x {{ item.sku | upper }}"},
            },
            flow.post("post", "{{ steps.labels.output | join(', ') }}"),
        ]
    )
    detail = await flow.run(workflow_id, ORDER)
    assert records(detail) == [
        ("labels[0]", "succeeded"),
        ("labels[1]", "succeeded"),
        ("post", "succeeded"),
    ]
    assert posted(clean_standin) == [("post", "2 x A, 3 x B")]


async def test_a_simulated_dry_run_shows_the_value(flow: Flow) -> None:
    r = await flow.client.post(
        "/api/workflows/dry-run",
        json={
            "name": "t",
            "steps": [
                {"id": "t", "type": "transform", "config": {"value": "{{ trigger.body.n + 1 }}"}}
            ],
            "trigger_sample": {"body": {"n": 41}},
            "mode": "simulate",
        },
        headers=flow.auth,
    )
    assert r.status_code == 200, r.text
    [step] = r.json()["steps"]
    assert (step["output"], step["request"]) == (42, None)


@pytest.mark.parametrize(
    ("step", "loc", "message"),
    [
        ({"config": {}}, ["config", "value"], "Field required"),
        ({"config": {"value": 1, "extra": 2}}, ["config", "extra"], "Extra inputs"),
        ({"config": {"value": 1}, "credential_id": "cred_x"}, ["credential_id"], "no credential"),
    ],
)
async def test_a_bad_transform_is_a_422_at_the_field(
    flow: Flow, step: dict[str, Any], loc: list[str], message: str
) -> None:
    r = await flow.workflow([{"id": "t", "type": "transform", **step}])
    assert r.status_code == 422, r.text
    details = r.json()["error"]["details"]
    assert any(d["loc"][3:] == loc and message in d["msg"] for d in details), details
