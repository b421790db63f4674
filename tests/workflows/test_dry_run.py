from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from ipaas.runtime import Runtime
from tests.standins.server import StandinServer

SENTINEL = "SENTINELsecretXYZ"


@pytest.fixture
async def creds(
    client: httpx.AsyncClient, auth: dict[str, str], clean_standin: StandinServer
) -> dict[str, str]:
    async def make(type_: str, secret: dict[str, Any]) -> str:
        r = await client.post(
            "/api/credentials",
            json={"name": type_, "type": type_, "secret": secret},
            headers=auth,
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    return {
        "slack": await make(
            "slack", {"webhook_url": clean_standin.slack_webhook_url(f"T000/B000/{SENTINEL}")}
        ),
        "weather": await make("openweather", {"api_key": SENTINEL, "base_url": clean_standin.url}),
        "http": await make("http", {"base_url": clean_standin.url, "bearer_token": SENTINEL}),
    }


async def dry_run(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    steps: list[dict[str, Any]],
    *,
    simulate: bool = False,
) -> httpx.Response:
    mode = {"mode": "simulate"} if simulate else {}
    return await client.post(
        "/api/workflows/dry-run", json={"name": "t", "steps": steps, **mode}, headers=auth
    )


def slack_steps(cred: str) -> list[dict[str, Any]]:
    return [
        {
            "id": "notify",
            "type": "slack_message",
            "credential_id": cred,
            "config": {"text": "Order {{ trigger.body.id }}"},
        }
    ]


class TestRunMode:
    async def test_sends_and_persists_nothing(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        creds: dict[str, str],
        runtime: Runtime,
        clean_standin: StandinServer,
    ) -> None:
        r = await client.post(
            "/api/workflows/dry-run",
            json={
                "name": "t",
                "steps": slack_steps(creds["slack"]),
                "trigger_sample": {"body": {"id": 7}},
            },
            headers=auth,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["mode"] == "run"
        assert body["status"] == "succeeded"
        [step] = body["steps"]
        assert step["input"] == {"text": "Order 7"}
        assert step["output"]["status_code"] == 200
        assert [q["body"] for q in clean_standin.requests()] == [{"text": "Order 7"}]
        assert runtime.store.executions == {}  # type: ignore[attr-defined]
        assert runtime.store.workflows == {}  # type: ignore[attr-defined]
        assert SENTINEL not in r.text

    async def test_the_samples_headers_are_read_as_a_webhooks(
        self, client: httpx.AsyncClient, auth: dict[str, str], creds: dict[str, str]
    ) -> None:
        steps = [
            {
                "id": "notify",
                "type": "slack_message",
                "credential_id": creds["slack"],
                "config": {
                    "text": "{{ trigger.headers['x-shop-topic'] }} "
                    "{{ trigger.headers.authorization }}"
                },
            }
        ]
        sample = {"headers": {"X-Shop-Topic": "orders/create", "Authorization": "Bearer x"}}
        r = await client.post(
            "/api/workflows/dry-run",
            json={"name": "t", "mode": "simulate", "steps": steps, "trigger_sample": sample},
            headers=auth,
        )
        assert r.status_code == 200, r.text
        assert r.json()["steps"][0]["input"] == {"text": "orders/create ***"}

    async def test_failure_is_reported_not_raised(
        self, client: httpx.AsyncClient, auth: dict[str, str], clean_standin: StandinServer
    ) -> None:
        r = await client.post(
            "/api/workflows/dry-run",
            json={
                "name": "t",
                "steps": [
                    {
                        "id": "w",
                        "type": "http_request",
                        "config": {"url": f"{clean_standin.url}/echo?standin_status=500"},
                    }
                ],
            },
            headers=auth,
        )
        assert r.status_code == 200
        assert r.json()["status"] == "failed"
        assert "500" in r.json()["steps"][0]["error"]


class TestSimulate:
    async def test_seed_example_shows_the_request_and_sends_nothing(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        creds: dict[str, str],
        clean_standin: StandinServer,
    ) -> None:
        r = await client.post(
            "/api/workflows/dry-run",
            json={
                "name": "Test Slack",
                "trigger_type": "webhook",
                "action_type": "slack_message",
                "config_json": json.dumps(
                    {"credential_id": creds["slack"], "slack_message": "Test"}
                ),
                "mode": "simulate",
            },
            headers=auth,
        )
        assert r.status_code == 200, r.text
        [step] = r.json()["steps"]
        assert step["step_id"] == "action"
        assert step["status"] == "simulated"
        request = step["request"]
        assert request["method"] == "POST"
        assert request["url"] == f"{clean_standin.url}/***"
        assert request["body"] == {"text": "Test"}
        assert request["headers"]["content-type"].startswith("application/json")
        assert clean_standin.requests() == []
        assert SENTINEL not in r.text

    async def test_query_and_header_secrets_are_masked(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        creds: dict[str, str],
        clean_standin: StandinServer,
    ) -> None:
        r = await client.post(
            "/api/workflows/dry-run",
            json={
                "name": "t",
                "mode": "simulate",
                "trigger_sample": {"body": {"city": "Berlin"}},
                "steps": [
                    {
                        "id": "weather",
                        "type": "openweather",
                        "credential_id": creds["weather"],
                        "config": {"city": "{{ trigger.body.city }}"},
                    },
                    {
                        "id": "call",
                        "type": "http_request",
                        "credential_id": creds["http"],
                        "config": {"path": "/echo", "method": "POST", "json": {"a": 1}},
                    },
                ],
            },
            headers=auth,
        )
        assert r.status_code == 200, r.text
        weather, call = (s["request"] for s in r.json()["steps"])
        assert weather["method"] == "GET"
        assert weather["url"].startswith(f"{clean_standin.url}/data/2.5/weather?")
        assert "q=Berlin" in weather["url"]
        assert "appid=***" in weather["url"]
        assert call["url"] == f"{clean_standin.url}/echo"
        assert call["headers"]["authorization"] == "***"
        assert call["body"] == {"a": 1}
        assert SENTINEL not in r.text
        assert clean_standin.requests() == []

    async def test_a_credentials_query_is_sent_and_masked(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        clean_standin: StandinServer,
    ) -> None:
        r = await client.post(
            "/api/credentials",
            json={
                "name": "keyed",
                "type": "http",
                "secret": {"base_url": clean_standin.url, "query": {"key": SENTINEL}},
            },
            headers=auth,
        )
        assert r.status_code == 201, r.text
        steps = [
            {
                "id": "call",
                "type": "http_request",
                "credential_id": r.json()["id"],
                "config": {"path": "/echo/boards", "query": {"fields": "name"}},
            }
        ]
        simulated = await dry_run(client, auth, steps, simulate=True)
        assert simulated.status_code == 200, simulated.text
        request = simulated.json()["steps"][0]["request"]
        assert request["url"] == f"{clean_standin.url}/echo/boards?key=***&fields=name"
        assert clean_standin.requests() == []

        ran = await dry_run(client, auth, steps)
        assert ran.status_code == 200, ran.text
        (sent,) = clean_standin.requests()
        assert sent["query"] == f"key={SENTINEL}&fields=name"
        assert ran.json()["steps"][0]["output"]["body"]["query"] == {
            "key": "***",
            "fields": "name",
        }
        assert SENTINEL not in simulated.text + ran.text

    async def test_an_oauth2_credential_asks_for_no_token_when_simulated(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        clean_standin: StandinServer,
    ) -> None:
        from tests.standins.oauth import CLIENT_ID, CLIENT_SECRET

        secret = {
            "base_url": f"{clean_standin.url}/oauth/api",
            "oauth2": {
                "token_url": f"{clean_standin.url}/oauth/token",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
        }
        r = await client.post(
            "/api/credentials",
            json={"name": "m2m", "type": "http", "secret": secret},
            headers=auth,
        )
        assert r.status_code == 201, r.text
        steps = [
            {
                "id": "call",
                "type": "http_request",
                "credential_id": r.json()["id"],
                "config": {"path": "/orders"},
            }
        ]
        simulated = await dry_run(client, auth, steps, simulate=True)
        assert simulated.status_code == 200, simulated.text
        request = simulated.json()["steps"][0]["request"]
        assert request["headers"]["authorization"] == "***"
        assert clean_standin.requests() == []

        ran = await dry_run(client, auth, steps)
        assert ran.status_code == 200, ran.text
        assert ran.json()["status"] == "succeeded"
        token, call = clean_standin.requests()
        assert (token["kind"], call["kind"], call["status"]) == ("oauth_token", "oauth_api", 200)
        access_token = call["headers"]["authorization"].removeprefix("Bearer ")
        assert access_token not in ran.text
        assert CLIENT_SECRET not in simulated.text + ran.text

    async def test_a_password_in_a_base_url_is_masked(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        clean_standin: StandinServer,
    ) -> None:
        # base_url says where calls go, so it is shown; its userinfo password is a secret.
        base_url = clean_standin.url.replace("http://", f"http://bob:{SENTINEL}@")
        made = await client.post(
            "/api/credentials",
            json={"name": "h", "type": "http", "secret": {"base_url": base_url}},
            headers=auth,
        )
        step = {"id": "call", "type": "http_request", "credential_id": made.json()["id"]}
        body = {"name": "t", "steps": [step | {"config": {"path": "/echo"}}]}
        for mode in ("simulate", "run"):  # the URL shown; what the remote echoed back
            r = await client.post(
                "/api/workflows/dry-run", json=body | {"mode": mode}, headers=auth
            )
            assert r.status_code == 200, r.text
            assert SENTINEL not in r.text, mode
            assert base64.b64encode(f"bob:{SENTINEL}".encode()).decode() not in r.text, mode
        shown = r.json()["steps"][0]
        assert shown["status"] == "succeeded"
        echoed = clean_standin.requests("echo")[0]["headers"]["authorization"]
        assert echoed.startswith("Basic ")  # the password went where it belongs, only there

    async def test_saved_workflow(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        creds: dict[str, str],
        clean_standin: StandinServer,
    ) -> None:
        wf = await client.post(
            "/api/workflows",
            json={"name": "t", "steps": slack_steps(creds["slack"])},
            headers=auth,
        )
        r = await client.post(
            f"/api/workflows/{wf.json()['id']}/dry-run",
            json={"mode": "simulate", "trigger_sample": {"body": {"id": 9}}},
            headers=auth,
        )
        assert r.status_code == 200, r.text
        assert r.json()["steps"][0]["request"]["body"] == {"text": "Order 9"}
        assert clean_standin.requests() == []

    async def test_each_dry_run_is_an_execution_of_its_own(
        self, client: httpx.AsyncClient, auth: dict[str, str], creds: dict[str, str]
    ) -> None:
        # A remote deduping by {{ execution.id }} must not take the second try for the first.
        steps = slack_steps(creds["slack"])
        steps[0]["config"]["text"] = "{{ execution.id }} {{ execution.workflow_id }}"
        wf = await client.post("/api/workflows", json={"name": "t", "steps": steps}, headers=auth)
        saved = (f"/api/workflows/{wf.json()['id']}/dry-run", {"mode": "simulate"})
        unsaved = ("/api/workflows/dry-run", {"mode": "simulate", "name": "t", "steps": steps})
        texts = []
        for url, body in (saved, saved, unsaved, unsaved):
            r = await client.post(url, json=body, headers=auth)
            assert r.status_code == 200, r.text
            texts.append(r.json()["steps"][0]["request"]["body"]["text"])
        ids = [text.split()[0] for text in texts]
        assert all(i.startswith("dry_") for i in ids)
        assert len(set(ids)) == 4
        # A saved workflow's dry run names it; a definition never saved has none.
        assert [text.split()[1:] for text in texts] == [[wf.json()["id"]]] * 2 + [[]] * 2

    async def test_invalid_workflow_is_422(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        r = await client.post(
            "/api/workflows/dry-run",
            json={
                "name": "t",
                "mode": "simulate",
                "steps": [{"id": "x", "type": "slack_message", "config": {}}],
            },
            headers=auth,
        )
        assert r.status_code == 422
