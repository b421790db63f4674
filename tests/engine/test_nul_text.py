"""A step's error that the store cannot take as it came, and a finish the store refuses.

A remote API answering an error whose text held a NUL byte made the finish unwritable on
PostgreSQL: the execution stayed ``running``, and each time its lease ran out the reaper ran
the step, and its POST, again (attempt 7 after ten minutes, seen by hand). Runs on the memory
store and PostgreSQL (the fixtures of tests/api/test_strict_values.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest

from ipaas.config import Settings
from ipaas.engine.worker import Worker
from ipaas.executions.models import ExecutionStatus, StepRun
from ipaas.kit.text import NUL, REPLACEMENT
from ipaas.runtime import Runtime
from ipaas.stores import MemoryStore
from tests.api.test_strict_values import ONE_ATTEMPT, api, database_url, runtime
from tests.engine.test_retries import Api

__all__ = ["api", "database_url", "runtime"]  # fixtures


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


async def test_a_template_that_makes_a_lone_surrogate_fails_before_the_call(
    api: Api, worker: Worker
) -> None:
    """Found by hand (SQLite): ``{{ '\\ud800' }}`` in a Slack text. The message went out,
    then the step's record could not be stored (``PydanticSerializationError``), and a
    dry run answered 500. A lone surrogate is not Unicode text: the render fails."""
    step = api.call("call", "/echo/surrogate", ONE_ATTEMPT)
    step["config"] = step["config"] | {"json": {"text": "hi {{ '\\ud800' }}"}}
    workflow_id = await api.workflow([step])

    detail = await api.settled(await api.fire(workflow_id))

    assert detail["status"] == "failed"
    (run,) = detail["steps"]
    assert "config.json.text: rendered text holds U+D800, a lone surrogate" in run["error"]
    assert api.hits("/echo/surrogate") == []
    dry = await api.client.post(f"/api/workflows/{workflow_id}/dry-run", json={}, headers=api.auth)
    assert dry.status_code == 200, dry.text
    assert "lone surrogate" in dry.json()["steps"][0]["error"]


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
