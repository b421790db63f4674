"""U+0000 (NUL) from users and from remote APIs, end to end, on the memory store and on
PostgreSQL, whose text types cannot hold it.

Seen by hand on a server on PostgreSQL: ``POST /api/webhooks/wf%00x`` (no sign-in needed),
``GET /api/workflows/wf%00x``, a login with ``%00`` in the email and a workflow named with
``\\u0000`` each answered 500 with a traceback in the log. A remote API answering an error
whose text held a NUL byte made the finish unwritable: the execution stayed ``running``, and
each time its lease ran out the reaper ran the step, and its POST, again (attempt 7 after ten
minutes). The store's own guard is tested in tests/contracts/test_store_text.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from ipaas.config import Settings
from ipaas.engine.worker import Worker
from ipaas.executions.models import ExecutionStatus, StepRun
from ipaas.kit.text import NUL, REPLACEMENT
from ipaas.runtime import Runtime
from ipaas.stores import MemoryStore
from ipaas.stores.sql import SqlStore, run_migrations
from tests.contracts.conftest import POSTGRES_URL, in_thread, postgres_database
from tests.engine.test_retries import Api
from tests.standins.server import StandinServer

ONE_ATTEMPT = {"max_attempts": 1}
REFUSED = "must not contain the NUL character (U+0000)"


@pytest.fixture(
    params=[
        "memory",
        pytest.param(
            "postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not POSTGRES_URL, reason="IPAAS_TEST_POSTGRES_URL is not set"),
            ],
        ),
    ]
)
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


async def test_a_remote_error_holding_nul_ends_the_execution_once(api: Api, worker: Worker) -> None:
    api.standin.add_fault("/echo/nul", status=500)
    step = api.call("call", "/echo/nul?as_text=1", ONE_ATTEMPT)
    step["config"] = step["config"] | {"json": None, "body": f"bad{NUL}thing"}
    workflow_id = await api.workflow([step])

    detail = await api.settled(await api.fire(workflow_id))

    assert detail["status"] == "failed"
    (run,) = detail["steps"]
    assert f"remote: bad{REPLACEMENT}thing" in run["error"]
    assert run["status_code"] == 500
    assert detail["error"] == run["error"]
    assert len(api.hits("/echo/nul")) == 1


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


class _RefusesFailedSteps(MemoryStore):
    """A store that refuses to write a failed step with the finish (as PostgreSQL refused
    one holding U+0000): any value the database cannot take."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    def _check(self, step: StepRun | None) -> None:
        if step is not None and step.error:
            self.refused += 1
            msg = "value refused by the database"
            raise ValueError(msg)

    async def finish_execution(self, execution_id: str, **kwargs: Any) -> bool:
        self._check(kwargs.get("step"))
        return await super().finish_execution(execution_id, **kwargs)

    async def finish_and_claim_next(self, execution_id: str, **kwargs: Any) -> Any:
        self._check(kwargs.get("step"))
        return await super().finish_and_claim_next(execution_id, **kwargs)


class TestAFinishTheStoreRefuses:
    @pytest.fixture
    def database_url(self) -> str:
        return "memory://"

    @pytest.fixture
    async def runtime(self, settings: Settings) -> AsyncIterator[Runtime]:
        return Runtime.build(settings, store=_RefusesFailedSteps())

    async def test_the_execution_still_ends(
        self, api: Api, runtime: Runtime, worker: Worker
    ) -> None:
        """Before, the executor took the finish as done before it was written, and its last
        resort (``failed``, ``internal error``) did not run: the execution stayed ``running``
        until the reaper ran it again."""
        api.standin.add_fault("/echo/down", status=500)
        workflow_id = await api.workflow([api.call("call", "/echo/down", ONE_ATTEMPT)])

        detail = await api.settled(await api.fire(workflow_id))

        assert detail["status"] == "failed"
        assert detail["error"] == "internal error: ValueError"
        assert isinstance(runtime.store, _RefusesFailedSteps)
        assert runtime.store.refused == 1
        assert detail["finished_at"] is not None
        assert datetime.fromisoformat(detail["finished_at"]) >= datetime.fromisoformat(
            detail["started_at"]
        )
        assert ExecutionStatus(detail["status"]) is ExecutionStatus.failed
