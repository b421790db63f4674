"""A webhook's query string, form fields and headers keep every value (webhooks/fields.py):
a name sent twice is a list, a header sent twice one joined line, an escape that is not
UTF-8 the text as sent. Before, the last value of a repeated name replaced the others and
``%E9`` in a query became U+FFFD, both without a word."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ipaas.api.app import create_app
from ipaas.runtime import Runtime
from ipaas.webhooks.fields import grouped, header_values, query_values
from tests.webhooks.conftest import NewWorkflow, executions_of


class TestQueryValues:
    @pytest.mark.parametrize(
        ("query_string", "expected"),
        [
            (b"", {}),
            (b"a=1", {"a": "1"}),
            (b"tag=a&tag=b&x=1&tag=c", {"tag": ["a", "b", "c"], "x": "1"}),
            (b"flag&empty=&=v", {"flag": "", "empty": "", "": "v"}),
            (b"a=1&&b=2&", {"a": "1", "b": "2"}),
            (b"q=caf%C3%A9+au+lait", {"q": "café au lait"}),
            (b"q=a%2Bb%26c%3Dd", {"q": "a+b&c=d"}),
            (b"x=1=2", {"x": "1=2"}),
            # Escapes that are not UTF-8: the text as sent, not U+FFFD.
            (b"name=Ren%E9&ok=%C3%A9", {"name": "Ren%E9", "ok": "é"}),
            (b"bad%FF=1", {"bad%FF": "1"}),
            (b"half=%E", {"half": "%E"}),
            # Bytes a sender did not escape: UTF-8 when they are, else one char per byte.
            ("q=café".encode(), {"q": "café"}),
            (b"q=caf\xe9", {"q": "caf\xe9"}),
        ],
    )
    def test_values(self, query_string: bytes, expected: dict[str, Any]) -> None:
        assert query_values(query_string) == expected


def test_grouped_keeps_order_and_lists_only_repeated_names() -> None:
    pairs = [("a", "1"), ("b", "2"), ("a", "3"), ("a", "4")]
    assert grouped(pairs) == {"a": ["1", "3", "4"], "b": "2"}
    assert list(grouped(pairs)) == ["a", "b"]


def test_header_values_join_repeated_lines() -> None:
    pairs = [
        ("x-tag", "a"),
        ("content-length", "2"),
        ("x-tag", "b"),
        ("cookie", "a=1"),
        ("connection", "keep-alive"),
        ("cookie", "b=2"),
        ("via", "1.1 proxy"),
    ]
    assert header_values(pairs) == {"x-tag": "a, b", "cookie": "a=1; b=2", "via": "1.1 proxy"}


class TestThroughTheIntake:
    """The same, as stored by ``POST /api/webhooks/{id}``."""

    async def test_query_form_and_headers_keep_every_value(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        workflow_id = await new_workflow()
        response = await client.post(
            f"/api/webhooks/{workflow_id}?tag=a&tag=b&name=Ren%E9&one=1",
            content=b"items=x&items=y&total=2",
            headers=[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-for", "198.51.100.2"),
                ("authorization", "Bearer one"),
                ("authorization", "Bearer two"),
            ],
        )
        assert response.status_code == 202, response.text
        (execution,) = executions_of(runtime, workflow_id)
        trigger = execution.trigger
        assert trigger.query == {"tag": ["a", "b"], "name": "Ren%E9", "one": "1"}
        assert trigger.body == {"items": ["x", "y"], "total": "2"}
        assert trigger.headers["x-forwarded-for"] == "203.0.113.7, 198.51.100.2"
        # A secret header stays masked, however many lines it came in.
        assert trigger.headers["authorization"] == "***"

    async def test_the_routed_intake_keeps_them_too(
        self, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        # With CORS on, a request with an Origin takes the app's route, not the fast path.
        workflow_id = await new_workflow()
        runtime.settings.cors_origins = ["https://console.example.com"]
        app = create_app(runtime=runtime, workers=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post(
                f"/api/webhooks/{workflow_id}?tag=a&tag=b",
                json={},
                headers=[
                    ("origin", "https://console.example.com"),
                    ("x-tag", "1"),
                    ("x-tag", "2"),
                ],
            )
        assert response.status_code == 202, response.text
        assert response.headers["access-control-allow-origin"] == "https://console.example.com"
        (execution,) = executions_of(runtime, workflow_id)
        assert execution.trigger.query == {"tag": ["a", "b"]}
        assert execution.trigger.headers["x-tag"] == "1, 2"

    async def test_templates_see_the_list(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        response = await client.post(
            "/api/workflows/dry-run",
            json={
                "name": "tags",
                "steps": [
                    {
                        "id": "call",
                        "type": "http_request",
                        "config": {
                            "url": "http://x.test",
                            "method": "POST",
                            "json": {
                                "tags": "{{ trigger.query.tag | join('+') }}",
                                "first": "{{ trigger.query.tag[0] }}",
                            },
                        },
                    }
                ],
                "trigger_sample": {"query": {"tag": ["a", "b"]}},
                "mode": "simulate",
            },
            headers=auth,
        )
        assert response.status_code == 200, response.text
        (step,) = response.json()["steps"]
        assert step["request"]["body"] == {"tags": "a+b", "first": "a"}

    async def test_a_query_of_more_than_1000_fields_is_422(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        # 64 KiB of empty fields took 32 ms of the event loop to read, and was stored whole.
        workflow_id = await new_workflow()
        query = "&".join(f"f{n}=1" for n in range(1000))
        ok = await client.post(f"/api/webhooks/{workflow_id}?{query}", json={})
        assert ok.status_code == 202, ok.text
        refused = await client.post(f"/api/webhooks/{workflow_id}?{query}&one=more", json={})
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert (error["code"], error["message"]) == (
            "invalid_query",
            "Query string has more than 1000 fields",
        )
        assert len(executions_of(runtime, workflow_id)) == 1
