"""What a request leaves out, what it sends as ``null``, and names of nothing but spaces.

Found by hand, each answered 200 or 201:

- ``PATCH /api/workflows/{id}`` with ``{"active": null}``, ``{"name": null}``,
  ``{"steps": null}`` or ``{"trigger": null}`` changed nothing and said nothing; a
  credential's ``{"name": null, ...}`` too. ``null`` is now refused at the field
  (``null_not_allowed``); left out, a field keeps its value, and ``error_workflow_id``,
  whose ``null`` means "none", is cleared by it as before.
- A ``PATCH`` in the seed's shape (``action_type`` and ``config_json``) turned a schedule
  workflow into a webhook one: its trigger became the create's default.
- A workflow, credential, token or tenant named ``"   "``: a blank link in the console's
  lists.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter, ValidationError

from ipaas.kit.text import NAME_PATTERN, Name
from tests.api.test_unknown_fields import World

SCHEDULE = {"type": "schedule", "cron": "0 9 * * *", "timezone": "Europe/Berlin"}
NULL_REFUSED = "must not be null: leave the field out to keep its value"


@pytest.fixture
async def world(client: httpx.AsyncClient, auth: dict[str, str], clean_standin: Any) -> World:
    return await World(client, auth, clean_standin).build()


def _null_cases(w: World) -> list[tuple[str, str, dict[str, Any], list[str]]]:
    wf = f"/api/workflows/{w.workflow_id}"
    credential = f"/api/credentials/{w.credential_id}"
    secret = {"webhook_url": w.standin.slack_webhook_url()}
    return [
        ("PATCH", wf, {"active": None}, ["active"]),
        ("PATCH", wf, {"name": None}, ["name"]),
        ("PATCH", wf, {"steps": None}, ["steps"]),
        ("PATCH", wf, {"trigger": None}, ["trigger"]),
        ("PATCH", wf, {"name": None, "active": False}, ["name"]),
        ("PATCH", credential, {"name": None, "secret": secret}, ["name"]),
        ("PATCH", credential, {"name": "renamed", "secret": None}, ["secret"]),
    ]


async def test_null_for_a_field_that_cannot_be_null_is_refused(world: World) -> None:
    before = await world.state()
    for method, path, body, loc in _null_cases(world):
        response = await world.client.request(method, path, json=body, headers=world.auth)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["details"] == [
            {"type": "null_not_allowed", "loc": ["body", *loc], "msg": NULL_REFUSED}
        ], body
    assert await world.state() == before


async def test_left_out_keeps_and_error_workflow_null_clears(world: World) -> None:
    path = f"/api/workflows/{world.workflow_id}"
    other = await world.client.post("/api/workflows", json=world.workflow(), headers=world.auth)
    alert = {"error_workflow_id": other.json()["id"]}
    set_alert = await world.client.patch(path, json=alert, headers=world.auth)
    assert set_alert.json()["error_workflow_id"] == alert["error_workflow_id"]
    renamed = await world.client.patch(path, json={"name": "Renamed"}, headers=world.auth)
    assert renamed.status_code == 200, renamed.text
    kept = renamed.json()
    assert (kept["name"], kept["active"], kept["version"]) == ("Renamed", True, 1)
    assert kept["error_workflow_id"] == alert["error_workflow_id"]
    cleared = await world.client.patch(path, json={"error_workflow_id": None}, headers=world.auth)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["error_workflow_id"] is None
    assert cleared.json()["name"] == "Renamed"


async def test_the_patch_schema_does_not_offer_null(client: httpx.AsyncClient) -> None:
    """The published schema says what the server takes (schemathesis checks both ways)."""
    spec = (await client.get("/openapi.json")).json()["components"]["schemas"]
    for model, fields in (
        ("WorkflowPatch", ["name", "active", "trigger", "steps"]),
        ("CredentialUpdate", ["name", "secret"]),
    ):
        for field in fields:
            schema = json.dumps(spec[model]["properties"][field])
            assert '"null"' not in schema, (model, field, schema)
    nullable = json.dumps(spec["WorkflowPatch"]["properties"]["error_workflow_id"])
    assert '{"type": "null"}' in nullable


async def test_a_patch_in_the_seeds_shape_keeps_the_trigger(world: World) -> None:
    created = await world.client.post(
        "/api/workflows", json=world.workflow(trigger=SCHEDULE), headers=world.auth
    )
    path = f"/api/workflows/{created.json()['id']}"
    config = {"credential_id": world.credential_id, "text": "from the seed"}
    seed = {"action_type": "slack_message", "config_json": json.dumps(config)}
    response = await world.client.patch(path, json=seed, headers=world.auth)
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["trigger"] == SCHEDULE
    assert patched["steps"][0]["config"] == {"text": "from the seed"}
    # ``trigger_type`` still sets it; with ``trigger`` beside it, which one was meant?
    response = await world.client.patch(
        path, json=seed | {"trigger_type": "manual"}, headers=world.auth
    )
    assert response.status_code == 200, response.text
    assert response.json()["trigger"] == {"type": "manual"}
    both = seed | {"trigger_type": "webhook", "trigger": SCHEDULE}
    response = await world.client.patch(path, json=both, headers=world.auth)
    assert response.status_code == 422
    assert "give trigger or trigger_type, not both" in response.text
    # A create in the seed's shape still defaults to a webhook.
    response = await world.client.post(
        "/api/workflows", json={"name": "Seed"} | seed, headers=world.auth
    )
    assert response.status_code == 201, response.text
    assert response.json()["trigger"] == {"type": "webhook"}


BLANKS = ["   ", "\t", "\u3000", "\u00a0\ufeff"]


@pytest.mark.parametrize("blank", BLANKS)
async def test_a_name_of_nothing_but_white_space_is_refused(world: World, blank: str) -> None:
    wf = f"/api/workflows/{world.workflow_id}"
    secret = {"webhook_url": world.standin.slack_webhook_url()}
    cases: list[tuple[str, str, dict[str, Any], list[str]]] = [
        ("POST", "/api/workflows", world.workflow(name=blank), ["name"]),
        ("PUT", wf, world.workflow(name=blank), ["name"]),
        ("PATCH", wf, {"name": blank}, ["name"]),
        ("POST", "/api/credentials", {"name": blank, "type": "slack", "secret": secret}, ["name"]),
        ("PATCH", f"/api/credentials/{world.credential_id}", {"name": blank}, ["name"]),
        ("POST", "/api/tokens", {"name": blank}, ["name"]),
        ("POST", "/api/auth/signup",
         {"email": "new@example.com", "password": "a new password", "tenant_name": blank},
         ["tenant_name"]),
    ]  # fmt: skip
    before = await world.state()
    for method, path, body, loc in cases:
        response = await world.client.request(method, path, json=body, headers=world.auth)
        assert response.status_code == 422, (method, path, response.text)
        (detail,) = response.json()["error"]["details"]
        assert (detail["loc"], detail["msg"]) == (
            ["body", *loc],
            "Value error, must hold something besides white space",
        ), (method, path)
    assert await world.state() == before
    # Spaces around a name are kept, as given.
    response = await world.client.patch(wf, json={"name": f"{blank}x{blank}"}, headers=world.auth)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == f"{blank}x{blank}"


async def test_the_schemas_pattern_and_the_server_refuse_the_same_names(
    client: httpx.AsyncClient,
) -> None:
    """The server matches names with the pattern it publishes (ECMA-262 and Python's ``re``
    read it alike: white space is spelled out, not ``\\s``). schemathesis generates names
    from it, so a mismatch would be a 422 for a name the schema allows."""
    spec = (await client.get("/openapi.json")).json()["components"]["schemas"]
    assert spec["WorkflowCreate"]["properties"]["name"]["pattern"] == NAME_PATTERN
    assert spec["CredentialUpdate"]["properties"]["name"]["pattern"] == NAME_PATTERN
    names = TypeAdapter(Name)
    for value in [*BLANKS, "\n \r", "\u2028\u2029", "\u2000\u200a"]:
        with pytest.raises(ValidationError):
            names.validate_python(value)
    # Python's str.isspace() has the first two as white space; ECMA-262 has none of them.
    for value in ["\x1c", "\x85", "\u200b", "x", " x ", "-"]:
        assert names.validate_python(value) == value
