"""Request bodies refuse fields they do not have (``ipaas.kit.inputs.Input``).

Found by hand: each of these answered 201 or 200 and did something other than what was
asked: ``"activ": false`` created an active workflow, a webhook trigger's ``"auht"`` took
unsigned webhooks, a schedule's ``"tz"`` ran in UTC, a step's ``"timeout"`` was dropped, a
dry run's ``"mod": "simulate"`` sent its message, a token's ``expires_in_days`` made one that
never expires. Each is now a 422 naming the field, and nothing is done.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import httpx
import pytest

from ipaas.api.routing import _takes_many
from ipaas.kit.clock import utcnow
from ipaas.runtime import Runtime
from ipaas.workflows.models import Step, Trigger, Workflow
from tests.standins.server import StandinServer

PASSWORD = "correct horse battery"

Sent = tuple[str, str, dict[str, Any], list[str | int]]


class World:
    """A tenant with a Slack credential (to the stand-in), a workflow and an invited member."""

    def __init__(self, client: httpx.AsyncClient, auth: dict[str, str], standin: StandinServer):
        self.client, self.auth, self.standin = client, auth, standin
        self.credential_id = ""
        self.workflow_id = ""
        self.member_id = ""

    async def build(self) -> World:
        secret = {"webhook_url": self.standin.slack_webhook_url()}
        self.credential_id = await self._id(
            "/api/credentials", {"name": "slack", "type": "slack", "secret": secret}
        )
        self.workflow_id = await self._id("/api/workflows", self.workflow())
        self.member_id = await self._id("/api/members", {"email": "bo@example.com"})
        return self

    async def _id(self, path: str, body: dict[str, Any]) -> str:
        response = await self.client.post(path, json=body, headers=self.auth)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def step(self, **extra: Any) -> dict[str, Any]:
        config = {"text": "hello"}
        return {"id": "tell", "type": "slack_message", "credential_id": self.credential_id,
                "config": config} | extra  # fmt: skip

    def workflow(self, **extra: Any) -> dict[str, Any]:
        return {"name": "Orders", "steps": [self.step()]} | extra

    async def state(self) -> dict[str, Any]:
        """Everything a request refused here could have changed."""
        seen: dict[str, Any] = {}
        for path in ("/api/workflows", "/api/credentials", "/api/tokens", "/api/members"):
            response = await self.client.get(path, headers=self.auth)
            assert response.status_code == 200, response.text
            seen[path] = response.json()
        executions = await self.client.get("/api/executions", headers=self.auth)
        seen["executions"] = executions.json()["items"]
        seen["sent"] = len(self.standin.requests())
        for email in ("ada@example.com", "new@example.com"):
            login = {"username": email, "password": "a new password"}
            seen[email] = (await self.client.post("/api/auth/token", data=login)).status_code
        return seen


@pytest.fixture
async def world(
    client: httpx.AsyncClient, auth: dict[str, str], clean_standin: StandinServer
) -> World:
    return await World(client, auth, clean_standin).build()


def _cases(w: World) -> list[Sent]:
    wf = f"/api/workflows/{w.workflow_id}"
    schedule = {"type": "schedule", "cron": "0 9 * * *", "tz": "Europe/Berlin"}
    webhook_auth = {"scheme": "standard_webhooks", "credential_id": w.credential_id}
    return [
        ("POST", "/api/auth/signup",
         {"email": "new@example.com", "password": "a new password", "tenant_name": "N",
          "plan": "pro"}, ["plan"]),
        ("POST", "/api/auth/password",
         {"current_password": PASSWORD, "new_password": "a new password", "keep_sessions": True},
         ["keep_sessions"]),
        ("POST", "/api/tokens", {"name": "ci", "expires_in_days": 30}, ["expires_in_days"]),
        ("POST", "/api/credentials",
         {"name": "s", "type": "slack", "secret": {"webhook_url": "https://hooks.slack.com/x"},
          "description": "team"}, ["description"]),
        ("POST", "/api/members", {"email": "cy@example.com", "rol": "owner"}, ["rol"]),
        ("PATCH", f"/api/members/{w.member_id}", {"role": "owner", "notify": True}, ["notify"]),
        ("POST", "/api/auth/invite",
         {"invite_token": "ipaas_invite_x", "password": "a new password", "name": "Cy"}, ["name"]),
        ("POST", "/api/workflows", w.workflow(activ=False), ["activ"]),
        ("POST", "/api/workflows", w.workflow(steps=[w.step(timeout=5)]), ["steps", 0, "timeout"]),
        ("POST", "/api/workflows", w.workflow(trigger={"type": "webhook", "auht": webhook_auth}),
         ["trigger", "auht"]),
        ("POST", "/api/workflows", w.workflow(trigger=schedule), ["trigger", "tz"]),
        ("POST", "/api/workflows", w.workflow(trigger={"type": "manual", "cron": "* * * * *"}),
         ["trigger", "cron"]),
        ("PUT", wf, w.workflow(name="Renamed", description="x"), ["description"]),
        ("PATCH", wf, {"activ": False}, ["activ"]),
        ("PATCH", wf, {"steps": [w.step(retries=3)]}, ["steps", 0, "retries"]),
        ("POST", "/api/workflows/dry-run", w.workflow(mod="simulate"), ["mod"]),
        ("POST", "/api/workflows/dry-run",
         w.workflow(mode="simulate", trigger_sample={"bdy": {}}), ["trigger_sample", "bdy"]),
        ("POST", f"{wf}/dry-run", {"mod": "simulate"}, ["mod"]),
        ("POST", f"{wf}/run", {"bodyy": {"id": 1}}, ["bodyy"]),
    ]  # fmt: skip


async def test_an_unknown_field_is_refused_by_name_and_nothing_is_done(world: World) -> None:
    before = await world.state()
    assert before["sent"] == 0
    cases = _cases(world)
    for method, path, body, loc in cases:
        response = await world.client.request(method, path, json=body, headers=world.auth)
        assert response.status_code == 422, (method, path, response.text)
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert error["details"] == [
            {
                "type": "extra_forbidden",
                "loc": ["body", *loc],
                "msg": "Extra inputs are not permitted",
            }
        ], (method, path)
    assert await world.state() == before
    # The same requests without the unknown field do what they ask (so each case above was
    # refused for that field alone): the dry runs send, the run makes an execution.
    sent = world.step()
    for path in ("/api/workflows/dry-run", f"/api/workflows/{world.workflow_id}/dry-run"):
        body = {"name": "x", "steps": [sent]} if path.endswith("/workflows/dry-run") else {}
        response = await world.client.post(path, json=body, headers=world.auth)
        assert response.status_code == 200, response.text
    assert len(world.standin.requests()) == 2


async def test_a_read_workflow_sent_back_whole_is_an_edit(world: World) -> None:
    """What a GET returned, changed and PUT back with its ETag: the read's own fields (id,
    version, webhook_url, timestamps) are accepted and ignored."""
    path = f"/api/workflows/{world.workflow_id}"
    read = await world.client.get(path, headers=world.auth)
    body = read.json()
    assert {"id", "version", "webhook_url", "created_at", "updated_at"} <= body.keys()
    body["steps"][0]["config"]["text"] = "changed"
    body["version"] = 41  # ignored, as the id and the timestamps are
    headers = world.auth | {"If-Match": read.headers["etag"]}
    response = await world.client.put(path, json=body, headers=headers)
    assert response.status_code == 200, response.text
    edited = response.json()
    assert edited["version"] == 2
    assert edited["steps"][0]["config"] == {"text": "changed"}
    assert edited["created_at"] == body["created_at"]
    # And as a PATCH: nothing but the settings given changes.
    edited["name"] = "Renamed"
    response = await world.client.patch(path, json=edited, headers=world.auth)
    assert response.status_code == 200, response.text
    assert (response.json()["name"], response.json()["version"]) == ("Renamed", 2)


async def test_a_trigger_stored_with_other_keys_still_runs(
    world: World, runtime: Runtime, auth: dict[str, str]
) -> None:
    """Triggers saved before this check may hold keys their type does not have: they load,
    list and take webhooks as before; only a new save of that trigger is refused."""
    tenant = (await world.client.get("/api/tenant", headers=auth)).json()["id"]
    now = utcnow()
    legacy = Workflow(
        id="wf_legacy", tenant_id=tenant, name="Legacy", active=True, version=1,
        trigger=Trigger.model_validate({"type": "webhook", "auht": {"scheme": "x"}}),
        steps=[Step.model_validate(world.step())], created_at=now, updated_at=now,
    )  # fmt: skip
    await runtime.store.create_workflow(legacy)
    read = await world.client.get("/api/workflows/wf_legacy", headers=auth)
    assert read.status_code == 200, read.text
    assert read.json()["trigger"] == {"type": "webhook", "auht": {"scheme": "x"}}
    accepted = await world.client.post("/api/webhooks/wf_legacy", json={"id": 1})
    assert accepted.status_code == 202, accepted.text
    response = await world.client.put("/api/workflows/wf_legacy", json=read.json(), headers=auth)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == ["body", "trigger", "auht"]


def _objects(schema: dict[str, Any], defs: dict[str, Any], path: str, seen: set[str]) -> Any:
    """Every object schema with named properties reachable from ``schema``, with its path."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return
        seen.add(name)
        yield from _objects(defs[name], defs, name, seen)
        return
    if "properties" in schema:
        yield path, schema
        for key, sub in schema["properties"].items():
            yield from _objects(sub, defs, f"{path}.{key}", seen)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from _objects(schema[key], defs, f"{path}[]", seen)
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            yield from _objects(sub, defs, path, seen)


