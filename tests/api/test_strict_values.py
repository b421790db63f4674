"""Values PostgreSQL is stricter about than SQLite and the memory store, end to end on the
memory store and on PostgreSQL.

U+0000 (NUL), which PostgreSQL's text types cannot hold. Seen by hand on a server on
PostgreSQL: ``POST /api/webhooks/wf%00x`` (no sign-in needed), ``GET /api/workflows/wf%00x``,
a login with ``%00`` in the email and a workflow named with ``\\u0000`` each answered 500
with a traceback in the log. A remote API answering an error whose text held a NUL byte made
the finish unwritable: the execution stayed ``running``, and each time its lease ran out the
reaper ran the step, and its POST, again (attempt 7 after ten minutes). The store's own guard
is tested in tests/contracts/test_store_text.py.

Date-times with no UTC value (``0001-01-01T00:00:00+01:00``) in a filter, and altered
cursors (one without a zone, one out of range, one whose id holds NUL), were 500s too.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from ipaas.config import Settings
from ipaas.kit.pagination import Cursor
from ipaas.kit.text import NUL
from ipaas.runtime import Runtime
from ipaas.stores import MemoryStore
from ipaas.stores.sql import SqlStore, run_migrations
from tests.contracts.conftest import POSTGRES_ONLY, in_thread, postgres_database
from tests.engine.test_retries import Api
from tests.standins.server import StandinServer

ONE_ATTEMPT = {"max_attempts": 1}
REFUSED = "must not contain the NUL character (U+0000)"


@pytest.fixture(params=["memory", pytest.param("postgres", marks=POSTGRES_ONLY)])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://"
        return
    with postgres_database() as url:
        in_thread(lambda: run_migrations(url))
        yield url


@pytest.fixture
async def runtime(settings: Settings, database_url: str) -> AsyncIterator[Runtime]:
    settings = settings.model_copy(update={"database_url": database_url})
    store = MemoryStore() if database_url == "memory://" else SqlStore(database_url)
    return Runtime.build(settings, store=store)


@pytest.fixture
async def api(client: httpx.AsyncClient, auth: dict[str, str], clean_standin: StandinServer) -> Api:
    return Api(client, auth, clean_standin)


async def test_names_holding_nul_are_refused(api: Api) -> None:
    client, auth = api.client, api.auth
    step = api.call("call", "/echo", ONE_ATTEMPT)
    workflow_id = await api.workflow([step])
    credential = {"type": "slack", "secret": {"webhook_url": f"{api.standin.url}/services/x"}}
    credential_id = (
        await client.post("/api/credentials", json={"name": "ok", **credential}, headers=auth)
    ).json()["id"]
    named = f"a{NUL}b"
    sent = [
        (
            "POST",
            "/api/auth/signup",
            {"email": "nul@example.com", "password": "long enough", "tenant_name": named},
        ),
        ("POST", "/api/tokens", {"name": named}),
        ("POST", "/api/credentials", {"name": named, **credential}),
        ("PATCH", f"/api/credentials/{credential_id}", {"name": named}),
        ("POST", "/api/workflows", {"name": named, "steps": [step]}),
        ("PUT", f"/api/workflows/{workflow_id}", {"name": named, "steps": [step]}),
        ("PATCH", f"/api/workflows/{workflow_id}", {"name": named}),
    ]
    for method, path, body in sent:
        response = await client.request(method, path, json=body, headers=auth)
        assert response.status_code == 422, (method, path, response.text)
        (detail,) = response.json()["error"]["details"]
        assert detail["loc"][-1] in ("name", "tenant_name")
        assert REFUSED in detail["msg"]
    workflow = (await client.get(f"/api/workflows/{workflow_id}", headers=auth)).json()
    assert workflow["name"] == "wf"


async def test_ids_holding_nul_are_not_found(api: Api) -> None:
    client, auth = api.client, api.auth
    workflow_id = await api.workflow([api.call("call", "/echo", ONE_ATTEMPT)])
    cases: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", f"/api/webhooks/{workflow_id}%00", {}),
        ("GET", f"/api/workflows/{workflow_id}%00", None),
        ("GET", "/api/executions/ex%00", None),
        ("POST", "/api/executions/ex%00/retry", None),
        ("GET", "/api/credentials/cred%00", None),
        ("DELETE", "/api/tokens/tok%00", None),
    ]
    for method, path, body in cases:
        response = await client.request(method, path, json=body, headers=auth)
        assert response.status_code == 404, (method, path, response.text)
    listed = await client.get(f"/api/executions?workflow_id={workflow_id}%00", headers=auth)
    assert listed.status_code == 200
    assert listed.json()["items"] == []
    login = await client.post(
        "/api/auth/token", data={"username": "ada@example.com\x00", "password": "x"}
    )
    assert login.status_code == 401, login.text


async def test_date_times_without_a_utc_value_are_the_ends_of_time(api: Api) -> None:
    """``0001-01-01T00:00:00+01:00`` is before the first UTC instant there is; it was a 500
    on the SQL stores. As a bound it means the first (or last) instant: taken as such."""
    client, auth = api.client, api.auth
    await api.fire(await api.workflow([api.call("call", "/echo", ONE_ATTEMPT)]))
    ends = {"since": "0001-01-01T00:00:00+01:00", "until": "9999-12-31T23:59:59-01:00"}
    listed = await client.get("/api/executions", params=ends, headers=auth)
    assert listed.status_code == 200, listed.text
    assert len(listed.json()["items"]) == 1
    for name, value in ends.items():  # each alone: nothing is left out, nothing refused
        listed = await client.get("/api/executions", params={name: value}, headers=auth)
        assert len(listed.json()["items"]) == 1, (name, listed.text)
    retried = await client.post("/api/executions/retry", json=ends, headers=auth)
    assert retried.status_code == 202, retried.text
    assert retried.json() == {"retried": [], "more": False}  # the one execution is queued
    # The ends of the calendar in UTC itself, as before.
    listed = await client.get(
        "/api/executions",
        params={"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59+14:00"},
        headers=auth,
    )
    assert len(listed.json()["items"]) == 1


def _altered(created_at: str, id_: object) -> str:
    raw = json.dumps([created_at, id_]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_altered_cursors_are_refused_or_find_nothing(api: Api) -> None:
    client, auth = api.client, api.auth
    await api.fire(await api.workflow([api.call("call", "/echo", ONE_ATTEMPT)]))
    lists = [("/api/executions", {}), ("/api/workflows", {"limit": 5})]
    for path, params in lists:
        for cursor in (
            _altered("2026-01-01T00:00:00", "x"),  # no zone
            _altered("0001-01-01T00:00:00+01:00", "x"),  # no UTC value
        ):
            response = await client.get(path, params={**params, "cursor": cursor}, headers=auth)
            assert response.status_code == 400, (path, response.text)
            assert response.json()["error"]["code"] == "invalid_cursor"
        held = _altered("2999-01-01T00:00:00Z", f"x{NUL}")
        response = await client.get(path, params={**params, "cursor": held}, headers=auth)
        assert response.status_code == 200, (path, response.text)
    # A cursor this API made still reads back as it was.
    made = Cursor(datetime(2026, 1, 1, tzinfo=UTC), "ex_1")
    assert Cursor.decode(made.encode()) == made


async def test_version_numbers_beyond_what_the_stores_hold_are_refused(api: Api) -> None:
    """``/versions/2147483648`` was a 500 on PostgreSQL (its INTEGER is 32 bits)."""
    client, auth = api.client, api.auth
    workflow_id = await api.workflow([api.call("call", "/echo", ONE_ATTEMPT)])
    base = f"/api/workflows/{workflow_id}/versions"
    for number in (2**31, 10**11):
        for method, path in (("GET", f"{base}/{number}"), ("POST", f"{base}/{number}/restore")):
            response = await client.request(method, path, headers=auth)
            assert response.status_code == 422, (method, path, response.text)
            assert response.json()["error"]["details"][0]["loc"] == ["path", "version"]
    missing = await client.get(f"{base}/{2**31 - 1}", headers=auth)
    assert missing.status_code == 404, missing.text
    listed = await client.get(base, params={"before": 2**31}, headers=auth)
    assert listed.status_code == 422, listed.text
    listed = await client.get(base, params={"before": 2**31 - 1}, headers=auth)
    assert [v["version"] for v in listed.json()] == [1]
