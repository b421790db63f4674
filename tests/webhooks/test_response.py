"""A webhook trigger's own ``response``: a text of the user's, or a redirect, for accepted
webhooks and their repeats; the execution's id in ``X-Execution-Id``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ipaas.runtime import Runtime
from tests.webhooks.conftest import NewWorkflow, executions_of
from tests.webhooks.test_signatures import (
    SLACK_BODY,
    SLACK_SECRET,
    signed_workflow,
    slack_headers,
)

FORM = {"content-type": "application/x-www-form-urlencoded"}


async def test_an_html_form_is_sent_on_to_a_thank_you_page(
    client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
) -> None:
    """A contact form posted straight to the URL: the browser follows a 303 with a GET,
    where the 202 and its JSON left the visitor looking at JSON."""
    workflow_id = await new_workflow(
        {"type": "webhook", "response": {"redirect": "https://example.com/thanks?from=form"}}
    )
    response = await client.post(
        f"/api/webhooks/{workflow_id}", content=b"name=Ada&email=ada%40example.com", headers=FORM
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "https://example.com/thanks?from=form"
    (stored,) = executions_of(runtime, workflow_id)
    assert response.headers["x-execution-id"] == stored.id
    assert stored.trigger.body == {"name": "Ada", "email": "ada@example.com"}


async def test_a_text_of_its_own_and_the_same_for_a_repeat(
    client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
) -> None:
    workflow_id = await new_workflow(
        {
            "type": "webhook",
            "response": {
                "status": 201,
                "body": "<p>Thanks, we got it.</p>",
                "content_type": "text/html; charset=utf-8",
            },
        }
    )
    url = f"/api/webhooks/{workflow_id}"
    headers = {"Idempotency-Key": "order-7"}
    first = await client.post(url, json={"order": 7}, headers=headers)
    again = await client.post(url, json={"order": 7}, headers=headers)
    (stored,) = executions_of(runtime, workflow_id)
    for response in (first, again):
        assert response.status_code == 201, response.text
        assert response.text == "<p>Thanks, we got it.</p>"
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.headers["x-execution-id"] == stored.id
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_a_status_alone(
    client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
) -> None:
    workflow_id = await new_workflow({"type": "webhook", "response": {"status": 204}})
    response = await client.post(f"/api/webhooks/{workflow_id}", json={})
    assert (response.status_code, response.content) == (204, b"")
    assert len(executions_of(runtime, workflow_id)) == 1


async def test_refusals_keep_their_json_errors(
    client: httpx.AsyncClient, new_workflow: NewWorkflow
) -> None:
    workflow_id = await new_workflow(
        {"type": "webhook", "response": {"redirect": "https://example.com/thanks"}}
    )
    response = await client.post(
        f"/api/webhooks/{workflow_id}",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_json"


class TestSlack:
    async def test_a_slash_commands_answer_is_shown_to_whoever_typed_it(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        runtime: Runtime,
        new_workflow: NewWorkflow,
    ) -> None:
        workflow_id = await signed_workflow(
            client,
            auth,
            new_workflow,
            "slack",
            {"secret": SLACK_SECRET},
            response={"body": "On it: the report follows in a minute."},
        )
        headers = slack_headers(SLACK_BODY) | FORM
        response = await client.post(
            f"/api/webhooks/{workflow_id}", content=SLACK_BODY, headers=headers
        )
        assert response.status_code == 200, response.text
        assert response.text == "On it: the report follows in a minute."
        (stored,) = executions_of(runtime, workflow_id)
        assert response.headers["x-execution-id"] == stored.id

    async def test_the_default_acknowledgement_names_the_execution_in_a_header(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        runtime: Runtime,
        new_workflow: NewWorkflow,
    ) -> None:
        workflow_id = await signed_workflow(
            client, auth, new_workflow, "slack", {"secret": SLACK_SECRET}
        )
        headers = slack_headers(SLACK_BODY) | FORM
        response = await client.post(
            f"/api/webhooks/{workflow_id}", content=SLACK_BODY, headers=headers
        )
        assert (response.status_code, response.content) == (200, b"")
        (stored,) = executions_of(runtime, workflow_id)
        assert response.headers["x-execution-id"] == stored.id


@pytest.mark.parametrize(
    ("response", "words"),
    [
        ({}, "give a status, a body or a redirect"),
        ({"redirect": "https://e.com/t", "body": "x"}, "a redirect has no body"),
        ({"redirect": "https://e.com/t", "status": 200}, "a redirect's status is one of"),
        ({"status": 302}, "status is 2xx"),
        ({"status": 204, "body": "x"}, "a 204 answer has no body"),
        ({"redirect": "javascript:alert(1)"}, "absolute http:// or https:// URL"),
        ({"redirect": "https://e.com/a\r\nSet-Cookie: x=1"}, "without spaces or line breaks"),
        ({"body": "x", "content_type": "text/html\r\nX: y"}, "one line of ASCII text"),
        ({"status": 200, "content_type": "text/html"}, "give a body"),
        ({"status": 99}, "greater than or equal to 200"),
        ({"body": "x" * (64 * 1024 + 1)}, "at most 65536 characters"),
        ({"redirect": "https://e.com", "unknown": 1}, "Extra inputs are not permitted"),
    ],
)
async def test_refused_when_saved(
    client: httpx.AsyncClient, auth: dict[str, str], response: dict[str, Any], words: str
) -> None:
    r = await client.post(
        "/api/workflows",
        json={
            "name": "w",
            "trigger": {"type": "webhook", "response": response},
            "steps": [{"id": "s", "type": "http_request", "config": {"url": "http://x.test"}}],
        },
        headers=auth,
    )
    assert r.status_code == 422, r.text
    assert words in str(r.json()["error"]["details"])


async def test_stored_as_given(
    client: httpx.AsyncClient, auth: dict[str, str], new_workflow: NewWorkflow
) -> None:
    workflow_id = await new_workflow(
        {"type": "webhook", "response": {"redirect": "https://Example.com/thanks"}}
    )
    read = await client.get(f"/api/workflows/{workflow_id}", headers=auth)
    assert read.json()["trigger"]["response"] == {"redirect": "https://Example.com/thanks"}