#: The one request object that keeps other keys, by design: a trigger's options depend on
#: its type, and ``check_trigger`` refuses those its type does not have (tested above).
OPEN_BY_DESIGN = {"Trigger"}


async def test_every_json_request_body_in_the_schema_refuses_other_fields(
    client: httpx.AsyncClient,
) -> None:
    """A guard for request models added later: every object with named properties in a JSON
    request body says ``additionalProperties: false`` in the published schema."""
    spec = (await client.get("/openapi.json")).json()
    defs = spec["components"]["schemas"]
    checked: list[str] = []
    open_ones: list[str] = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            seen: set[str] = set()
            for where, schema in _objects(content["application/json"]["schema"], defs, "", seen):
                name = where.split(".", 1)[0]
                checked.append(f"{method.upper()} {path} {where}")
                if schema.get("additionalProperties") is not False and name not in OPEN_BY_DESIGN:
                    open_ones.append(f"{method.upper()} {path} {where}")
    assert len(checked) > 20, checked  # the walk found the bodies
    assert open_ones == []


@pytest.mark.parametrize("trigger_type", ["webhook", "schedule", "manual"])
async def test_each_trigger_type_takes_its_own_keys(world: World, trigger_type: str) -> None:
    secret = {"name": "signing", "type": "webhook_secret", "secret": {"secret": "a long secret"}}
    signing = await world.client.post("/api/credentials", json=secret, headers=world.auth)
    options: dict[str, dict[str, Any]] = {
        "webhook": {"auth": {"scheme": "standard_webhooks", "credential_id": signing.json()["id"]},
                    "idempotency": {"header": "X-Event-Id"}},
        "schedule": {"cron": "0 9 * * *", "timezone": "Europe/Berlin"},
        "manual": {},
    }  # fmt: skip
    own = options[trigger_type]
    body = world.workflow(trigger={"type": trigger_type, **own})
    response = await world.client.post("/api/workflows", json=body, headers=world.auth)
    assert response.status_code == 201, response.text
    assert response.json()["trigger"] == {"type": trigger_type, **own}


