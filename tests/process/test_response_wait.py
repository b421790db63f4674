"""A webhook answered with its execution's result, through a real server: the request is
held open while a worker runs the steps (here: a delay of a second, then a transform), and
the answer is the rendered body."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from tests.process.conftest import Api, ServerProcess

pytestmark = pytest.mark.process


def test_the_answer_waits_for_the_steps(
    make_server: Callable[..., ServerProcess], api_for: Callable[[ServerProcess], Api]
) -> None:
    server = make_server().start()
    api = api_for(server)
    created = api.post(
        "/api/workflows",
        json={
            "name": "answer",
            "trigger": {
                "type": "webhook",
                "response": {"wait_s": 10, "body": "{{ steps.calc.output }}"},
            },
            "steps": [
                {"id": "wait", "type": "delay", "config": {"seconds": 1}},
                {
                    "id": "calc",
                    "type": "transform",
                    "config": {"value": {"n": "{{ trigger.body.n * 2 }}"}},
                },
            ],
        },
    )
    assert created.status_code == 201, created.text
    started = time.monotonic()
    r = httpx.post(f"{server.url}/api/webhooks/{created.json()['id']}", json={"n": 21}, timeout=15)
    took = time.monotonic() - started
    assert r.status_code == 200, r.text
    assert r.json() == {"n": 42}
    assert 1.0 <= took < 5, took
    assert api.execution(r.headers["x-execution-id"])["status"] == "succeeded"
    server.assert_no_errors()