async def test_an_unknown_query_parameter_is_refused_by_name_and_nothing_is_done(
    world: World,
) -> None:
    """Found by hand: ``GET /api/workflows?active=false`` listed the active workflows too, as
    if the filter existed (a script deleting what it listed would have deleted those), and
    ``DELETE /api/workflows/{id}?dry_run=true`` deleted it."""
    wf = f"/api/workflows/{world.workflow_id}"
    cases = [
        ("GET", "/api/workflows?active=false", "active"),
        ("GET", "/api/workflows?limit=5&q=orders", "q"),
        ("GET", f"{wf}/versions?limit=1&sort=asc", "sort"),
        ("GET", "/api/credentials?type=slack", "type"),
        ("GET", "/api/tokens?include_expired=1", "include_expired"),
        ("DELETE", f"{wf}?dry_run=true", "dry_run"),
        ("PATCH", f"{wf}?validate_only=1", "validate_only"),
        ("POST", f"{wf}/run?wait=true", "wait"),
        ("GET", "/api/executions?stauts=failed", "stauts"),  # the parameter model's own
    ]
    before = await world.state()
    for method, url, name in cases:
        body = {"active": False} if method == "PATCH" else None
        response = await world.client.request(method, url, json=body, headers=world.auth)
        assert response.status_code == 422, (method, url, response.text)
        assert response.json()["error"]["details"] == [
            {
                "type": "extra_forbidden",
                "loc": ["query", name],
                "msg": "Extra inputs are not permitted",
            }
        ], (method, url)
    assert await world.state() == before
    # The parameters a route reads are taken, its dependencies' and parameter models' too.
    for url in ("/api/workflows?limit=1", f"{wf}/versions?limit=1", "/api/stats?window_s=60"):
        response = await world.client.get(url, headers=world.auth)
        assert response.status_code == 200, (url, response.text)
    # Not the webhook's: its query is the sender's payload (``trigger.query``).
    accepted = await world.client.post(f"/api/webhooks/{world.workflow_id}?anything=1", json={})
    assert accepted.status_code == 202, accepted.text


async def test_every_api_route_refuses_a_query_parameter_it_does_not_read(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    """A guard for routes added later: each route of the published API, with a parameter
    none of them reads, is a 422 naming it."""
    spec = (await client.get("/openapi.json")).json()
    tried = 0
    for path, operations in spec["paths"].items():
        if not path.startswith("/api/") or path.startswith("/api/webhooks/"):
            continue
        if path == "/api/oauth2/callback":
            continue  # the provider's parameters (tests/credentials/test_oauth2.py: ``iss``)
        url = re.sub(r"\{[^}]+\}", "x_1", path) + "?zz_unknown=1"
        for method in operations:
            response = await client.request(method.upper(), url, headers=auth)
            assert response.status_code == 422, (method, path, response.text)
            detail = response.json()["error"]["details"][0]
            assert detail["loc"] == ["query", "zz_unknown"], (method, path)
            tried += 1
    assert tried > 30


async def test_a_query_parameter_given_twice_is_refused_unless_it_takes_a_list(
    world: World,
) -> None:
    """Found by hand: ``?status=queued&status=failed`` listed the failed ones only, as if
    the first were not there."""
    cases = [
        ("/api/executions?status=queued&status=failed", "status"),
        ("/api/workflows?limit=1&limit=50", "limit"),
        ("/api/stats?window_s=60&window_s=3600&window_s=60", "window_s"),
    ]
    for url, name in cases:
        response = await world.client.get(url, headers=world.auth)
        assert response.status_code == 422, (url, response.text)
        count = url.count(f"{name}=")
        assert response.json()["error"]["details"] == [
            {
                "type": "repeated",
                "loc": ["query", name],
                "msg": f"Given {count} times: it takes one value",
            }
        ], url


def test_a_list_parameter_may_be_given_several_times() -> None:
    assert _takes_many(list[str])
    assert _takes_many(list[str] | None)
    assert _takes_many(Optional[tuple[int, ...]])  # noqa: UP045 - the typing spelling too
    assert not _takes_many(int)
    assert not _takes_many(str | None)


async def test_a_body_sent_to_a_route_that_reads_none_is_refused(world: World) -> None:
    """Found by hand: a replay sent with new trigger data replayed the old data (to Slack and
    every other step) and answered 201; a cancel or a delete with a body did as if it were
    not there."""
    fired = await world.client.post(f"/api/webhooks/{world.workflow_id}", json={"id": 1})
    execution = fired.json()["execution_id"]
    wf = f"/api/workflows/{world.workflow_id}"
    cases = [
        ("POST", f"/api/executions/{execution}/replay", {"trigger": {"body": {"id": 2}}}),
        ("POST", f"/api/executions/{execution}/cancel", {"reason": "duplicate"}),
        ("POST", f"/api/executions/{execution}/retry", {"from_step": "tell"}),
        ("POST", f"{wf}/versions/1/restore", {"name": "Restored"}),
        ("DELETE", wf, {"force": True}),
        ("DELETE", f"/api/credentials/{world.credential_id}", []),
    ]
    before = await world.state()
    for method, url, body in cases:
        response = await world.client.request(method, url, json=body, headers=world.auth)
        assert response.status_code == 422, (method, url, response.text)
        assert response.json()["error"]["details"] == [
            {"type": "extra_forbidden", "loc": ["body"],
             "msg": "This request takes no body: send none (or {})"}
        ], (method, url)  # fmt: skip
    assert await world.state() == before
    # Nothing, {} or null, as some clients send with every POST, is no body.
    replays = [
        await world.client.post(
            f"/api/executions/{execution}/replay", content=sent, headers=world.auth | typed
        )
        for sent, typed in (
            (b"", {}),
            (b"{}", {"content-type": "application/json"}),
            (b" null ", {"content-type": "application/json"}),
        )
    ]
    assert [r.status_code for r in replays] == [201, 201, 201], [r.text for r in replays]
